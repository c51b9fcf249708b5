//! Per-tenant rate limiting at each plan's rate.

use knowton_tests::{Db, TestCoordinator};
use reqwest::{Method, StatusCode};

/// The limiter is in memory and the same on every backend: SQLite suffices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plan_is_limited_at_its_rate() {
    let kt = TestCoordinator::start(Db::Sqlite).await;
    for (slug, plan, rate) in [
        ("small", "basic", 100u64),
        ("medium", "professional", 500),
        ("large", "enterprise", 2000),
    ] {
        let created = kt.provision(slug, plan).await;
        let key = created["apiKeys"]["production"]
            .as_str()
            .unwrap()
            .to_owned();
        let dev_key = created["apiKeys"]["development"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/api/v1/tenants/{slug}");
        // The whole burst of `rate` requests is allowed; the budget refills
        // at rate/60 per second, so a slow run may get a few more through.
        let started = tokio::time::Instant::now();
        let mut allowed = 0u64;
        let limited = loop {
            // Both keys draw on the tenant's one budget.
            let token = if allowed.is_multiple_of(2) {
                &key
            } else {
                &dev_key
            };
            let reply = kt.call(Method::GET, &path, Some(token), None).await;
            if reply.status != StatusCode::OK {
                break reply;
            }
            allowed += 1;
            assert_eq!(
                reply.header("x-ratelimit-limit"),
                Some(rate.to_string().as_str())
            );
            let remaining: u64 = reply
                .header("x-ratelimit-remaining")
                .unwrap()
                .parse()
                .unwrap();
            assert!(remaining < rate, "{plan}: remaining {remaining}");
            assert!(allowed <= rate * 2, "{plan}: never limited");
        };
        let refilled = started.elapsed().as_secs_f64() * rate as f64 / 60.0;
        assert!(allowed >= rate, "{plan}: limited after {allowed} of {rate}");
        assert!(
            allowed as f64 <= rate as f64 + refilled + 1.0,
            "{plan}: {allowed} allowed"
        );
        assert_eq!(
            limited.error(StatusCode::TOO_MANY_REQUESTS).0,
            "rate_limited",
            "{plan}"
        );
        let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (1..=60).contains(&retry_after),
            "{plan}: Retry-After {retry_after}"
        );
        assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
        // The admin is not limited by a tenant's budget.
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
