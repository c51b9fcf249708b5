//! Probes of simulated tenant pods over real loopback connections.

// The simulator lives in the coordinator's `sim` module (shared by its demo,
// the tests crate and the benchmarks); it depends on tokio alone, so it is
// compiled in here rather than copied.
#[allow(dead_code)]
#[path = "../../coordinator/src/sim.rs"]
mod pods;

use std::net::Ipv4Addr;
use std::time::Duration;

use knowton_agent::discover::Target;
use knowton_agent::instructions::Instructed;
use knowton_agent::probe::{ProbeSettings, Prober};
use knowton_proto::agent::v1::{Failure, Instruction, MetricsSample, PodResult, ProbeOutcome};
use pods::{Behaviour, SimPod};

fn settings() -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_secs(1),
        slow_threshold: Duration::from_millis(500),
        confirm: true,
    }
}

/// A healthy simulated pod on 127.0.0.`host` and its target.
fn pod(host: u8) -> (SimPod, Target) {
    let pod = SimPod::start(Ipv4Addr::new(127, 0, 0, host), 0);
    let target = Target {
        tenant: format!("tenant-{host}"),
        pod: "web-0".into(),
        url: pod.url(),
        storage_path: None,
    };
    (pod, target)
}

fn liveness(result: &PodResult) -> &ProbeOutcome {
    result.liveness.as_ref().expect("liveness outcome")
}

fn api_health(result: &PodResult) -> &ProbeOutcome {
    result.api_health.as_ref().expect("api health outcome")
}

fn metrics(result: &PodResult) -> &MetricsSample {
    result.metrics.as_ref().expect("metrics sample")
}

#[tokio::test]
async fn a_healthy_pod_is_probed_on_kept_connections() {
    let (pod, mut target) = pod(2);
    let volume = tempfile::tempdir().unwrap();
    target.storage_path = Some(volume.path().to_owned());
    let prober = Prober::new(settings());

    let first = prober.probe(&target).await;
    assert_eq!(
        (first.tenant.as_str(), first.pod.as_str()),
        ("tenant-2", "web-0")
    );
    assert_eq!(first.pod_ip, "127.0.0.2");
    assert!(first.observed_at_unix_ms > 1_700_000_000_000);
    for outcome in [liveness(&first), api_health(&first)] {
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(outcome.failure(), Failure::None);
        assert_eq!(outcome.status_code, 200);
        assert!(!outcome.confirmed);
        assert!(!outcome.pending);
        assert!(outcome.first_byte_us > 0 && outcome.latency_us >= outcome.first_byte_us);
        assert!(
            outcome.connect_us > 0,
            "each check has a connection of its own"
        );
    }
    assert_eq!(liveness(&first).database_ok, None);
    assert_eq!(api_health(&first).database_ok, Some(true));
    let m = metrics(&first);
    assert!(m.scraped);
    assert_eq!(
        (m.requests_total, m.errors_5xx_total, m.users),
        (Some(100.0), Some(0.0), Some(12.0))
    );
    assert_eq!((m.request_rate_per_second, m.error_ratio), (None, None));
    let storage = first.storage.expect("storage sampled");
    assert!(storage.capacity_bytes > 0);

    pod.count_requests(200, 30.0);
    pod.count_requests(503, 10.0);
    let second = prober.probe(&target).await;
    let m = metrics(&second);
    assert_eq!(m.requests_total, Some(140.0));
    assert_eq!(m.errors_5xx_total, Some(10.0));
    assert!(m.request_rate_per_second.is_some_and(|r| r > 0.0), "{m:?}");
    assert_eq!(m.error_ratio, Some(0.25));

    for outcome in [liveness(&second), api_health(&second)] {
        assert_eq!(
            outcome.connect_us, 0,
            "the first probe's connections were kept"
        );
    }
    // API health and its confirmation, liveness, metrics: four connections,
    // kept for the next probe.
    assert_eq!(
        pod.connections(),
        4,
        "no new connection for the second probe"
    );
    assert_eq!(prober.idle_connections(), 4);
    for path in ["/health", "/metrics"] {
        assert_eq!(pod.requests(path), 2, "{path}");
    }
    assert_eq!(
        pod.requests("/api/health"),
        4,
        "API health is asked twice at once"
    );

    prober.retain(&[]);
    assert_eq!(
        prober.idle_connections(),
        0,
        "a pod gone, its connection closed"
    );
}

#[tokio::test]
async fn a_kept_connection_the_pod_closed_is_replaced_without_a_failure() {
    let (pod, target) = pod(13);
    let prober = Prober::new(settings());
    assert!(liveness(&prober.probe(&target).await).ok);
    assert_eq!(pod.connections(), 4);

    // From now on the pod drops every connection on its second request, as
    // if its keep-alive timeout expired just as the agent reused it.
    pod.set(Behaviour::ClosesReused).await;
    let result = prober.probe(&target).await;
    for outcome in [liveness(&result), api_health(&result)] {
        assert!(outcome.ok, "{outcome:?}");
        assert!(!outcome.confirmed, "a stale connection is not a failure");
        assert!(outcome.connect_us > 0, "sent on a new connection");
    }
    assert!(metrics(&result).scraped, "{:?}", metrics(&result));
    assert_eq!(pod.connections(), 8, "a new connection per request");

    // A pod that closes its idle connections before they are reused.
    pod.set(Behaviour::Refuse).await;
    pod.set(Behaviour::Healthy).await;
    let result = prober.probe(&target).await;
    assert!(liveness(&result).ok && !liveness(&result).confirmed);
    assert_eq!(pod.connections(), 12);
}

#[tokio::test]
async fn a_pod_slower_than_the_timeout_times_out_confirmed() {
    let (pod, target) = pod(3);
    pod.set(Behaviour::Slow(Duration::from_millis(1500))).await;
    let result = Prober::new(settings()).probe(&target).await;
    for outcome in [liveness(&result), api_health(&result)] {
        assert!(!outcome.ok);
        assert_eq!(outcome.failure(), Failure::Timeout, "{outcome:?}");
        assert!(outcome.confirmed);
        // The timeout bounds the request, connecting included.
        let waited = outcome.connect_us + outcome.latency_us;
        assert!(waited >= 990_000, "{outcome:?}");
        assert!(outcome.detail.contains("timed out"), "{}", outcome.detail);
    }
    assert!(!metrics(&result).scraped);
    assert_eq!(metrics(&result).failure(), Failure::Timeout);
    assert_eq!(pod.requests("/health"), 2);
    assert_eq!(pod.requests("/api/health"), 2);
}

#[tokio::test]
async fn a_slow_but_answering_pod_has_its_api_confirmed_and_is_reported_ok() {
    let (pod, target) = pod(4);
    pod.set(Behaviour::Slow(Duration::from_millis(200))).await;
    let prober = Prober::new(ProbeSettings {
        slow_threshold: Duration::from_millis(100),
        ..settings()
    });
    let result = prober.probe(&target).await;
    for outcome in [liveness(&result), api_health(&result)] {
        assert!(outcome.ok, "{outcome:?}");
        assert!(outcome.latency_us >= 200_000, "{outcome:?}");
    }
    assert!(
        api_health(&result).confirmed,
        "the API's slowness is confirmed"
    );
    assert!(
        !liveness(&result).confirmed,
        "a slow but answering liveness probe is not repeated"
    );
    assert!(metrics(&result).scraped);
    assert_eq!(pod.requests("/health"), 1);
    assert_eq!(pod.requests("/api/health"), 2);
    assert_eq!(pod.requests("/metrics"), 1);
}

#[tokio::test]
async fn the_coordinators_slow_threshold_of_each_tenant_decides_the_confirmation() {
    let (fast_tenant, fast) = pod(14);
    let (strict_tenant, strict) = pod(15);
    for pod in [&fast_tenant, &strict_tenant] {
        pod.set(Behaviour::Slow(Duration::from_millis(200))).await;
    }
    // By the agent's own threshold, 200 ms is not slow.
    let prober = Prober::new(ProbeSettings {
        slow_threshold: Duration::from_secs(1),
        ..settings()
    });
    let mut instructed = Instructed::default();
    instructed.apply(Instruction {
        slow_threshold_ms: 1_000,
        tenant_slow_threshold_ms: [(strict.tenant.clone(), 100)].into(),
        ..Instruction::default()
    });
    prober.set_slow_thresholds(instructed.slow);
    let strict_result = prober.probe(&strict).await;
    let fast_result = prober.probe(&fast).await;
    // Both asked twice at once; only the strict tenant's answers are late.
    assert!(api_health(&strict_result).ok && api_health(&strict_result).confirmed);
    assert!(api_health(&fast_result).ok && !api_health(&fast_result).confirmed);
    assert_eq!(fast_tenant.requests("/api/health"), 2);
    // Without thresholds from the coordinator, the agent's own is used.
    prober.set_slow_thresholds(None);
    let result = prober.probe(&strict).await;
    assert!(!api_health(&result).confirmed);
    assert_eq!(strict_tenant.requests("/api/health"), 4);
}

#[tokio::test]
async fn an_unavailable_pod_reports_its_status() {
    let (pod, target) = pod(5);
    pod.set(Behaviour::Status(503)).await;
    let result = Prober::new(settings()).probe(&target).await;
    for outcome in [liveness(&result), api_health(&result)] {
        assert!(!outcome.ok);
        assert_eq!(outcome.failure(), Failure::HttpStatus);
        assert_eq!(outcome.status_code, 503);
        assert!(outcome.confirmed);
    }
    assert!(!metrics(&result).scraped);
    assert_eq!(metrics(&result).failure(), Failure::HttpStatus);
    assert_eq!(pod.requests("/health"), 2, "probed and confirmed");
    assert_eq!(
        pod.requests("/api/health"),
        2,
        "probed and confirmed at once"
    );
    assert_eq!(
        pod.connections(),
        5,
        "the confirmations used connections of their own"
    );
}

#[tokio::test]
async fn without_confirmation_a_failure_is_reported_as_first_seen() {
    let (pod, target) = pod(6);
    pod.set(Behaviour::Status(500)).await;
    let prober = Prober::new(ProbeSettings {
        confirm: false,
        ..settings()
    });
    let result = prober.probe(&target).await;
    assert_eq!(liveness(&result).failure(), Failure::HttpStatus);
    assert!(!liveness(&result).confirmed);
    assert_eq!(pod.requests("/health"), 1);
    assert_eq!(pod.requests("/api/health"), 1);
    assert_eq!(pod.connections(), 3, "one per check");
}

#[tokio::test]
async fn a_pod_that_refuses_connections_is_refused_and_recovers() {
    let (pod, target) = pod(7);
    let prober = Prober::new(settings());
    pod.set(Behaviour::Refuse).await;
    let result = prober.probe(&target).await;
    for outcome in [liveness(&result), api_health(&result)] {
        assert!(!outcome.ok);
        assert_eq!(outcome.failure(), Failure::Refused, "{outcome:?}");
        assert!(outcome.confirmed);
        assert!(outcome.detail.contains("127.0.0.7"), "{}", outcome.detail);
    }
    assert_eq!(metrics(&result).failure(), Failure::Refused);
    assert_eq!(pod.connections(), 0);

    pod.set(Behaviour::Healthy).await;
    let result = prober.probe(&target).await;
    assert!(liveness(&result).ok && api_health(&result).ok);
    assert!(metrics(&result).scraped);
}

#[tokio::test]
async fn garbage_bodies_are_bad_bodies() {
    let (pod, target) = pod(8);
    pod.set(Behaviour::Garbage).await;
    let result = Prober::new(settings()).probe(&target).await;
    assert!(liveness(&result).ok, "/health's body is not read");
    let api = api_health(&result);
    assert!(!api.ok);
    assert_eq!(api.failure(), Failure::BadBody);
    assert_eq!(api.status_code, 200);
    assert!(api.confirmed);
    assert!(!metrics(&result).scraped);
    assert_eq!(metrics(&result).failure(), Failure::BadBody);
}

#[tokio::test]
async fn a_pod_without_its_database_says_so() {
    let (pod, target) = pod(9);
    pod.set(Behaviour::DatabaseDown).await;
    let result = Prober::new(settings()).probe(&target).await;
    let api = api_health(&result);
    assert!(api.ok, "{api:?}");
    assert_eq!(api.database_ok, Some(false));
    assert!(!api.confirmed);
}

#[tokio::test]
async fn missing_metrics_are_none_not_zero() {
    let (pod, target) = pod(10);
    pod.update_metrics(|m| m.users = None);
    let prober = Prober::new(settings());
    let m = *metrics(&prober.probe(&target).await);
    assert!(m.scraped);
    assert_eq!(m.users, None);
    assert_eq!(m.requests_total, Some(100.0));

    pod.update_metrics(|m| m.requests = None);
    let m = *metrics(&prober.probe(&target).await);
    assert!(m.scraped);
    assert_eq!((m.requests_total, m.errors_5xx_total), (None, None));
    assert_eq!((m.request_rate_per_second, m.error_ratio), (None, None));
}

#[tokio::test]
async fn labels_in_any_order_and_escaped_quotes_are_read_from_a_real_scrape() {
    let (pod, target) = pod(11);
    pod.set_metrics_text(Some(
        concat!(
            "# TYPE http_requests_total counter\n",
            r#"http_requests_total{code="200",path="/say \"hi\""} 7"#,
            "\n",
            r#"http_requests_total{path="/x",code="504"} 3"#,
            "\n",
            "knowton_tenant_users{tenant=\"acme\"} 5\n",
        )
        .into(),
    ));
    let m = *metrics(&Prober::new(settings()).probe(&target).await);
    assert_eq!(
        (m.requests_total, m.errors_5xx_total, m.users),
        (Some(10.0), Some(3.0), Some(5.0))
    );
}

#[tokio::test]
async fn a_counter_reset_gives_no_rate() {
    let (pod, target) = pod(12);
    let prober = Prober::new(settings());
    prober.probe(&target).await;
    pod.update_metrics(|m| m.requests = Some([(200, 5.0)].into()));
    let m = *metrics(&prober.probe(&target).await);
    assert_eq!(m.requests_total, Some(5.0));
    assert_eq!((m.request_rate_per_second, m.error_ratio), (None, None));
    pod.count_requests(200, 5.0);
    let m = *metrics(&prober.probe(&target).await);
    assert!(m.request_rate_per_second.is_some_and(|r| r > 0.0));
    assert_eq!(m.error_ratio, Some(0.0));
}

#[tokio::test]
async fn https_urls_are_reported_unsupported() {
    let target = Target {
        tenant: "acme".into(),
        pod: "web-0".into(),
        url: "https://127.0.0.1:1".into(),
        storage_path: None,
    };
    let result = Prober::new(settings()).probe(&target).await;
    assert_eq!(liveness(&result).failure(), Failure::Other);
    assert!(liveness(&result).detail.contains("https"));
    assert_eq!(metrics(&result).failure(), Failure::Other);
}

/// A pod behind a general-purpose HTTP server (axum on hyper) that streams
/// its bodies in chunks, as Node and Go servers often do.
#[tokio::test]
async fn chunked_bodies_from_a_real_http_server_are_read_and_the_connection_kept() {
    use axum::body::Body;
    use axum::routing::get;

    fn chunked(parts: &'static [&'static str]) -> Body {
        Body::from_stream(tokio_stream::iter(parts.iter().map(|p| {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(p.as_bytes()))
        })))
    }
    let app = axum::Router::new()
        .route("/health", get(|| async { chunked(&["o", "k"]) }))
        .route(
            "/api/health",
            get(|| async { chunked(&[r#"{"status":"ok","#, r#""database":true}"#]) }),
        )
        .route(
            "/metrics",
            get(|| async {
                chunked(&[
                    "# TYPE http_requests_total counter\n",
                    "http_requests_total{code=\"200\"} 41\n",
                    "http_requests_total{code=\"500\"} 1\n",
                    "knowton_tenant_users 7\n",
                ])
            }),
        );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 14), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let target = Target {
        tenant: "acme".into(),
        pod: "web-0".into(),
        url: format!("http://{addr}"),
        storage_path: None,
    };
    let prober = Prober::new(settings());
    for _ in 0..2 {
        let result = prober.probe(&target).await;
        assert!(liveness(&result).ok, "{:?}", liveness(&result));
        assert_eq!(api_health(&result).database_ok, Some(true));
        let m = metrics(&result);
        assert!(m.scraped, "{m:?}");
        assert_eq!(
            (m.requests_total, m.errors_5xx_total, m.users),
            (Some(42.0), Some(1.0), Some(7.0))
        );
        assert_eq!(prober.idle_connections(), 4, "kept after a chunked body");
    }
    server.abort();
}
