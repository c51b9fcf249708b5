use chrono::{TimeDelta, TimeZone};
use uuid::Uuid;

use super::*;
use crate::store::{FailureStreak, RunTrigger, Verification};

const BOTH: &[BackupKind] = &[BackupKind::Database, BackupKind::Storage];

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
}

fn hours_ago(h: i64) -> DateTime<Utc> {
    now() - TimeDelta::hours(h)
}

fn check(backups: Option<&TenantBackups>, kinds: &[BackupKind], since: i64) -> CheckResult {
    backup_check(BackupFacts {
        backups,
        kinds,
        thresholds: &Thresholds::default(),
        tenant_since: hours_ago(since),
        config_failing: None,
        now: now(),
    })
    .expect("kinds are backed up")
}

fn fresh() -> TenantBackups {
    TenantBackups {
        last_success: vec![
            (BackupKind::Database, hours_ago(3)),
            (BackupKind::Storage, hours_ago(1)),
        ],
        ..TenantBackups::default()
    }
}

fn verification(problems: &[&str]) -> Verification {
    Verification {
        id: Uuid::now_v7(),
        tenant_id: Uuid::nil(),
        deep: true,
        trigger: RunTrigger::Schedule,
        actor: "schedule".to_owned(),
        started_at: hours_ago(1),
        finished_at: hours_ago(1),
        backups: 2,
        problems: problems.iter().map(|p| p.to_string()).collect(),
        problems_total: problems.len() as i64,
    }
}

#[test]
fn nothing_backed_up_here_is_no_check() {
    let none = backup_check(BackupFacts {
        backups: None,
        kinds: &[],
        thresholds: &Thresholds::default(),
        tenant_since: now(),
        config_failing: None,
        now: now(),
    });
    assert!(none.is_none());
}

#[test]
fn recent_backups_are_ok() {
    let c = check(Some(&fresh()), BOTH, 1000);
    assert_eq!(c.state, CheckState::Ok, "{}", c.summary);
    assert_eq!(c.summary, "backups are up to date");
    assert_eq!(c.check, Check::Backup);
}

#[test]
fn age_warns_then_turns_critical_per_kind() {
    let mut b = fresh();
    b.last_success[0].1 = hours_ago(27);
    let c = check(Some(&b), BOTH, 1000);
    assert_eq!(c.state, CheckState::Warning);
    assert!(
        c.summary.contains("last good database backup 27 h ago"),
        "{}",
        c.summary
    );
    assert_eq!(
        (c.value, c.warning, c.critical),
        (Some(27.0), Some(26.0), Some(50.0))
    );

    b.last_success[1].1 = hours_ago(14);
    let c = check(Some(&b), BOTH, 1000);
    assert_eq!(c.state, CheckState::Critical, "storage past 13 h");
    assert!(
        c.summary.contains("storage backup 14 h ago"),
        "{}",
        c.summary
    );
    assert!(
        !c.summary.contains("database"),
        "only the worst findings: {}",
        c.summary
    );
}

#[test]
fn a_tenant_never_backed_up_ages_from_its_creation() {
    let c = check(None, &[BackupKind::Database], 2);
    assert_eq!(c.state, CheckState::Ok, "new tenants get time");
    let c = check(None, &[BackupKind::Database], 51);
    assert_eq!(c.state, CheckState::Critical);
    assert!(
        c.summary
            .contains("no database backup in the 2.1 d since the tenant was created"),
        "{}",
        c.summary
    );
}

#[test]
fn thresholds_are_the_tenants_own() {
    let t = Thresholds {
        database_backup_age_hours: Level {
            warning: 1.0,
            critical: 2.0,
        },
        ..Thresholds::default()
    };
    let c = backup_check(BackupFacts {
        backups: Some(&fresh()),
        kinds: BOTH,
        thresholds: &t,
        tenant_since: hours_ago(1000),
        config_failing: None,
        now: now(),
    })
    .unwrap();
    assert_eq!(
        c.state,
        CheckState::Critical,
        "3 h against 2 h: {}",
        c.summary
    );
}

#[test]
fn failures_alert_only_after_every_try_of_a_round() {
    let mut b = fresh();
    let streak = |failures| FailureStreak {
        tenant_id: Uuid::nil(),
        slug: "acme".to_owned(),
        kind: BackupKind::Storage,
        failures,
        last_failed_at: hours_ago(0),
        last_error: Some("backup repository file:///b: failed to write x".to_owned()),
    };
    b.failing = vec![streak(i64::from(TRIES) - 1)];
    assert_eq!(
        check(Some(&b), BOTH, 1000).state,
        CheckState::Ok,
        "still retrying"
    );
    b.failing = vec![streak(i64::from(TRIES))];
    let c = check(Some(&b), BOTH, 1000);
    assert_eq!(c.state, CheckState::Critical);
    assert!(
        c.summary.contains(
            "storage backup failed 4 times in a row: backup repository file:///b: failed to write x"
        ),
        "{}",
        c.summary
    );
}

#[test]
fn a_failed_verification_is_critical_and_names_its_first_problem() {
    let mut b = fresh();
    b.verification = Some(verification(&[]));
    assert_eq!(check(Some(&b), BOTH, 1000).state, CheckState::Ok, "passed");
    let long = "x".repeat(1000);
    b.verification = Some(verification(&[
        "table public.orders: 3 rows, the backup says 4",
        &long,
    ]));
    let c = check(Some(&b), BOTH, 1000);
    assert_eq!(c.state, CheckState::Critical);
    assert_eq!(
        c.summary,
        "deep verification found 2 problems: table public.orders: 3 rows, the backup says 4"
    );
    b.verification = Some(verification(&[&long]));
    let c = check(Some(&b), BOTH, 1000);
    assert!(
        c.summary.len() < 400,
        "a problem is quoted, not copied whole"
    );
}

#[test]
fn configuration_versions_stuck_in_the_queue_are_critical_after_ten_minutes() {
    let mut b = fresh();
    b.config_pending = 3;
    let judge = |failing: Option<&QueueFailure>, b: &TenantBackups| {
        backup_check(BackupFacts {
            backups: Some(b),
            kinds: BOTH,
            thresholds: &Thresholds::default(),
            tenant_since: hours_ago(1000),
            config_failing: failing,
            now: now(),
        })
        .unwrap()
    };
    let failing = |minutes| QueueFailure {
        since: now() - TimeDelta::minutes(minutes),
        error: "backup repository s3://b: failed to write".to_owned(),
    };
    assert_eq!(
        judge(None, &b).state,
        CheckState::Ok,
        "queued, being written"
    );
    assert_eq!(
        judge(Some(&failing(9)), &b).state,
        CheckState::Ok,
        "retrying"
    );
    let c = judge(Some(&failing(90)), &b);
    assert_eq!(c.state, CheckState::Critical);
    assert_eq!(
        c.summary,
        "3 configuration versions not backed up: writing them has failed for 2 h: backup repository s3://b: failed to write"
    );
    b.config_pending = 0;
    assert_eq!(
        judge(Some(&failing(90)), &b).state,
        CheckState::Ok,
        "nothing of this tenant waits"
    );
}
