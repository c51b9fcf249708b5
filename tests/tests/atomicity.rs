//! Provisioning is one transaction: a failure at any step leaves nothing.

use std::time::Duration;

use knowton_tests::deploy::until_settled;
use knowton_tests::eventually::eventually;
use knowton_tests::{TestCoordinator, on_every_backend, tenant_request};
use reqwest::{Method, StatusCode};

on_every_backend!(a_failure_at_any_step_leaves_no_rows);

async fn a_failure_at_any_step_leaves_no_rows(kt: TestCoordinator) {
    // One tenant that must survive every failed attempt untouched.
    kt.provision("survivor", "basic").await;
    // Its deployment (recorded as skipped: no cluster) is written after
    // the reply: the snapshot waits for it to end.
    let deployment = until_settled(&kt, "survivor").await;
    assert_eq!(deployment["phase"], "skipped", "{deployment:#}");
    // So is the backup of its configuration, which marks its version as
    // written (`backed_up_at`): the snapshot waits for that too, or it
    // would see the mark land in the middle of the failures below.
    eventually(
        Duration::from_secs(20),
        "the survivor's configuration backed up",
        || async {
            let waiting = kt
                .db
                .scalar("SELECT CAST(COUNT(*) AS TEXT) FROM tenant_config_history WHERE backed_up_at IS NULL")
                .await;
            (waiting.as_deref() == Some("0")).then_some(())
        },
    )
    .await;
    let before = kt.db.every_stored_value().await;

    // The tables in the order provisioning writes them: fail each in turn.
    for table in [
        "tenant_users",
        "api_keys",
        "tenant_branding",
        "tenant_features",
        "tenant_usage",
        "tenant_secrets",
        "outbox",
        "tenant_config_history",
    ] {
        kt.db.fail_inserts_into(table).await;
        let reply = kt
            .admin(
                Method::POST,
                "/api/v1/tenants",
                Some(tenant_request("acme", "enterprise")),
            )
            .await;
        let (code, _) = reply.error(StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(code, "internal", "failing {table}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("injected"),
            "internal details stay in the log"
        );
        assert!(
            reply
                .header("x-request-id")
                .is_some_and(|id| id.len() >= 32),
            "a request id to find the log line"
        );
        assert_eq!(
            kt.db.every_stored_value().await,
            before,
            "failing {table} left rows behind"
        );
        kt.db.stop_failing_inserts_into(table).await;
    }

    // Nothing was left behind: the same slug and domain provision cleanly.
    let created = kt.provision("acme", "enterprise").await;
    assert_eq!(created["tenant"]["configVersion"], 1);
    assert_eq!(kt.tenant_count().await, 2);
}
