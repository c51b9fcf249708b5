//! The engine's timed decisions under paused tokio time: reminders, flap
//! windows, silences ending and the tenant cache expire as
//! `tokio::time::advance` moves the engine's clock, with no real waits and
//! no store (so no I/O timer can fire while time is paused).

use std::time::Duration;

use knowton_common::health::CheckState;

use super::clock::EngineClock;
use super::reminders::reminder_due;
use super::silences::audience_of;
use super::tenant_cache::still_fresh;
use super::*;
use crate::health::alerts::Transition;

fn firing_alert(opened_at: DateTime<Utc>) -> AlertRow {
    AlertRow {
        id: Uuid::now_v7(),
        tenant_id: Uuid::nil(),
        tenant_slug: "acme".to_owned(),
        check: Check::Storage,
        severity: Severity::Critical,
        state: AlertState::Firing,
        sequence: 1,
        summary: "storage at 96% of 1 TiB".to_owned(),
        value: "96%".to_owned(),
        threshold: "95%".to_owned(),
        opened_at,
        updated_at: opened_at,
        resolved_at: None,
        resolved_by: None,
        resolve_note: None,
        acknowledged_at: None,
        acknowledged_by: None,
        notified: true,
        last_notified_at: Some(opened_at),
    }
}

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
}

#[tokio::test(start_paused = true)]
async fn reminders_come_every_period_of_tokio_time_until_acknowledged() {
    let clock = EngineClock::start();
    let every = TimeDelta::seconds(1);
    let mut alert = firing_alert(clock.now());
    assert!(!reminder_due(&alert, clock.now(), every), "just notified");
    advance(Duration::from_millis(999)).await;
    assert!(!reminder_due(&alert, clock.now(), every));
    advance(Duration::from_millis(1)).await;
    assert!(reminder_due(&alert, clock.now(), every), "a period later");

    // Reminded: the next one is a whole period later again.
    alert.last_notified_at = Some(clock.now());
    advance(Duration::from_millis(500)).await;
    assert!(!reminder_due(&alert, clock.now(), every));
    advance(Duration::from_millis(500)).await;
    assert!(reminder_due(&alert, clock.now(), every));

    // Acknowledged, or silenced when it fired (never notified): no reminders.
    let mut acked = alert.clone();
    acked.acknowledged_at = Some(clock.now());
    let mut unnotified = alert.clone();
    unnotified.notified = false;
    advance(Duration::from_secs(3600)).await;
    assert!(!reminder_due(&acked, clock.now(), every));
    assert!(!reminder_due(&unnotified, clock.now(), every));
    assert!(reminder_due(&alert, clock.now(), every));
}

#[tokio::test(start_paused = true)]
async fn a_flap_ends_after_a_stable_window_of_tokio_time() {
    let clock = EngineClock::start();
    let policy = AlertPolicy {
        resolve_after: 2,
        flap_changes: 3,
        flap_window: TimeDelta::seconds(2),
    };
    let mut tracker = Tracker::default();
    let mut seen = Vec::new();
    // Breaching and fine in turn, every 100 ms: flapping within the window.
    for i in 0..6 {
        let state = if i % 2 == 0 {
            CheckState::Critical
        } else {
            CheckState::Ok
        };
        seen.extend(tracker.observe(state, clock.now(), &policy));
        advance(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        [
            Transition::Opened {
                severity: Severity::Critical
            },
            Transition::FlappingStarted {
                severity: Some(Severity::Critical)
            },
        ]
    );
    // Fine from now on: quiet until a whole window has no change.
    let mut ended = Vec::new();
    let mut waited = Duration::ZERO;
    while ended.is_empty() {
        ended = tracker.observe(CheckState::Ok, clock.now(), &policy);
        advance(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
        assert!(waited <= Duration::from_secs(3), "the flap never ended");
    }
    assert_eq!(ended, [Transition::FlappingEnded { severity: None }]);
    assert!(
        waited >= Duration::from_millis(1500),
        "ended after {waited:?}"
    );
    assert!(!tracker.flapping);
}

#[tokio::test(start_paused = true)]
async fn hysteresis_counts_results_not_time() {
    let clock = EngineClock::start();
    let policy = AlertPolicy::default();
    let mut tracker = Tracker::default();
    tracker.observe(CheckState::Warning, clock.now(), &policy);
    // However long a single good result stands, it does not resolve.
    let first_ok = tracker.observe(CheckState::Ok, clock.now(), &policy);
    advance(Duration::from_secs(600)).await;
    assert!(first_ok.is_empty());
    assert_eq!(tracker.open, Some(Severity::Warning));
    assert_eq!(
        tracker.observe(CheckState::Ok, clock.now(), &policy),
        [Transition::Resolved]
    );
}

#[tokio::test(start_paused = true)]
async fn a_silence_quiets_until_its_end_on_the_engine_clock() {
    let clock = EngineClock::start();
    let tenant = Uuid::now_v7();
    let silence = |created_by: &str| Silence {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        check: Some(Check::Storage),
        starts_at: clock.now(),
        ends_at: clock.now() + TimeDelta::minutes(5),
        end_on_resolve: false,
        comment: String::new(),
        created_by: created_by.to_owned(),
        created_at: clock.now(),
    };
    let theirs = [silence("tenant-key:kt_live_abc")];
    let both = [theirs[0].clone(), silence(crate::store::ADMIN_ACTOR)];
    let at = |c: &EngineClock| c.now();
    assert_eq!(
        audience_of(&theirs, tenant, Check::Storage, at(&clock)),
        Audience::Operator
    );
    assert_eq!(
        audience_of(&both, tenant, Check::Storage, at(&clock)),
        Audience::Nobody
    );
    assert_eq!(
        audience_of(&both, tenant, Check::Users, at(&clock)),
        Audience::Everyone,
        "another check"
    );
    advance(Duration::from_secs(5 * 60)).await;
    assert_eq!(
        audience_of(&both, tenant, Check::Storage, at(&clock)),
        Audience::Everyone,
        "ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_tenant_record_is_trusted_for_thirty_seconds_of_tokio_time() {
    let clock = EngineClock::start();
    let loaded_at = clock.now();
    advance(Duration::from_secs(29)).await;
    assert!(still_fresh(loaded_at, clock.now()));
    advance(Duration::from_secs(1)).await;
    assert!(!still_fresh(loaded_at, clock.now()), "read again");
}
