//! The demo's status table: every tenant's latest results as the REST API
//! shows them (`GET /api/v1/monitoring/health`), printed every interval,
//! with a line when a tenant's status changes.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use knowton_common::Plan;
use serde_json::Value;
use tokio::sync::watch;

use super::console::{Console, clock};

/// Polls the coordinator's API as an operator's script would.
#[derive(Debug)]
pub(super) struct StatusBoard {
    pub http: reqwest::Client,
    /// `http://addr`
    pub base: String,
    pub token: String,
    pub tenants: Vec<(String, Plan)>,
    pub console: Console,
}

/// One tenant's row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    /// The API's overall `status`, when it reports one.
    status: Option<String>,
    pods: usize,
    pods_up: usize,
    /// The slowest answer of any pod (API health, else liveness), in ms.
    slowest_ms: Option<f64>,
    newest: Option<DateTime<Utc>>,
    /// The checks of the open alerts, when the API reports them.
    open_alerts: Vec<String>,
}

impl StatusBoard {
    /// Prints the table every `every` until `stop`.
    pub async fn run(self, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut statuses: HashMap<String, String> = HashMap::new();
        let mut reporting = false;
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let mut rows = Vec::with_capacity(self.tenants.len());
            for (slug, plan) in &self.tenants {
                rows.push((slug, *plan, self.fetch(slug).await));
            }
            let results = rows
                .iter()
                .filter_map(|(_, _, row)| row.as_ref().ok())
                .map(|row| row.pods)
                .sum::<usize>();
            if !reporting && results > 0 {
                reporting = true;
                self.console.event(format!(
                    "first results from the agent: {results} pods of {} tenants",
                    rows.iter()
                        .filter(|(_, _, r)| r.as_ref().is_ok_and(|r| r.pods > 0))
                        .count()
                ));
            }
            for (slug, _, row) in &rows {
                let Some(status) = row.as_ref().ok().and_then(|r| r.status.clone()) else {
                    continue;
                };
                match statuses.insert(slug.to_string(), status.clone()) {
                    // The first evaluation is no news.
                    Some(before) if before == "unknown" && status == "healthy" => {}
                    Some(before) if before != status => self
                        .console
                        .event(format!("{slug} is now {status} (was {before})")),
                    _ => {}
                }
            }
            if *stop.borrow() {
                return;
            }
            self.console.line(table(&rows, Utc::now()));
        }
    }

    async fn fetch(&self, slug: &str) -> Result<Row, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/monitoring/health", self.base))
            .bearer_auth(&self.token)
            .header("X-Tenant-Slug", slug)
            .send()
            .await
            .map_err(|err| format!("unreachable: {err}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|err| format!("HTTP {status}: {err}"))?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("");
            return Err(format!("HTTP {status} {message}"));
        }
        Ok(row(&body))
    }
}

/// The row of one `GET /api/v1/monitoring/health` body.
fn row(body: &Value) -> Row {
    let pods = body["pods"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let latency = |pod: &Value| {
        ["apiHealth", "liveness"]
            .iter()
            .find_map(|check| pod[check]["latencyMs"].as_f64())
    };
    let status = match &body["status"] {
        Value::String(s) => Some(s.clone()),
        other => other["status"].as_str().map(str::to_owned),
    };
    Row {
        status,
        pods: pods.len(),
        pods_up: pods
            .iter()
            .filter(|p| p["liveness"]["ok"].as_bool() == Some(true))
            .count(),
        slowest_ms: pods.iter().filter_map(latency).reduce(f64::max),
        newest: pods
            .iter()
            .filter_map(|p| p["receivedAt"].as_str())
            .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .max(),
        open_alerts: body["openAlerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["check"].as_str().map(str::to_owned))
            .collect(),
    }
}

fn table(rows: &[(&String, Plan, Result<Row, String>)], now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{}  {:<10} {:<13} {:<9} {:<8} {:<9} {:<14} {}",
        clock(),
        "TENANT",
        "PLAN",
        "STATUS",
        "PODS UP",
        "SLOWEST",
        "LAST RESULT",
        "OPEN ALERTS"
    );
    for (slug, plan, row) in rows {
        let cells = match row {
            Ok(r) => format!(
                "{:<9} {:<8} {:<9} {:<14} {}",
                r.status.as_deref().unwrap_or("-"),
                format!("{}/{}", r.pods_up, r.pods),
                r.slowest_ms.map_or_else(|| "-".to_owned(), milliseconds),
                r.newest.map_or_else(
                    || "no results yet".to_owned(),
                    |t| format!("{}s ago", (now - t).num_seconds().max(0))
                ),
                if r.open_alerts.is_empty() {
                    "-".to_owned()
                } else {
                    r.open_alerts.join(", ")
                },
            ),
            Err(err) => err.clone(),
        };
        out.push_str(&format!(
            "\n          {slug:<10} {:<13} {cells}",
            plan.as_str()
        ));
    }
    out
}

/// `0.4 ms`, `1503 ms`.
fn milliseconds(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_counts_pods_up_and_takes_the_slowest_answer() {
        let body = json!({
            "tenant": "globex",
            "pods": [
                {"pod": "globex-backend-0", "receivedAt": "2030-01-01T12:00:01Z",
                 "liveness": {"ok": true, "latencyMs": 3.2},
                 "apiHealth": {"ok": true, "latencyMs": 1503.4}},
                {"pod": "globex-backend-1", "receivedAt": "2030-01-01T12:00:03Z",
                 "liveness": {"ok": false, "latencyMs": 0.0}},
            ],
        });
        let r = row(&body);
        assert_eq!((r.pods, r.pods_up, r.status.as_deref()), (2, 1, None));
        assert_eq!(r.slowest_ms, Some(1503.4));
        let newest = r.newest.unwrap();
        assert_eq!(newest.to_rfc3339(), "2030-01-01T12:00:03+00:00");
        let slug = "globex".to_owned();
        let text = table(
            &[(&slug, Plan::Professional, Ok(r))],
            newest + chrono::TimeDelta::seconds(2),
        );
        assert!(
            text.ends_with(
                "globex     professional  -         1/2      1503 ms   2s ago         -"
            ),
            "{text}"
        );
        assert_eq!(milliseconds(0.43), "0.4 ms");
        let with_status = row(&json!({
            "status": "warning",
            "openAlerts": [{"check": "response_time", "severity": "warning"}],
            "pods": [],
        }));
        assert_eq!(with_status.status.as_deref(), Some("warning"));
        assert_eq!(with_status.open_alerts, ["response_time"]);
    }
}
