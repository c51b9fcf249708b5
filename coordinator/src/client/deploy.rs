//! `deploy`: a client dry-run renders locally; a server dry-run or a
//! deployment goes through the coordinator, and its progress is followed.

use std::fmt::Write as _;

use anyhow::bail;
use reqwest::Method;
use serde_json::Value;

use super::{Api, print_json};
use crate::api::views::TenantView;
use crate::cli::deploy::{DeployArgs, DryRun, check, print_rendered};

/// `deploy`: a client dry-run renders here; a server dry-run or a
/// deployment asks the coordinator, after checking that the tenant it
/// holds is the one the flags describe.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    if args.dry_run == Some(DryRun::Client) {
        return print_rendered(&args);
    }
    check(&args)?;
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
