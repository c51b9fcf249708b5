//! Every check opens and resolves in both directions; a warning escalates
//! in place; a flapping check notifies once.

use super::*;

on_every_backend!(db:
    every_check_opens_and_resolves_in_both_directions,
    a_warning_escalates_in_place_and_one_good_result_does_not_resolve,
    a_flapping_check_notifies_once_and_settles,
);

async fn every_check_opens_and_resolves_in_both_directions(db: Db) {
    let mut s = setup(db, |_| {}).await;
    let health = s.report(pods(|p| healthy("acme", p))).await;
    assert_eq!(health["status"], "healthy", "{health}");

    type Breach = fn(PodResult) -> PodResult;
    let cases: [(&str, Breach, &str, &str); 8] = [
        ("storage", |p| p.storage(9 * GIB), "warning", "warning"),
        (
            "storage",
            |p| p.storage(98 * GIB / 10),
            "critical",
            "critical",
        ),
        ("users", |p| p.users(10.0), "critical", "critical"),
        ("api_rate", |p| p.traffic(0.7, 0.0), "warning", "warning"),
        (
            "error_rate",
            |p| p.traffic(0.5, 0.2),
            "critical",
            "critical",
        ),
        ("response_time", |p| p.slow(1500), "warning", "warning"),
        ("database", |p| p.database_down(), "critical", "critical"),
        ("api_health", |p| p.api_failing(), "critical", "critical"),
    ];
    let mut notified_before = std::collections::HashMap::new();
    for (check, breach, severity, status) in cases {
        let before = *notified_before.entry(check).or_insert(0usize);
        let health = s.report(pods(|p| breach(healthy("acme", p)))).await;
        assert_eq!(health["status"], status, "{check}: {health}");
        let alert = s.open_alert(check).await;
        assert_eq!(alert["severity"], severity, "{alert}");
        assert_eq!(alert["tenant"], "acme");
        let firing = s.until_notified(check, before + 1).await;
        assert_eq!(
            firing[before],
            ("firing".to_owned(), severity.to_owned()),
            "{check}"
        );

        // Back within thresholds: resolved after two good evaluations.
        s.report(pods(|p| healthy("acme", p))).await;
        let id = alert["id"].as_str().unwrap().to_owned();
        assert_eq!(
            s.alert(&id).await["state"],
            "firing",
            "one good result is not enough"
        );
        let health = s.report(pods(|p| healthy("acme", p))).await;
        assert_eq!(health["status"], "healthy", "{health}");
        let resolved = s.alert(&id).await;
        assert_eq!(resolved["state"], "resolved", "{resolved}");
        assert_eq!(resolved["resolvedBy"], "auto");
        assert_eq!(history_kinds(&resolved), ["opened", "resolved"]);
        let sent = s.until_notified(check, before + 2).await;
        assert_eq!(sent[before + 1].0, "resolved", "{check}");
        notified_before.insert(check, before + 2);
    }
    assert!(s.alerts("resolved=false").await.is_empty());
    assert_eq!(s.alerts("resolved=true").await.len(), 8);

    // Pods that stop answering: down, and an API alert.
    let health = s.report(pods(|p| healthy("acme", p).down())).await;
    assert_eq!(health["status"], "down", "{health}");
    s.open_alert("api_health").await;
}

async fn a_warning_escalates_in_place_and_one_good_result_does_not_resolve(db: Db) {
    let mut s = setup(db, |_| {}).await;
    s.report(pods(|p| healthy("acme", p).slow(1500))).await;
    let warning = s.open_alert("response_time").await;
    assert_eq!(warning["severity"], "warning");
    s.report(pods(|p| healthy("acme", p).slow(2500))).await;
    let critical = eventually(WAIT, "the escalation", || async {
        let a = s.open_alert("response_time").await;
        (a["severity"] == "critical").then_some(a)
    })
    .await;
    assert_eq!(critical["id"], warning["id"], "escalated in place");
    assert_eq!(critical["value"], "2500 ms", "{critical}");
    assert_eq!(critical["threshold"], "2000 ms", "{critical}");

    // One good result between bad ones: still the same open alert.
    s.report(pods(|p| healthy("acme", p))).await;
    s.report(pods(|p| healthy("acme", p).slow(2500))).await;
    s.report(pods(|p| healthy("acme", p))).await;
    let still = s.open_alert("response_time").await;
    assert_eq!(still["id"], warning["id"]);
    s.report(pods(|p| healthy("acme", p))).await;
    let id = warning["id"].as_str().unwrap();
    let done = s.alert(id).await;
    assert_eq!(done["state"], "resolved");
    assert_eq!(history_kinds(&done), ["opened", "escalated", "resolved"]);
    // Deliveries run concurrently: compare as a set.
    let mut sent = s.until_notified("response_time", 3).await;
    sent.sort();
    assert_eq!(
        sent,
        [
            ("firing".to_owned(), "critical".to_owned()),
            ("firing".to_owned(), "warning".to_owned()),
            ("resolved".to_owned(), "critical".to_owned()),
        ]
    );
    assert_eq!(
        s.alerts("").await.len(),
        1,
        "one alert for the whole episode"
    );
}

async fn a_flapping_check_notifies_once_and_settles(db: Db) {
    let mut s = setup(db, |a| {
        a.alerting.alert_flap_changes = 3;
        a.alerting.alert_flap_window_seconds = 2;
    })
    .await;
    for _ in 0..3 {
        s.report(pods(|p| healthy("acme", p).slow(2500))).await;
        s.report(pods(|p| healthy("acme", p))).await;
    }
    let alert = eventually(WAIT, "a flapping alert", || async {
        s.alerts("")
            .await
            .into_iter()
            .find(|a| a["state"] == "flapping")
    })
    .await;
    let sent = s.until_notified("response_time", 2).await;
    assert_eq!(sent.len(), 2, "opened, then flapping: {sent:?}");
    // More changes while flapping: no more notifications.
    for _ in 0..2 {
        s.report(pods(|p| healthy("acme", p).slow(2500))).await;
        s.report(pods(|p| healthy("acme", p))).await;
    }
    assert_eq!(s.notified("response_time").len(), 2);
    // Stable for the window: the flap ends and, being fine, resolves.
    let id = alert["id"].as_str().unwrap().to_owned();
    // Good results keep arriving, like an agent's every 100 ms, until the
    // window has passed without a change.
    let mut agent_interval = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + WAIT;
    let settled = loop {
        agent_interval.tick().await;
        s.report(pods(|p| healthy("acme", p))).await;
        let a = s.alert(&id).await;
        if a["state"] == "resolved" {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flap never ended: {a}"
        );
    };
    let kinds = history_kinds(&settled);
    assert_eq!(kinds.first().map(String::as_str), Some("opened"));
    assert!(kinds.contains(&"flapping_started".to_owned()), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("flapping_ended"));
    let sent = s.until_notified("response_time", 3).await;
    assert_eq!(sent[2].0, "resolved");
}
