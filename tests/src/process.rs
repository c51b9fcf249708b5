//! The coordinator binary as its own process (for tests that kill it for
//! real), and reads of any coordinator's REST API by its base URL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::Value;

use rustix::process::{Pid, Signal, kill_process};

use crate::ADMIN_TOKEN;
use crate::coordinator::METRICS_TOKEN;

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

/// The agent binary, built beside the test (`cargo build -p knowton-agent`;
/// `cargo test --workspace` builds it).
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("knowton-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p knowton-agent` (cargo test --workspace does)",
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
    /// Its log lines (JSON) since it was ready.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CoordinatorProcess {
    /// Starts `serve` in `dir` on the database at `database_url`, with the
    /// agents' TLS in `tls`, its API on `http`, its agents' listener on
    /// `grpc`, the operators' webhook `hook`, and the `extra` flags; returns
    /// once it says it is ready. `/metrics` is served on the API's port to
    /// [`METRICS_TOKEN`].
    pub fn serve(
        (dir, database_url): (&Path, &str),
        tls: &Path,
        (http, grpc): (u16, u16),
        hook: &str,
        extra: &[&str],
    ) -> Self {
        Self::serve_with_tools(None, (dir, database_url), tls, (http, grpc), hook, extra)
    }

    /// [`serve`](Self::serve) with the programs in `tools` (a `pg_dump`
    /// that stalls, say) found before those on the test's `PATH`.
    pub fn serve_with_tools(
        tools: Option<&Path>,
        (dir, database_url): (&Path, &str),
        tls: &Path,
        (http, grpc): (u16, u16),
        hook: &str,
        extra: &[&str],
    ) -> Self {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            tools
                .map(Path::to_path_buf)
                .into_iter()
                .chain(std::env::split_paths(&inherited)),
        )
        .expect("a PATH entry holds no separator");
        let mut child = Command::new(coordinator_binary())
            .current_dir(dir)
            .env_clear()
            .env("PATH", path)
            .args(["serve", "--log-format", "json"])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--database-url", database_url])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--secret-key", SECRET_KEY])
            .args(["--metrics-token", METRICS_TOKEN])
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        CoordinatorProcess {
            child,
            base: format!("http://127.0.0.1:{http}"),
            log,
        }
    }

    /// Whether a log line since it was ready contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, SIGTERM…) to the process.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        kill_process(pid, signal).unwrap();
    }

    /// SIGTERM, and waits for a clean exit (the coordinator drains, resigns
    /// its lease and closes the store).
    pub fn terminate(mut self) {
        self.signal(Signal::TERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a clean exit on SIGTERM: {status}");
    }
}

/// One unlabelled sample of the coordinator's `/metrics` at `base` (served
/// to [`METRICS_TOKEN`]); `None` while it does not answer or show `name`.
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let request = http.get(format!("{base}/metrics"));
    scrape(request.bearer_auth(METRICS_TOKEN), name).await
}

/// The series `name` of the exposition `request` fetches; `None` while it
/// does not answer or show `name`.
pub async fn scrape(request: reqwest::RequestBuilder, name: &str) -> Option<f64> {
    let text = request.send().await.ok()?.text().await.ok()?;
    sample(&text, name)
}

/// The value of the series `name` (with its labels, if any) in a
/// Prometheus text exposition.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
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
