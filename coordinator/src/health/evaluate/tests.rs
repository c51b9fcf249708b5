use knowton_common::GIB;
use knowton_proto::agent::v1::{Failure, MetricsSample, ProbeOutcome, StorageSample};

use super::*;

fn pod(name: &str) -> PodResult {
    let ok = |latency_ms: u64| ProbeOutcome {
        ok: true,
        status_code: 200,
        latency_us: latency_ms * 1000,
        database_ok: Some(true),
        ..ProbeOutcome::default()
    };
    PodResult {
        tenant: "acme".into(),
        pod: name.into(),
        liveness: Some(ProbeOutcome {
            database_ok: None,
            ..ok(5)
        }),
        api_health: Some(ok(50)),
        metrics: Some(MetricsSample {
            scraped: true,
            users: Some(10.0),
            request_rate_per_second: Some(1.0),
            error_ratio: Some(0.0),
            ..MetricsSample::default()
        }),
        storage: Some(StorageSample {
            used_bytes: GIB,
            capacity_bytes: 200 * GIB,
        }),
        ..PodResult::default()
    }
}

fn eval_with(plan: Plan, thresholds: &Thresholds, pods: &[PodResult]) -> Evaluation {
    let refs: Vec<&PodResult> = pods.iter().collect();
    evaluate(Inputs {
        plan,
        thresholds,
        pods: &refs,
        seen_before: true,
    })
}

fn eval(pods: &[PodResult]) -> Evaluation {
    eval_with(Plan::Professional, &Thresholds::default(), pods)
}

fn check(e: &Evaluation, check: Check) -> &CheckResult {
    e.checks.iter().find(|c| c.check == check).unwrap()
}

/// The state of `which` after `change` is applied to a single healthy pod.
fn state_after(which: Check, change: impl Fn(&mut PodResult)) -> (HealthStatus, CheckState) {
    let mut p = pod("web-0");
    change(&mut p);
    let e = eval(&[p]);
    (e.status, check(&e, which).state)
}

#[test]
fn healthy_pods_are_healthy_on_every_check() {
    let e = eval(&[pod("web-0"), pod("web-1")]);
    assert_eq!(e.status, HealthStatus::Healthy);
    assert_eq!((e.pods, e.pods_up), (2, 2));
    for c in &e.checks {
        assert_eq!(c.state, CheckState::Ok, "{c:?}");
    }
    assert_eq!(check(&e, Check::Storage).value, Some(1.0));
    assert_eq!(check(&e, Check::Users).value, Some(10.0));
    assert_eq!(
        check(&e, Check::ApiRate).value,
        Some(24.0),
        "2/s of 500/min"
    );
    assert_eq!(check(&e, Check::ResponseTime).value, Some(50.0));
}

#[test]
fn storage_crosses_warning_then_critical_and_back() {
    let at = |gib: u64| {
        state_after(Check::Storage, |p| {
            p.storage.as_mut().unwrap().used_bytes = gib * GIB;
        })
    };
    assert_eq!(at(84), (HealthStatus::Healthy, CheckState::Ok));
    assert_eq!(at(85), (HealthStatus::Warning, CheckState::Warning));
    assert_eq!(at(95), (HealthStatus::Critical, CheckState::Critical));
    assert_eq!(at(50), (HealthStatus::Healthy, CheckState::Ok));
}

#[test]
fn storage_summary_names_the_plan_size() {
    let mut p = pod("web-0");
    p.storage.as_mut().unwrap().used_bytes = 1_056_561_954_816; // 96% of 1 TiB
    let e = eval_with(Plan::Enterprise, &Thresholds::default(), &[p]);
    assert_eq!(check(&e, Check::Storage).summary, "storage at 96% of 1 TiB");
    assert_eq!(check(&e, Check::Storage).state, CheckState::Critical);
}

#[test]
fn users_against_the_plan() {
    let at = |users: f64| {
        state_after(Check::Users, |p| {
            p.metrics.as_mut().unwrap().users = Some(users)
        })
    };
    assert_eq!(at(89.0).1, CheckState::Ok);
    assert_eq!(at(90.0).1, CheckState::Warning);
    assert_eq!(at(95.0).1, CheckState::Critical);
    assert_eq!(at(12.0).1, CheckState::Ok);
}

#[test]
fn api_rate_adds_up_the_pods_against_the_plan_limit() {
    let rate = |per_second: f64| {
        let mut p = pod("x");
        p.metrics.as_mut().unwrap().request_rate_per_second = Some(per_second);
        p
    };
    // Professional: 500 requests/min. Two pods at 200/min each = 80%.
    let e = eval(&[rate(200.0 / 60.0), rate(200.0 / 60.0)]);
    assert_eq!(check(&e, Check::ApiRate).state, CheckState::Warning);
    let e = eval(&[rate(450.0 / 60.0)]);
    assert_eq!(check(&e, Check::ApiRate).state, CheckState::Critical);
    let e = eval(&[rate(100.0 / 60.0)]);
    assert_eq!(check(&e, Check::ApiRate).state, CheckState::Ok);
}

#[test]
fn error_rate_is_weighted_by_traffic() {
    let traffic = |rate: f64, ratio: f64| {
        let mut p = pod("x");
        let m = p.metrics.as_mut().unwrap();
        m.request_rate_per_second = Some(rate);
        m.error_ratio = Some(ratio);
        p
    };
    // 9 errors/s of 90/s = 10%: a quiet pod failing everything counts little.
    let e = eval(&[traffic(80.0, 0.0), traffic(10.0, 0.9)]);
    let c = check(&e, Check::ErrorRate);
    assert!((c.value.unwrap() - 10.0).abs() < 1e-9, "{c:?}");
    assert_eq!(c.state, CheckState::Critical);
    let e = eval(&[traffic(100.0, 0.05)]);
    assert_eq!(check(&e, Check::ErrorRate).state, CheckState::Warning);
    let e = eval(&[traffic(0.0, 0.0)]);
    assert_eq!(
        check(&e, Check::ErrorRate).state,
        CheckState::Ok,
        "no traffic, no errors"
    );
}

#[test]
fn response_time_is_the_slowest_pods() {
    let slow = |ms: u64| {
        let mut p = pod("slow");
        p.api_health.as_mut().unwrap().latency_us = ms * 1000;
        p
    };
    let e = eval(&[pod("fast"), slow(1500)]);
    assert_eq!(check(&e, Check::ResponseTime).state, CheckState::Warning);
    assert_eq!(e.status, HealthStatus::Warning);
    let e = eval(&[slow(2000)]);
    assert_eq!(check(&e, Check::ResponseTime).state, CheckState::Critical);
    // A timed-out API counts with the time it was waited for.
    let mut timed_out = pod("stuck");
    let api = timed_out.api_health.as_mut().unwrap();
    api.ok = false;
    api.set_failure(Failure::Timeout);
    api.latency_us = 5_000_000;
    let e = eval(&[timed_out]);
    assert_eq!(check(&e, Check::ResponseTime).value, Some(5000.0));
}

/// The agent's slow verdict, sent when the threshold passed without an
/// answer: API health pending (ok, no failure yet), liveness not answered
/// yet either, no scrape. It warns on response time at the threshold and
/// raises nothing else.
#[test]
fn a_pending_slow_verdict_warns_on_response_time_and_nothing_else() {
    let pending = |waited_ms: u64| ProbeOutcome {
        ok: true,
        pending: true,
        confirmed: true,
        latency_us: waited_ms * 1000,
        ..ProbeOutcome::default()
    };
    let verdict = PodResult {
        tenant: "acme".into(),
        pod: "web-0".into(),
        liveness: Some(pending(1000)),
        api_health: Some(pending(1000)),
        ..PodResult::default()
    };
    let e = eval(&[verdict]);
    let c = check(&e, Check::ResponseTime);
    assert_eq!(c.state, CheckState::Warning, "{c:?}");
    assert_eq!(c.value, Some(1000.0));
    assert_eq!(e.pods_up, 1, "a pending liveness is not a pod down");
    assert_eq!(check(&e, Check::ApiHealth).state, CheckState::Ok);
    for unknown in [
        Check::Database,
        Check::Users,
        Check::ErrorRate,
        Check::ApiRate,
    ] {
        assert_eq!(check(&e, unknown).state, CheckState::Unknown, "{unknown:?}");
    }
    assert_eq!(e.status, HealthStatus::Warning);
}

#[test]
fn a_pod_without_its_database_is_critical() {
    let mut p = pod("web-1");
    p.api_health.as_mut().unwrap().database_ok = Some(false);
    let e = eval(&[pod("web-0"), p]);
    let c = check(&e, Check::Database);
    assert_eq!(c.state, CheckState::Critical);
    assert_eq!(c.value, Some(50.0));
    assert_eq!(c.summary, "database unreachable from 1 of 2 pods");
    assert_eq!(e.status, HealthStatus::Critical);
}

#[test]
fn api_health_failing_on_some_pods_warns_and_on_all_is_critical() {
    let failing = |name: &str| {
        let mut p = pod(name);
        let api = p.api_health.as_mut().unwrap();
        api.ok = false;
        api.status_code = 503;
        api.set_failure(Failure::HttpStatus);
        api.detail = "GET /api/health answered 503".into();
        p
    };
    let e = eval(&[pod("web-0"), failing("web-1")]);
    let c = check(&e, Check::ApiHealth);
    assert_eq!(c.state, CheckState::Warning);
    assert!(c.summary.contains("answered 503"), "{}", c.summary);
    let e = eval(&[failing("web-0"), failing("web-1")]);
    assert_eq!(check(&e, Check::ApiHealth).state, CheckState::Critical);
    assert_eq!(e.status, HealthStatus::Critical, "the pods are alive");
}

#[test]
fn no_pod_answering_is_down_and_no_data_is_unknown() {
    let mut dead = pod("web-0");
    dead.liveness.as_mut().unwrap().ok = false;
    let e = eval(&[dead]);
    assert_eq!((e.status, e.pods_up), (HealthStatus::Down, 0));

    let none: [&PodResult; 0] = [];
    let thresholds = Thresholds::default();
    let inputs = |seen_before| Inputs {
        plan: Plan::Basic,
        thresholds: &thresholds,
        pods: &none,
        seen_before,
    };
    let gone = evaluate(inputs(true));
    assert_eq!(gone.status, HealthStatus::Down);
    let api = gone
        .checks
        .iter()
        .find(|c| c.check == Check::ApiHealth)
        .unwrap();
    assert_eq!(
        api.state,
        CheckState::Critical,
        "pods that stop reporting open an API alert: {api:?}"
    );
    let e = evaluate(inputs(false));
    assert_eq!(e.status, HealthStatus::Unknown);
    assert!(e.checks.iter().all(|c| c.state == CheckState::Unknown));
}

#[test]
fn missing_metrics_are_unknown_and_do_not_change_the_status() {
    let mut p = pod("web-0");
    p.metrics = None;
    p.storage = None;
    let e = eval(&[p]);
    assert_eq!(e.status, HealthStatus::Healthy);
    for which in [
        Check::Users,
        Check::ApiRate,
        Check::ErrorRate,
        Check::Storage,
    ] {
        assert_eq!(check(&e, which).state, CheckState::Unknown, "{which:?}");
        assert_eq!(check(&e, which).value, None);
    }
}

#[test]
fn a_tenants_own_thresholds_apply() {
    let strict = Thresholds {
        response_time_ms: Level {
            warning: 20.0,
            critical: 40.0,
        },
        ..Thresholds::default()
    };
    let e = eval_with(Plan::Basic, &strict, &[pod("web-0")]);
    let c = check(&e, Check::ResponseTime);
    assert_eq!(c.state, CheckState::Critical);
    assert_eq!((c.warning, c.critical), (Some(20.0), Some(40.0)));
}

#[test]
fn check_names_round_trip() {
    for c in Check::ALL {
        assert_eq!(c.as_str().parse::<Check>(), Ok(*c));
    }
    assert!("cpu".parse::<Check>().is_err());
}
