//! The demo's operator webhook: a loopback HTTP receiver that appends every
//! notification body to a log, one JSON document per line, and prints one
//! line per alert in it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use super::console::Console;

/// The path notifications are posted to.
const PATH: &str = "/alerts";

/// A running receiver.
#[derive(Debug)]
pub(super) struct Receiver {
    pub url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct WebhookLog {
    log: PathBuf,
    /// Held while a line is appended, so lines never interleave.
    writing: Mutex<()>,
    console: Console,
}

impl Receiver {
    /// Listens on an ephemeral port of 127.0.0.1 (the coordinator accepts
    /// plain http for loopback webhooks only).
    pub async fn start(log: PathBuf, console: Console) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}{PATH}", listener.local_addr()?);
        let inner = Arc::new(WebhookLog {
            log,
            writing: Mutex::new(()),
            console,
        });
        let app = Router::new().route(PATH, post(receive)).with_state(inner);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(err) = server.await {
                tracing::error!(error = %err, "demo webhook receiver failed");
            }
        });
        Ok(Receiver { url, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn receive(State(inner): State<Arc<WebhookLog>>, body: Bytes) -> StatusCode {
    let payload: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut line = payload.to_string();
    line.push('\n');
    let written = {
        let _guard = inner.writing.lock().await;
        append(&inner.log, line.as_bytes()).await
    };
    if let Err(err) = written {
        inner.console.event(format!(
            "webhook: failed to append to {}: {err} (answered 500; the coordinator retries)",
            inner.log.display()
        ));
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    for summary in describe(&payload) {
        inner.console.event(summary);
    }
    StatusCode::OK
}

async fn append(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    file.write_all(bytes).await?;
    file.flush().await
}

/// One line per alert of an Alertmanager (version 4) payload:
/// `ALERT firing [WARNING] acme response_time: API responds in 1503 ms`.
pub(super) fn describe(payload: &Value) -> Vec<String> {
    let Some(alerts) = payload["alerts"].as_array().filter(|a| !a.is_empty()) else {
        return vec![format!(
            "webhook: received a notification without alerts: {payload}"
        )];
    };
    alerts
        .iter()
        .map(|alert| {
            let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
            let status = alert["status"]
                .as_str()
                .or_else(|| payload["status"].as_str())
                .unwrap_or("?");
            let labels = &alert["labels"];
            format!(
                "ALERT {status} [{}] {} {}: {}",
                text(&labels["severity"]).to_uppercase(),
                text(&labels["tenant"]),
                text(&labels["alertname"]),
                text(&alert["annotations"]["summary"]),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_line_per_alert_with_status_severity_tenant_and_check() {
        let payload = json!({
            "version": "4",
            "status": "firing",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "response_time", "tenant": "globex", "severity": "warning"},
                "annotations": {"summary": "API responds in 1503 ms"},
            }],
        });
        assert_eq!(
            describe(&payload),
            ["ALERT firing [WARNING] globex response_time: API responds in 1503 ms"]
        );
        let other = json!({"text": "hello"});
        assert!(describe(&other)[0].contains("without alerts"));
    }
}
