//! The operator commands: clients of a running coordinator's REST API that
//! print readable text (or JSON with `--output json`) and exit non-zero
//! with the server's message on failure.
//!
//! - [`tenants`]: provision, deprovision, list, show, change plan, rotate keys.
//! - [`monitoring`]: check-all, the daily report, cleanup.
//! - [`deploy`]: deploy a tenant, or preview it.
//! - `backups`: list, take, verify and restore a tenant's backups.

mod backups;
mod deploy;
mod monitoring;
mod tenants;

pub use backups::{list as backups_list, restore, run as backups_run, verify};
pub use deploy::{deploy, planned_changes_text};
pub use monitoring::{check_all, cleanup, cluster, report_daily};
pub use tenants::{deprovision, get, list, provision, rotate_key, set_plan};

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{ClientArgs, Output};

/// An HTTP client for the coordinator's API.
pub fn http_client() -> reqwest::Client {
    crate::certs::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!(
            "knowton-coordinator-cli/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("the HTTP client configuration is static and valid")
}

/// A failure the server reported: its message and code.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ServerError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    output: Output,
}

impl Api {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match &args.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(&args.token_file)
                .map(|t| t.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no admin token: set KNOWTON_ADMIN_TOKEN or --token, or point --token-file at the file `serve` wrote (tried {})",
                        args.token_file.display()
                    )
                })?,
        };
        Ok(Api {
            http: http_client(),
            base: args.server.trim_end_matches('/').to_owned(),
            token,
            output: args.output,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("failed to read the response")?;
        if !status.is_success() {
            return Err(server_error(status, &bytes).into());
        }
        serde_json::from_slice(&bytes).with_context(|| format!("unexpected response from {url}"))
    }

    fn json(&self) -> bool {
        self.output == Output::Json
    }
}

fn server_error(status: StatusCode, body: &[u8]) -> ServerError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ServerError {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| "http_error".into()),
        message: text("message").unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned()),
    }
}

fn path_segment(s: &str) -> anyhow::Result<&str> {
    if s.is_empty() || s.contains(['/', '?', '#', '%']) || s.chars().any(char::is_whitespace) {
        bail!("{s:?} is not a tenant id or slug");
    }
    Ok(s)
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("API values serialise")
    );
}
