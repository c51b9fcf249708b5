//! Alerts from results as they arrive: every check in both directions,
//! escalation in place, hysteresis, flapping, manual resolve, acknowledge
//! and reminders, silences and thresholds; each notification observed at a
//! real HTTP receiver, every state read back through the API, on SQLite
//! and PostgreSQL.
//!
//! One test binary; its modules by subject:
//! - `transitions`: opening and resolving, escalation, flapping.
//! - `handling`: manual resolve, acknowledge and reminders.
//! - `silences`: silences, their cap, and whose channels they quiet.
//! - `thresholds`: per-tenant thresholds and their validation.

mod handling;
mod silences;
mod thresholds;
mod transitions;

use std::time::Duration;

use knowton_coordinator::config::ServeArgs;
use knowton_proto::agent::v1::PodResult;
use knowton_tests::feed::{Feed, Shape, healthy};
use knowton_tests::receiver::{Hit, Receiver, ReceiverTls};
use knowton_tests::{Db, TestCoordinator, eventually, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 30;

struct Setup {
    kt: TestCoordinator,
    hook: Receiver,
    feed: Feed,
}

async fn setup(db: Db, change: impl FnOnce(&mut ServeArgs)) -> Setup {
    let hook = Receiver::start().await;
    let url = hook.url("/alertmanager");
    let kt = TestCoordinator::start_and(db, move |a| {
        a.notify.notify_webhook = Some(url);
        // Sweeps (re-evaluations without new results) only when a test asks.
        a.alerting.health_sweep_seconds = 60;
        change(a);
    })
    .await;
    kt.provision("acme", "basic").await;
    let feed = Feed::new(&kt, "node-a");
    Setup { kt, hook, feed }
}

impl Setup {
    /// Sends `results` and waits until the tenant was evaluated on them.
    async fn report(&mut self, results: Vec<PodResult>) -> Value {
        self.feed.send(results);
        let time = |v: &Value| v.as_str()?.parse::<chrono::DateTime<chrono::Utc>>().ok();
        // When the coordinator received them, then an evaluation that saw them.
        let received = self.health().await["pods"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| time(&p["receivedAt"]))
            .max()
            .unwrap();
        eventually(WAIT, "an evaluation of the new results", || async {
            let health = self.health().await;
            time(&health["resultsUpTo"])
                .is_some_and(|at| at >= received)
                .then_some(health)
        })
        .await
    }

    async fn health(&self) -> Value {
        let reply = self.kt.monitoring_health("acme").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    async fn alerts(&self, query: &str) -> Vec<Value> {
        let reply = self
            .kt
            .admin(
                Method::GET,
                &format!("/api/v1/monitoring/alerts?{query}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["alerts"].as_array().cloned().unwrap_or_default()
    }

    async fn alert(&self, id: &str) -> Value {
        let reply = self
            .kt
            .admin(
                Method::GET,
                &format!("/api/v1/monitoring/alerts/{id}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// The open alert of `check`, once there is one.
    async fn open_alert(&self, check: &str) -> Value {
        eventually(WAIT, &format!("an open {check} alert"), || async {
            self.alerts("resolved=false")
                .await
                .into_iter()
                .find(|a| a["check"] == check)
        })
        .await
    }

    /// Webhook payloads received for `check`, as (status, severity).
    fn notified(&self, check: &str) -> Vec<(String, String)> {
        self.hook
            .accepted()
            .iter()
            .map(Hit::json)
            .filter(|p| p["alerts"][0]["labels"]["alertname"] == check)
            .map(|p| {
                (
                    p["status"].as_str().unwrap_or_default().to_owned(),
                    p["alerts"][0]["labels"]["severity"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    async fn until_notified(&self, check: &str, count: usize) -> Vec<(String, String)> {
        eventually(
            WAIT,
            &format!("{count} notifications of {check}"),
            || async {
                let got = self.notified(check);
                (got.len() >= count).then_some(got)
            },
        )
        .await
    }
}

fn history_kinds(alert: &Value) -> Vec<String> {
    alert["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pods(result: impl Fn(&str) -> PodResult) -> Vec<PodResult> {
    vec![result("web-0"), result("web-1")]
}
