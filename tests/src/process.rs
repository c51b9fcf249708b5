//! The coordinator binary as its own process (for tests that kill it for
//! real), and reads of any coordinator's REST API by its base URL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

use crate::{ADMIN_TOKEN, TestDb};

/// The sealing key of process coordinators (base64 of 32 bytes).
const SECRET_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// The coordinator binary `cargo test --workspace` built next to the test.
pub fn coordinator_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("knowton-coordinator");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p knowton-coordinator` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// `knowton-coordinator serve` running as a child process; killed when
/// dropped.
#[derive(Debug)]
pub struct CoordinatorProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CoordinatorProcess {
    /// Starts `serve` on `db` with the agents' TLS in `tls`, its API on
    /// `http`, its agents' listener on `grpc`, the operators' webhook
    /// `hook`, and the `extra` flags; returns once it says it is ready.
    pub fn serve(
        db: &TestDb,
        tls: &Path,
        (http, grpc): (u16, u16),
        hook: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = Command::new(coordinator_binary())
            .current_dir(db.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["serve", "--log-format", "json"])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--database-url", &db.url])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--secret-key", SECRET_KEY])
            .args(["--tls-dir", &tls.display().to_string()])
            .args(["--notify-webhook", hook])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("serve exited before it was ready")
                .unwrap();
            if line.contains("coordinator ready") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        CoordinatorProcess {
            child,
            base: format!("http://127.0.0.1:{http}"),
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// `GET base + path` as the admin: the JSON body, `Null` when the request
/// or its body failed.
pub async fn get_json(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let Ok(response) = http
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
    else {
        return Value::Null;
    };
    response.json().await.unwrap_or(Value::Null)
}

/// `GET /api/v1/monitoring/health` of `slug` from the coordinator at
/// `base`, as the admin: the status and the body (`Null` when the request
/// failed).
pub async fn tenant_health(http: &reqwest::Client, base: &str, slug: &str) -> (StatusCode, Value) {
    let Ok(reply) = http
        .get(format!("{base}/api/v1/monitoring/health"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Tenant-Slug", slug)
        .send()
        .await
    else {
        return (StatusCode::SERVICE_UNAVAILABLE, Value::Null);
    };
    let status = reply.status();
    (status, reply.json().await.unwrap_or(Value::Null))
}
