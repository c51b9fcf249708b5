use chrono::TimeDelta;

use super::attempt::{AlreadyServed, already_done};
use super::*;

fn attempt(phase: Phase, started_secs_ago: i64, finished_secs_ago: i64) -> DeploymentRow {
    let at = now();
    DeploymentRow {
        phase,
        attempt: 1,
        objects_hash: Some("h1".to_owned()),
        started_at: Some(at - TimeDelta::seconds(started_secs_ago)),
        finished_at: Some(at - TimeDelta::seconds(finished_secs_ago)),
        ..DeploymentRow::new(Uuid::nil(), Trigger::Provisioned)
    }
}

fn asked(trigger: Trigger, secs_ago: i64) -> Queued {
    Queued {
        trigger,
        at: now() - TimeDelta::seconds(secs_ago),
    }
}

#[test]
fn a_request_that_raced_an_attempt_of_the_same_objects_does_not_deploy_again() {
    // The first reconcile started the attempt before provisioning recorded
    // its request: the objects are the same, and it failed: nothing to do.
    let failed = attempt(Phase::Failed, 2, 1);
    for trigger in [
        Trigger::Provisioned,
        Trigger::Updated,
        Trigger::Deprovisioned,
    ] {
        assert_eq!(
            already_done(&failed, asked(trigger, 0), "h1", true),
            Some(AlreadyServed::Nothing),
            "{trigger:?}"
        );
    }
    let ready = attempt(Phase::Ready, 2, 1);
    assert_eq!(
        already_done(&ready, asked(Trigger::Provisioned, 0), "h1", true),
        Some(AlreadyServed::CheckDrift)
    );
    assert_eq!(
        already_done(&ready, asked(Trigger::Reconcile, 0), "h1", true),
        Some(AlreadyServed::CheckDrift)
    );
}

#[test]
fn new_objects_an_operator_or_a_pending_request_always_deploy() {
    let failed = attempt(Phase::Failed, 2, 1);
    assert_eq!(
        already_done(&failed, asked(Trigger::Updated, 0), "h2", true),
        None,
        "new objects"
    );
    assert_eq!(
        already_done(&failed, asked(Trigger::Manual, 0), "h1", true),
        None,
        "an operator"
    );
    let mut pending = failed.clone();
    pending.phase = Phase::Pending;
    assert_eq!(
        already_done(&pending, asked(Trigger::Reconcile, 0), "h1", true),
        None
    );
    // A manual request the attempt already served (seen by the pending
    // scan of another replica's request) is not deployed twice.
    assert_eq!(
        already_done(&failed, asked(Trigger::Manual, 5), "h1", true),
        Some(AlreadyServed::Nothing)
    );
}

#[test]
fn a_reconcile_retries_a_failure_only_after_a_minute_and_deploys_what_was_skipped_once_a_cluster_exists()
 {
    assert_eq!(
        already_done(
            &attempt(Phase::Failed, 2, 1),
            asked(Trigger::Reconcile, 0),
            "h1",
            true
        ),
        Some(AlreadyServed::Nothing)
    );
    assert_eq!(
        already_done(
            &attempt(Phase::Failed, 120, 90),
            asked(Trigger::Reconcile, 0),
            "h1",
            true
        ),
        None
    );
    let skipped = attempt(Phase::Skipped, 2, 1);
    assert_eq!(
        already_done(&skipped, asked(Trigger::Reconcile, 0), "h1", false),
        Some(AlreadyServed::Nothing)
    );
    assert_eq!(
        already_done(&skipped, asked(Trigger::Reconcile, 0), "h1", true),
        None
    );
    // An attempt a crash interrupted is done again.
    assert_eq!(
        already_done(
            &attempt(Phase::Waiting, 60, 60),
            asked(Trigger::Reconcile, 0),
            "h1",
            true
        ),
        None
    );
}
