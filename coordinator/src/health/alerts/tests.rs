use super::*;
use CheckState::{Critical, Ok as Fine, Unknown, Warning};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Feeds `states` one per `step` seconds from t0; returns every transition.
fn run(tracker: &mut Tracker, states: &[CheckState], step: i64) -> Vec<Transition> {
    let policy = AlertPolicy::default();
    states
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let at = t0() + TimeDelta::seconds(step * i as i64);
            tracker.observe(*s, at, &policy)
        })
        .collect()
}

#[test]
fn a_breach_opens_one_alert_and_recovery_resolves_it_after_two_good_evaluations() {
    let mut t = Tracker::default();
    let seen = run(&mut t, &[Fine, Warning, Warning, Fine, Fine, Fine], 60);
    assert_eq!(
        seen,
        vec![
            Transition::Opened {
                severity: Severity::Warning
            },
            Transition::Resolved
        ]
    );
    assert_eq!(t.open, None);
}

#[test]
fn one_good_result_between_bad_ones_does_not_resolve() {
    let mut t = Tracker::default();
    let seen = run(&mut t, &[Critical, Fine, Critical, Fine, Critical], 60);
    assert_eq!(
        seen,
        vec![Transition::Opened {
            severity: Severity::Critical
        }]
    );
    assert_eq!(t.open, Some(Severity::Critical));
}

#[test]
fn warning_escalates_to_critical_in_place_and_back_down_quietly() {
    let mut t = Tracker::default();
    let seen = run(&mut t, &[Warning, Critical, Warning, Fine, Fine], 60);
    assert_eq!(
        seen,
        vec![
            Transition::Opened {
                severity: Severity::Warning
            },
            Transition::Escalated {
                from: Severity::Warning,
                to: Severity::Critical
            },
            Transition::Deescalated {
                from: Severity::Critical,
                to: Severity::Warning
            },
            Transition::Resolved,
        ]
    );
    assert!(!seen[2].notifies() && seen[1].notifies());
}

#[test]
fn critical_at_once_opens_critical() {
    let mut t = Tracker::default();
    assert_eq!(
        run(&mut t, &[Critical], 60),
        vec![Transition::Opened {
            severity: Severity::Critical
        }]
    );
}

#[test]
fn unknown_evaluations_change_nothing() {
    let mut t = Tracker::default();
    let seen = run(
        &mut t,
        &[Warning, Unknown, Fine, Unknown, Unknown, Fine],
        60,
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1],
        Transition::Resolved,
        "two good evaluations, unknowns between"
    );
    assert_eq!(run(&mut Tracker::default(), &[Unknown; 5], 60), vec![]);
}

#[test]
fn a_flapping_check_notifies_once_then_waits_for_a_stable_window() {
    let mut t = Tracker::default();
    let policy = AlertPolicy::default();
    // Toggling every 10 s: 6 changes within a minute is more than 5 in 10 min.
    let mut seen = Vec::new();
    let mut at = t0();
    for i in 0..20 {
        let state = if i % 2 == 0 { Critical } else { Fine };
        seen.extend(t.observe(state, at, &policy));
        at += TimeDelta::seconds(10);
    }
    assert_eq!(
        seen[0],
        Transition::Opened {
            severity: Severity::Critical
        }
    );
    let flaps: Vec<_> = seen
        .iter()
        .filter(|t| matches!(t, Transition::FlappingStarted { .. }))
        .collect();
    assert_eq!(flaps.len(), 1, "one notification, not a storm: {seen:?}");
    assert!(t.flapping);
    assert_eq!(
        seen.iter()
            .filter(|t| matches!(t, Transition::Resolved | Transition::Opened { .. }))
            .count(),
        1,
        "no open/resolve pairs while flapping: {seen:?}"
    );
    assert_eq!(t.open, Some(Severity::Critical), "the alert stays open");

    // Stable (fine) for less than the window: still flapping.
    let last_change = at - TimeDelta::seconds(10);
    assert_eq!(
        t.observe(Fine, last_change + TimeDelta::minutes(9), &policy),
        vec![]
    );
    assert!(t.flapping);
    // A whole window without change: flapping ends and, being fine, resolves.
    assert_eq!(
        t.observe(
            Fine,
            last_change + TimeDelta::minutes(10) + TimeDelta::seconds(1),
            &policy
        ),
        vec![Transition::FlappingEnded { severity: None }]
    );
    assert!(!t.flapping);
    assert_eq!(t.open, None);
}

#[test]
fn flapping_that_settles_breaching_fires_again() {
    let mut t = Tracker::default();
    let policy = AlertPolicy::default();
    let mut at = t0();
    for i in 0..8 {
        t.observe(if i % 2 == 0 { Warning } else { Fine }, at, &policy);
        at += TimeDelta::seconds(10);
    }
    assert!(t.flapping);
    t.observe(Critical, at, &policy);
    let later = at + TimeDelta::minutes(11);
    assert_eq!(
        t.observe(Critical, later, &policy),
        vec![Transition::FlappingEnded {
            severity: Some(Severity::Critical)
        }]
    );
    assert_eq!(t.open, Some(Severity::Critical));
    // Then it resolves normally, with hysteresis.
    assert_eq!(
        t.observe(Fine, later + TimeDelta::seconds(10), &policy),
        vec![]
    );
    assert_eq!(
        t.observe(Fine, later + TimeDelta::seconds(20), &policy),
        vec![Transition::Resolved]
    );
}

#[test]
fn slow_changes_are_not_flapping() {
    let mut t = Tracker::default();
    // A change every 5 minutes: at most 2 within any 10 minutes.
    let states: Vec<CheckState> = (0..30)
        .map(|i| if i % 2 == 0 { Critical } else { Fine })
        .collect();
    let seen = run(&mut t, &states, 300);
    assert!(
        !seen
            .iter()
            .any(|t| matches!(t, Transition::FlappingStarted { .. })),
        "{seen:?}"
    );
    assert!(!t.flapping);
}

#[test]
fn hysteresis_is_configurable() {
    let policy = AlertPolicy {
        resolve_after: 3,
        ..AlertPolicy::default()
    };
    let mut t = Tracker::default();
    let at = |s: i64| t0() + TimeDelta::seconds(s);
    t.observe(Warning, at(0), &policy);
    assert_eq!(t.observe(Fine, at(10), &policy), vec![]);
    assert_eq!(t.observe(Fine, at(20), &policy), vec![]);
    assert_eq!(t.observe(Fine, at(30), &policy), vec![Transition::Resolved]);
}

#[test]
fn a_manual_resolve_lets_a_continuing_breach_open_a_new_alert() {
    let policy = AlertPolicy::default();
    let mut t = Tracker::reopened(Severity::Critical, false);
    t.resolved_by_hand();
    assert_eq!(
        t.observe(Critical, t0(), &policy),
        vec![Transition::Opened {
            severity: Severity::Critical
        }]
    );
}

#[test]
fn an_alert_reloaded_after_a_restart_goes_on() {
    let policy = AlertPolicy::default();
    let mut t = Tracker::reopened(Severity::Warning, false);
    assert_eq!(
        t.observe(Critical, t0(), &policy),
        vec![Transition::Escalated {
            from: Severity::Warning,
            to: Severity::Critical
        }]
    );
}
