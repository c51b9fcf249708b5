//! Thresholds are per tenant and validated.

use super::*;

on_every_backend!(db:
    thresholds_are_per_tenant_and_validated,
);

async fn thresholds_are_per_tenant_and_validated(db: Db) {
    let mut s = setup(db, |_| {}).await;
    s.report(pods(|p| healthy("acme", p))).await;
    // 1 GiB of the basic plan's 10 GiB is 10%: a warning at 5%.
    let put =
        s.kt.admin(
            Method::PUT,
            "/api/v1/tenants/acme/thresholds",
            Some(json!({"storagePercent": {"warning": 5.0, "critical": 50.0}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["overridden"], true);
    assert_eq!(put.body["thresholds"]["storagePercent"]["warning"], 5.0);
    assert_eq!(
        put.body["thresholds"]["responseTimeMs"]["warning"], 1000.0,
        "the others keep their values"
    );
    let alert = s.open_alert("storage").await;
    assert_eq!(alert["severity"], "warning");
    assert_eq!(alert["threshold"], "5%");

    for (body, field) in [
        (
            json!({"storagePercent": {"warning": 60.0, "critical": 50.0}}),
            "storagePercent.warning",
        ),
        (
            json!({"storagePercent": {"warning": -1.0, "critical": 50.0}}),
            "storagePercent",
        ),
        (
            json!({"diskPercent": {"warning": 1.0, "critical": 2.0}}),
            "diskPercent",
        ),
        (
            json!({"errorRatePercent": {"warning": 1.0}}),
            "errorRatePercent.critical",
        ),
    ] {
        let reply =
            s.kt.admin(
                Method::PUT,
                "/api/v1/tenants/acme/thresholds",
                Some(body.clone()),
            )
            .await;
        let (_, got) = reply.error(StatusCode::BAD_REQUEST);
        assert!(
            got.starts_with(field) || field.starts_with(&got),
            "{body}: {got}"
        );
    }
    let unchanged =
        s.kt.admin(Method::GET, "/api/v1/tenants/acme/thresholds", None)
            .await;
    assert_eq!(
        unchanged.body["thresholds"]["storagePercent"]["warning"],
        5.0
    );

    let key = s.kt.provision("globex", "basic").await["apiKeys"]["production"]
        .as_str()
        .unwrap()
        .to_owned();
    let forbidden =
        s.kt.call(
            Method::PUT,
            "/api/v1/tenants/globex/thresholds",
            Some(&key),
            Some(json!({"storagePercent": {"warning": 1.0, "critical": 2.0}})),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    let reset =
        s.kt.admin(Method::DELETE, "/api/v1/tenants/acme/thresholds", None)
            .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(reset.body["overridden"], false);
    s.report(pods(|p| healthy("acme", p))).await;
    s.report(pods(|p| healthy("acme", p))).await;
    assert_eq!(
        s.alert(alert["id"].as_str().unwrap()).await["state"],
        "resolved"
    );
}
