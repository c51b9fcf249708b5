//! An operator resolves and acknowledges alerts; reminders repeat until
//! acknowledged.

use super::*;

on_every_backend!(db:
    manual_resolve_acknowledge_and_reminders,
);

async fn manual_resolve_acknowledge_and_reminders(db: Db) {
    let mut s = setup(db, |a| {
        a.alerting.alert_reminder_seconds = 1;
        a.alerting.health_sweep_seconds = 1;
    })
    .await;
    s.report(pods(|p| healthy("acme", p).storage(98 * GIB / 10)))
        .await;
    let alert = s.open_alert("storage").await;
    let id = alert["id"].as_str().unwrap().to_owned();
    // Unacknowledged: reminded (the same alert notified again).
    eventually(WAIT, "a reminder", || async {
        let a = s.alert(&id).await;
        history_kinds(&a)
            .contains(&"reminder".to_owned())
            .then_some(())
    })
    .await;
    assert!(
        s.until_notified("storage", 2)
            .await
            .iter()
            .all(|n| n.0 == "firing")
    );

    let acked =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/acknowledge"),
            Some(json!({"note": "looking into it"})),
        )
        .await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.body);
    assert_eq!(acked.body["state"], "firing", "still open");
    assert_eq!(acked.body["acknowledgedBy"], "admin");
    let reminders = |a: &Value| history_kinds(a).iter().filter(|k| *k == "reminder").count();
    let at_ack = reminders(&acked.body);
    // Several sweeps later, no reminder was added.
    let evaluated = s.health().await["evaluatedAt"].clone();
    for _ in 0..3 {
        let last = s.health().await["evaluatedAt"].clone();
        eventually(WAIT, "a sweep", || async {
            (s.health().await["evaluatedAt"] != last).then_some(())
        })
        .await;
    }
    assert_ne!(s.health().await["evaluatedAt"], evaluated);
    assert_eq!(
        reminders(&s.alert(&id).await),
        at_ack,
        "acknowledged: no reminders"
    );

    let resolved =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/resolve"),
            Some(json!({"note": "volume resized"})),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.body);
    assert_eq!(resolved.body["state"], "resolved");
    assert_eq!(resolved.body["resolvedBy"], "admin");
    assert_eq!(resolved.body["note"], "volume resized");
    let kinds = history_kinds(&resolved.body);
    assert_eq!(kinds.first().map(String::as_str), Some("opened"));
    assert_eq!(kinds.last().map(String::as_str), Some("resolved"));
    assert!(kinds.contains(&"acknowledged".to_owned()));
    let sent = eventually(WAIT, "the resolution", || async {
        let sent = s.notified("storage");
        (sent.last().is_some_and(|n| n.0 == "resolved")).then_some(sent)
    })
    .await;
    assert_eq!(sent.iter().filter(|n| n.0 == "resolved").count(), 1);

    let again =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/resolve"),
            None,
        )
        .await;
    assert_eq!(again.error(StatusCode::CONFLICT).0, "alert_resolved");
    let missing =
        s.kt.admin(
            Method::POST,
            "/api/v1/monitoring/alerts/0190f1a2-0000-7000-8000-000000000000/resolve",
            None,
        )
        .await;
    assert_eq!(missing.error(StatusCode::NOT_FOUND).0, "alert_not_found");
    let bad_note =
        s.kt.admin(
            Method::POST,
            &format!("/api/v1/monitoring/alerts/{id}/acknowledge"),
            Some(json!({"note": 42})),
        )
        .await;
    assert_eq!(bad_note.error(StatusCode::BAD_REQUEST).1, "note");

    // The breach goes on: a new alert opens.
    s.report(pods(|p| healthy("acme", p).storage(98 * GIB / 10)))
        .await;
    let next = s.open_alert("storage").await;
    assert_ne!(next["id"], alert["id"]);

    // Another tenant's key sees none of acme's alerts.
    let other = s.kt.provision("globex", "basic").await;
    let key = other["apiKeys"]["production"].as_str().unwrap().to_owned();
    let theirs =
        s.kt.call(Method::GET, "/api/v1/monitoring/alerts", Some(&key), None)
            .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert_eq!(theirs.body["alerts"], json!([]));
    let peek =
        s.kt.call(
            Method::GET,
            &format!("/api/v1/monitoring/alerts/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
}
