//! Without a cluster: deployments are rendered and recorded as skipped, and
//! bad settings are refused.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_rendered_and_recorded_as_skipped() {
    let kt = TestCoordinator::start(Db::Sqlite).await;
    kt.provision("solo", "basic").await;
    let view = until_phase(&kt, "solo", 1, "skipped").await;
    assert_eq!(view["cluster"], false);
    assert!(
        view["reason"].as_str().unwrap().contains("no cluster"),
        "{view:#}"
    );
    assert!(view["objectsHash"].as_str().is_some_and(|h| h.len() == 64));
    let reply = dry_run(&kt, "solo", "server").await;
    let (code, _) = reply.error(StatusCode::CONFLICT);
    assert_eq!(code, "no_cluster");
    let reply = dry_run(&kt, "solo", "client").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["objects"].as_array().unwrap().len(), 15);
    assert_eq!(reply.body["objectsHash"], view["objectsHash"]);
    kt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_and_change_nothing() {
    let kt = TestCoordinator::start(Db::Sqlite).await;
    kt.provision("alpha", "basic").await;
    kt.provision("beta", "basic").await;
    until_phase(&kt, "beta", 1, "skipped").await;
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/beta/deployment",
            Some(json!({"allowlist": ["203.0.113.0/24", "10.0.0/8"]})),
        )
        .await;
    let (code, field) = reply.error(StatusCode::BAD_REQUEST);
    assert_eq!(
        (code.as_str(), field.as_str()),
        ("invalid_field", "allowlist[1]"),
        "{}",
        reply.body
    );
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.0.0/8")
    );
    // A domain another tenant owns: refused, and no deployment follows.
    let reply = kt
        .admin(
            Method::PUT,
            "/api/v1/tenants/beta",
            Some(json!({"domain": "alpha.knowton.example.com"})),
        )
        .await;
    let (code, _) = reply.error(StatusCode::CONFLICT);
    assert_eq!(code, "domain_taken");
    let view = deployment_of(&kt, "beta").await;
    assert_eq!(view["attempt"], 1, "{view:#}");
    assert_eq!(view["allowlist"], json!([]));
    kt.stop().await;
}
