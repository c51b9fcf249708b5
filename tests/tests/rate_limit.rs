//! Per-tenant rate limiting at each plan's rate: in memory on SQLite, and
//! shared by the replicas on PostgreSQL.

use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_coordinator::server::Running;
use knowton_tests::{Db, Reply, TestCoordinator, eventually, on_postgres};
use reqwest::{Method, StatusCode};

on_postgres!(
    plan_rates_hold_across_three_replicas,
    a_replica_without_the_shared_budget_limits_at_its_share,
);

/// One coordinator on SQLite holds the budgets in memory: exactly the
/// plan's rate and its refill, both keys of a tenant on one budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plan_is_limited_at_its_rate() {
    let kt = TestCoordinator::start(Db::Sqlite).await;
    for (slug, plan, rate) in [
        ("small", "basic", 100u64),
        ("medium", "professional", 500),
        ("large", "enterprise", 2000),
    ] {
        let created = kt.provision(slug, plan).await;
        let keys = &created["apiKeys"];
        let targets = ["production", "development"]
            .map(|kind| (kt.base.as_str(), keys[kind].as_str().unwrap()));
        let run = until_refused(&targets, slug, rate).await;
        // The whole burst of `rate` requests is allowed; the budget refills
        // at rate/60 per second, so a slow run may get a few more through.
        let refilled = run.took.as_secs_f64() * rate as f64 / 60.0;
        let allowed = run.allowed;
        assert!(allowed >= rate, "{plan}: limited after {allowed} of {rate}");
        assert!(
            allowed as f64 <= rate as f64 + refilled + 1.0,
            "{plan}: {allowed} allowed"
        );
        // The admin is not limited by a tenant's budget.
        let path = format!("/api/v1/tenants/{slug}");
        assert_eq!(
            kt.admin(Method::GET, &path, None).await.status,
            StatusCode::OK
        );
    }
    // Another tenant on the same plan has its own budget.
    let other = kt.provision("another", "basic").await;
    let key = other["apiKeys"]["production"].as_str().unwrap();
    let reply = kt
        .call(Method::GET, "/api/v1/tenants/another", Some(key), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("99"));
}

/// Three replicas on one PostgreSQL schema, beating every 0.67 s.
async fn three_replicas(db: Db) -> (TestCoordinator, [(Running, String); 2]) {
    let fast_beats = |args: &mut ServeArgs| args.leader.leader_lease_seconds = 2;
    let a = TestCoordinator::start_and(db, fast_beats).await;
    let b = a.another_replica(fast_beats).await;
    let c = a.another_replica(fast_beats).await;
    (a, [b, c])
}

/// What a run of requests came to: those allowed before the first
/// refusal, and how long the run took.
struct Run {
    allowed: u64,
    took: Duration,
}

/// `GET /api/v1/tenants/{slug}` from `base` with `key`, and its
/// `x-ratelimit-remaining`.
async fn read_tenant(http: &reqwest::Client, base: &str, slug: &str, key: &str) -> (Reply, u64) {
    let response = http
        .get(format!("{base}/api/v1/tenants/{slug}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let reply = Reply::from(response).await;
    let remaining = reply
        .header("x-ratelimit-remaining")
        .unwrap()
        .parse()
        .unwrap();
    (reply, remaining)
}

/// Sends `GET /api/v1/tenants/{slug}` to each of `targets` (a base URL
/// and a key of the tenant) in turn until one is refused, checking the
/// headers of each answer.
async fn until_refused(targets: &[(&str, &str)], slug: &str, rate: u64) -> Run {
    let http = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    let mut allowed = 0u64;
    let refused = loop {
        let (base, key) = targets[allowed as usize % targets.len()];
        let (reply, remaining) = read_tenant(&http, base, slug, key).await;
        if reply.status != StatusCode::OK {
            break reply;
        }
        allowed += 1;
        assert_eq!(
            reply.header("x-ratelimit-limit"),
            Some(rate.to_string().as_str())
        );
        assert!(remaining < rate, "{slug}: remaining {remaining}");
        assert!(allowed <= rate * 4, "{slug}: never limited");
    };
    assert_eq!(
        refused.error(StatusCode::TOO_MANY_REQUESTS).0,
        "rate_limited"
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "{slug}: Retry-After {retry_after}"
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    Run {
        allowed,
        took: started.elapsed(),
    }
}

/// The bound: what was allowed before the first refusal is the
/// budget (`rate`) and its refill during the run, within 10% of `rate`.
fn assert_within_ten_percent(what: &str, rate: u64, run: &Run) {
    let refilled = run.took.as_secs_f64() * rate as f64 / 60.0;
    let expected = rate as f64 + refilled;
    eprintln!(
        "{what}: {} allowed of {rate} a minute (+{refilled:.1} refilled in {:?})",
        run.allowed, run.took
    );
    assert!(
        (run.allowed as f64 - expected).abs() <= rate as f64 * 0.1,
        "{what}: {} allowed of {rate} a minute (+{refilled:.1} refilled in {:?})",
        run.allowed,
        run.took
    );
}

/// A tenant's budget is one, however its requests spread over the
/// replicas: round-robin over three, or all to one.
async fn plan_rates_hold_across_three_replicas(db: Db) {
    let (a, [(b, base_b), (c, base_c)]) = three_replicas(db).await;
    let bases = [a.base.as_str(), &base_b, &base_c];
    for (slug, plan, rate) in [
        ("small", "basic", 100u64),
        ("medium", "professional", 500),
        ("large", "enterprise", 2000),
    ] {
        let created = a.provision(slug, plan).await;
        let key = created["apiKeys"]["production"].as_str().unwrap();
        let targets = bases.map(|base| (base, key));
        let run = until_refused(&targets, slug, rate).await;
        assert_within_ten_percent(&format!("{plan} over three replicas"), rate, &run);
    }
    let created = a.provision("sticky", "professional").await;
    let key = created["apiKeys"]["production"].as_str().unwrap();
    let run = until_refused(&[(&base_b, key)], "sticky", 500).await;
    assert_within_ten_percent("professional on one replica", 500, &run);
    // The others see it spent (a token or two may have come back since).
    for base in [a.base.as_str(), &base_c] {
        let (reply, remaining) = read_tenant(&a.http, base, "sticky", key).await;
        assert!(
            remaining < 10,
            "{base}: {} remaining {remaining}",
            reply.status
        );
    }
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    a.stop().await;
}

/// A replica whose leases fail keeps answering, judging each tenant by its
/// share of the plan's rate (the rate divided by the live replicas),
/// counts it, and leases again once the database takes its leases.
async fn a_replica_without_the_shared_budget_limits_at_its_share(db: Db) {
    let (a, [(b, _), (c, _)]) = three_replicas(db).await;
    let state = a.running_state();
    eventually(Duration::from_secs(20), "three live replicas", || async {
        (state.limiter.live_replicas() == 3).then_some(())
    })
    .await;
    let created = a.provision("acme", "basic").await;
    let key = created["apiKeys"]["production"].as_str().unwrap();
    a.db.fail_inserts_into("tenant_rate_limits").await;
    let run = until_refused(&[(&a.base, key)], "acme", 100).await;
    let refilled = run.took.as_secs_f64() * 100.0 / 3.0 / 60.0;
    assert!(
        (33..=33 + refilled.ceil() as u64).contains(&run.allowed),
        "{} allowed of a third of 100 (+{refilled:.1} refilled)",
        run.allowed
    );
    let metrics = a.scrape().await;
    let counter = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} in\n{metrics}"))
    };
    assert!(counter("knowton_rate_limit_fallback_requests_total") > run.allowed);
    assert!(counter("knowton_rate_limit_leases_total{outcome=\"failed\"}") >= 1);

    a.db.stop_failing_inserts_into("tenant_rate_limits").await;
    let leased = || {
        state
            .http_metrics
            .rate_limit_leases
            .with_label_values(&["granted"])
            .get()
    };
    let before = leased();
    eventually(
        Duration::from_secs(10),
        "a lease from the shared budget",
        || async {
            let reply = a
                .call(Method::GET, "/api/v1/tenants/acme", Some(key), None)
                .await;
            (reply.status == StatusCode::OK && leased() > before).then_some(())
        },
    )
    .await;
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    a.stop().await;
}
