//! Who can read `/metrics`, and what requests can do to it (issue 11,
//! findings 2 and 7): no label value comes from a request, and the metrics,
//! which name every tenant, are read only with the metrics token or on the
//! metrics listener.

use knowton_tests::{ADMIN_TOKEN, Db, METRICS_TOKEN, TestCoordinator};
use reqwest::{Method, StatusCode};

/// The `knowton_http_*` series in `text`.
fn http_series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("knowton_http_requests_total{"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_and_paths_add_no_series() {
    let kt = TestCoordinator::start(Db::Sqlite).await;
    let before = kt.scrape().await;
    // Methods and paths nobody routes, each one new: the old server made a
    // series (and a histogram) of every method.
    for i in 0..400 {
        let method =
            Method::from_bytes(format!("X{i}{}", uuid::Uuid::new_v4().simple()).as_bytes())
                .unwrap();
        let path = format!("/{}/{i}", uuid::Uuid::new_v4());
        let status = kt
            .http
            .request(method.clone(), kt.url(&path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::NOT_FOUND);
        // On a route that exists, too.
        let status = kt
            .http
            .request(method, kt.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let status = kt.http.get(kt.url(&path)).send().await.unwrap().status();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let after = kt.scrape().await;
    let series = http_series(&after);
    // unmatched × {other, GET} and /healthz × other, besides the scrapes.
    assert!(
        series.len() <= http_series(&before).len() + 4,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    for line in &series {
        assert!(
            !line.contains("method=\"X") && !line.contains("route=\"/0"),
            "a label from a request: {line}"
        );
    }
    for expected in [
        "knowton_http_requests_total{code=\"404\",method=\"other\",route=\"unmatched\"} 400",
        "knowton_http_requests_total{code=\"405\",method=\"other\",route=\"/healthz\"} 400",
        "knowton_http_requests_total{code=\"404\",method=\"GET\",route=\"unmatched\"} 400",
    ] {
        assert!(
            after.contains(expected),
            "missing {expected}:\n{}",
            series.join("\n")
        );
    }
    assert!(
        after.len() < before.len() + 16 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    kt.stop().await;
}

async fn get(url: &str, token: Option<&str>) -> (StatusCode, String) {
    let client = knowton_coordinator::client::http_client();
    let mut req = client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let response = req.send().await.expect("request reaches the coordinator");
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_anonymous_callers_cannot_read_the_metrics() {
    // The deployment's setup: a metrics listener and a token.
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.http.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let acme = kt.provision("acme", "basic").await;
    let globex = kt.provision("globex", "basic").await;
    let acme_key = acme["apiKeys"]["production"].as_str().unwrap();
    let acme_dev = acme["apiKeys"]["development"].as_str().unwrap();
    let globex_key = globex["apiKeys"]["production"].as_str().unwrap();
    let metrics_url = kt.url("/metrics");

    for (who, token) in [
        ("anonymous", None),
        ("acme's production key", Some(acme_key)),
        ("acme's development key", Some(acme_dev)),
        ("globex's production key", Some(globex_key)),
        ("the admin token", Some(ADMIN_TOKEN)),
        ("a wrong token", Some("test-metrics-token-0123456789abcdeX")),
    ] {
        let (status, body) = get(&metrics_url, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
        assert!(
            !body.contains("globex") && !body.contains("acme"),
            "{who}: {body}"
        );
    }
    // The scrape path: the token on the API port ...
    let (status, body) = get(&metrics_url, Some(METRICS_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("knowton_plan_users_limit"), "{body}");

    // ... and the metrics listener, with the token too when one is set.
    let listener = format!("http://{}", kt_metrics_addr(&kt));
    let (status, _) = get(&format!("{listener}/metrics"), Some(acme_key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&format!("{listener}/metrics"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(&format!("{listener}/metrics"), Some(METRICS_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("knowton_plan_users_limit"), "{body}");
    // The metrics listener serves nothing else.
    let (status, _) = get(&format!("{listener}/api/v1/tenants"), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    kt.stop().await;
}

fn kt_metrics_addr(kt: &TestCoordinator) -> std::net::SocketAddr {
    kt.metrics_addr().expect("metrics listener on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_metrics_are_only_on_their_own_listener() {
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.http.metrics_token = None;
        args.http.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let acme = kt.provision("acme", "basic").await;
    let acme_key = acme["apiKeys"]["production"].as_str().unwrap();
    for token in [None, Some(acme_key), Some(ADMIN_TOKEN), Some(METRICS_TOKEN)] {
        let (status, body) = get(&kt.url("/metrics"), token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("--metrics-addr"), "{body}");
    }
    let listener = format!("http://{}/metrics", kt_metrics_addr(&kt));
    let (status, body) = get(&listener, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("knowton_plan_users_limit"), "{body}");
    kt.stop().await;
}
