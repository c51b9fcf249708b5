//! The operator commands: clients of a running coordinator's REST API that
//! print readable text (or JSON with `--output json`) and exit non-zero
//! with the server's message on failure.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use knowton_common::units::format_bytes;
use knowton_common::{Feature, FeatureOverrides};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::views::{
    DeprovisionResponse, ProvisionResponse, RotatedKey, TenantPage, TenantView,
};
use crate::cli::{
    CheckAllArgs, CleanupArgs, ClientArgs, DeprovisionArgs, GetArgs, ListArgs, Output,
    ProvisionArgs, ReportArgs, RotateKeyArgs, SetPlanArgs,
};
use crate::provision::{BrandingPatch, ProvisionRequest, UpdateRequest};

/// Installs the process-wide rustls crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for the coordinator's API.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
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

pub async fn provision(args: ProvisionArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let mut features = FeatureOverrides::default();
    for feature in &args.disable {
        features.set(*feature, false);
    }
    let branding = BrandingPatch {
        company_name: args.company_name,
        primary_color: args.primary_color,
        secondary_color: args.secondary_color,
        logo_url: args.logo_url,
    };
    let request = ProvisionRequest {
        name: args.name,
        slug: args.slug,
        plan: args.plan,
        admin_email: args.admin_email,
        domain: args.domain,
        features: (!args.disable.is_empty()).then_some(features),
        branding: Some(branding),
    };
    let done: ProvisionResponse = api
        .call(Method::POST, "/api/v1/tenants", Some(&request))
        .await?;
    if api.json() {
        print_json(&done);
        return Ok(());
    }
    let mut out = describe(&done.tenant);
    let _ = writeln!(
        out,
        "\nAdmin user\n  email:               {}\n  temporary password:  {}  (must be changed at first login)\n\
         \nAPI keys (shown only now: store them in your secret manager)\n  production:   {}\n  development:  {}",
        done.admin.email,
        done.admin.temporary_password,
        done.api_keys.production,
        done.api_keys.development
    );
    println!("Provisioned tenant {}\n\n{out}", done.tenant.slug);
    Ok(())
}

pub async fn deprovision(args: DeprovisionArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/tenants/{}{}",
        path_segment(&args.tenant)?,
        if args.purge { "?purge=true" } else { "" }
    );
    let done: DeprovisionResponse = api.call(Method::DELETE, &path, None::<&()>).await?;
    if api.json() {
        print_json(&done);
    } else if let Some(tenant) = &done.tenant {
        println!(
            "Deprovisioned tenant {} ({}): API keys revoked, data kept until {}",
            tenant.slug,
            tenant.id,
            tenant
                .retain_until
                .map_or_else(|| "further notice".into(), |t| t.to_rfc3339())
        );
    } else {
        println!("Purged tenant {}: all of its data was deleted", done.id);
    }
    Ok(())
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let mut tenants = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/tenants?limit=200".to_owned();
        if let Some(status) = &args.status {
            let _ = write!(path, "&status={}", path_segment(status)?);
        }
        if let Some(c) = &cursor {
            let _ = write!(path, "&cursor={c}");
        }
        let page: TenantPage = api.call(Method::GET, &path, None::<&()>).await?;
        tenants.extend(page.tenants);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if api.json() {
        print_json(&tenants);
        return Ok(());
    }
    println!(
        "{:<24} {:<13} {:<14} {:<36} DOMAIN",
        "SLUG", "PLAN", "STATUS", "ID"
    );
    for t in &tenants {
        println!(
            "{:<24} {:<13} {:<14} {:<36} {}",
            t.slug, t.plan, t.status, t.id, t.domain
        );
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!("/api/v1/tenants/{}", path_segment(&args.tenant)?);
    let tenant: TenantView = api.call(Method::GET, &path, None::<&()>).await?;
    if api.json() {
        print_json(&tenant);
    } else {
        print!("{}", describe(&tenant));
    }
    Ok(())
}

pub async fn set_plan(args: SetPlanArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/tenants/{}{}",
        path_segment(&args.tenant)?,
        if args.force { "?force=true" } else { "" }
    );
    let request = UpdateRequest {
        plan: Some(args.plan),
        ..Default::default()
    };
    let tenant: TenantView = api.call(Method::PUT, &path, Some(&request)).await?;
    if api.json() {
        print_json(&tenant);
    } else {
        println!(
            "Tenant {} is now on the {} plan (configuration version {})",
            tenant.slug, tenant.plan, tenant.config_version
        );
    }
    Ok(())
}

pub async fn rotate_key(args: RotateKeyArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/tenants/{}/api-keys/{}/rotate",
        path_segment(&args.tenant)?,
        args.kind.as_str()
    );
    let key: RotatedKey = api.call(Method::POST, &path, None::<&()>).await?;
    if api.json() {
        print_json(&key);
    } else {
        println!(
            "New {} key (shown only now; the old key no longer works):\n  {}",
            key.kind.as_str(),
            key.api_key
        );
    }
    Ok(())
}

pub async fn check_all(args: CheckAllArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/monitoring/check-all?timeoutSeconds={}",
        args.timeout_seconds
    );
    let view: Value = api.call(Method::POST, &path, None::<&()>).await?;
    if api.json() {
        print_json(&view);
        return Ok(());
    }
    let agents = |k: &str| view[k].as_u64().unwrap_or(0);
    println!(
        "{} of {} agents answered{}",
        agents("agentsAnswered"),
        agents("agents"),
        if view["timedOut"] == true {
            " (timed out waiting for the rest)"
        } else {
            ""
        }
    );
    for t in view["tenants"].as_array().into_iter().flatten() {
        let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
        let problems: Vec<&str> = t["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<24} {:<9} {}/{} pods up  {}",
            s("tenant"),
            s("status"),
            t["podsUp"],
            t["pods"],
            problems.join("; ")
        );
    }
    Ok(())
}

pub async fn report_daily(args: ReportArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let view: Value = if args.email {
        let sent: Value = api
            .call(
                Method::POST,
                "/api/v1/monitoring/report/send?hours=24",
                None::<&()>,
            )
            .await?;
        eprintln!("e-mailed to {} operator addresses", sent["emailed"]);
        sent["report"].clone()
    } else {
        api.call(
            Method::GET,
            "/api/v1/monitoring/report?hours=24",
            None::<&()>,
        )
        .await?
    };
    if api.json() {
        print_json(&view);
        return Ok(());
    }
    println!(
        "Tenant health from {} to {}",
        view["from"].as_str().unwrap_or_default(),
        view["to"].as_str().unwrap_or_default()
    );
    println!(
        "{:<24} {:<9} {:>12} {:>9} {:>13} {:>7}",
        "TENANT", "STATUS", "AVAILABILITY", "P95 MS", "ALERTS OPENED", "OPEN"
    );
    for t in view["tenants"].as_array().into_iter().flatten() {
        let availability = t["availability"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |a| format!("{:.3}%", a * 100.0));
        let p95 = t["latencyP95Ms"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        println!(
            "{:<24} {:<9} {:>12} {:>9} {:>13} {:>7}",
            t["tenant"].as_str().unwrap_or_default(),
            t["status"].as_str().unwrap_or_default(),
            availability,
            p95,
            t["alertsOpened"],
            t["alertsOpen"]
        );
    }
    Ok(())
}

pub async fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let path = format!(
        "/api/v1/monitoring/cleanup?olderThan={}",
        path_segment(&args.older_than)?
    );
    let view: Value = api.call(Method::POST, &path, None::<&()>).await?;
    if api.json() {
        print_json(&view);
    } else {
        let d = &view["deleted"];
        println!(
            "Deleted data older than {}: {} history minutes, {} resolved alerts, {} delivered notifications, {} ended silences",
            view["before"].as_str().unwrap_or_default(),
            d["rollups"],
            d["resolvedAlerts"],
            d["deliveredNotifications"],
            d["endedSilences"]
        );
    }
    Ok(())
}

fn describe(t: &TenantView) -> String {
    let features: Vec<&str> = Feature::ALL
        .into_iter()
        .filter(|f| {
            let flags = serde_json::to_value(t.features).unwrap_or_default();
            flags
                .get(f.flag())
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(Feature::short_name)
        .collect();
    let keys: Vec<String> = t
        .api_keys
        .iter()
        .map(|k| format!("{} {}…", k.kind.as_str(), k.display_prefix))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", t.name, t.slug);
    let _ = writeln!(out, "  id:          {}", t.id);
    let _ = writeln!(out, "  plan:        {}", t.plan);
    let _ = writeln!(out, "  status:      {}", t.status);
    if let Some(until) = t.retain_until {
        let _ = writeln!(out, "  data kept:   until {}", until.to_rfc3339());
    }
    let _ = writeln!(out, "  domain:      https://{}", t.domain);
    let _ = writeln!(out, "  admin:       {}", t.admin_email);
    let _ = writeln!(
        out,
        "  features:    {}",
        if features.is_empty() {
            "none".into()
        } else {
            features.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  branding:    {} {} / {}",
        t.branding.company_name, t.branding.primary_color, t.branding.secondary_color
    );
    let _ = writeln!(
        out,
        "  usage:       {} / {} users, {} / {} storage",
        t.usage.users,
        t.limits.max_users,
        format_bytes(t.usage.storage_bytes),
        format_bytes(t.limits.storage_bytes)
    );
    let _ = writeln!(
        out,
        "  api keys:    {}",
        if keys.is_empty() {
            "none (revoked)".into()
        } else {
            keys.join(", ")
        }
    );
    let _ = writeln!(out, "  created:     {}", t.created_at.to_rfc3339());
    let _ = writeln!(out, "  config:      version {}", t.config_version);
    out
}

/// `deploy`: a client dry-run renders here; a server dry-run or a
/// deployment asks the coordinator, after checking that the tenant it
/// holds is the one the flags describe.
pub async fn deploy(args: crate::deploy::cli::DeployArgs) -> anyhow::Result<()> {
    use crate::deploy::cli::DryRun;
    if args.dry_run == Some(DryRun::Client) {
        return crate::deploy::cli::print_rendered(&args);
    }
    crate::deploy::cli::check(&args)?;
    let api = Api::new(&args.client)?;
    let id = args.id;
    let tenant: TenantView = api
        .call(Method::GET, &format!("/api/v1/tenants/{id}"), None::<&()>)
        .await?;
    let mismatches: Vec<String> = [
        ("slug", tenant.slug.clone(), args.slug.clone()),
        ("plan", tenant.plan.to_string(), args.plan.to_string()),
        (
            "domain",
            tenant.domain.clone(),
            args.domain.to_ascii_lowercase(),
        ),
    ]
    .into_iter()
    .filter(|(_, held, given)| held != given)
    .map(|(field, held, given)| format!("{field} is {held}, not {given}"))
    .collect();
    if !mismatches.is_empty() {
        bail!(
            "tenant {id} in the coordinator does not match the flags ({}): change the tenant first (set-plan, PUT /api/v1/tenants/{id})",
            mismatches.join(", ")
        );
    }
    if args.dry_run == Some(DryRun::Server) {
        let view: Value = api
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{id}/deploy?dryRun=server"),
                None::<&()>,
            )
            .await?;
        if api.json() {
            print_json(&view);
        } else {
            print!("{}", planned_changes_text(&view));
        }
        return Ok(());
    }
    let current: Value = api
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{id}/deployment"),
            None::<&()>,
        )
        .await?;
    let held: Vec<&str> = current["allowlist"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut view: Value = if held != args.allowlist {
        api.call(
            Method::PUT,
            &format!("/api/v1/tenants/{id}/deployment"),
            Some(&serde_json::json!({"allowlist": args.allowlist})),
        )
        .await?
    } else {
        api.call(
            Method::POST,
            &format!("/api/v1/tenants/{id}/deploy"),
            None::<&()>,
        )
        .await?
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(args.wait_seconds);
    let mut shown = String::new();
    loop {
        let phase = view["phase"].as_str().unwrap_or("unknown").to_owned();
        if phase != shown && !api.json() {
            println!(
                "{phase:<10} {}",
                view["reason"].as_str().unwrap_or_default()
            );
            shown = phase.clone();
        }
        let settled = matches!(phase.as_str(), "ready" | "failed" | "skipped");
        if settled || args.wait_seconds == 0 || tokio::time::Instant::now() >= deadline {
            if api.json() {
                print_json(&view);
            }
            if phase == "failed" {
                bail!(
                    "deployment of {} failed: {}",
                    args.slug,
                    view["reason"].as_str().unwrap_or("no reason")
                );
            }
            if !settled && args.wait_seconds > 0 {
                bail!(
                    "deployment of {} still {phase} after {}s",
                    args.slug,
                    args.wait_seconds
                );
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        view = api
            .call(
                Method::GET,
                &format!("/api/v1/tenants/{id}/deployment"),
                None::<&()>,
            )
            .await?;
    }
}

/// A server dry-run as text: one line per object, the changed fields
/// under it.
pub fn planned_changes_text(view: &Value) -> String {
    let mut out = String::new();
    for change in view["changes"].as_array().into_iter().flatten() {
        let s = |k: &str| change[k].as_str().unwrap_or_default();
        let object = match change["namespace"].as_str() {
            Some(ns) => format!("{} {ns}/{}", s("kind"), s("name")),
            None => format!("{} {}", s("kind"), s("name")),
        };
        let _ = write!(out, "{:<10} {object}", s("action"));
        if let Some(note) = change["note"].as_str() {
            let _ = write!(out, "  ({note})");
        }
        out.push('\n');
        for field in change["fields"].as_array().into_iter().flatten() {
            let value = |k: &str| match &field[k] {
                Value::Null => "(none)".to_owned(),
                v => v.to_string(),
            };
            let _ = writeln!(
                out,
                "           {}: {} -> {}",
                field["path"].as_str().unwrap_or_default(),
                value("before"),
                value("after")
            );
        }
    }
    out
}
