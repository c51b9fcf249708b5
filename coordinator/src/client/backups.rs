//! `backups list|run`, `restore`, `verify`: a tenant's backups through the
//! coordinator's REST API.

use std::time::Duration;

use anyhow::bail;
use chrono::{NaiveTime, TimeZone, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Api, path_segment, print_json};
use crate::cli::{BackupRunArgs, RestoreArgs, TenantArgs, VerifyArgs};

/// How often `backups run` looks at its runs.
const POLL: Duration = Duration::from_millis(500);

pub async fn list(args: TenantArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let tenant = path_segment(&args.tenant)?;
    let view: Value = api
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/backups?limit=200"),
            None::<&()>,
        )
        .await?;
    if api.json() {
        print_json(&view);
        return Ok(());
    }
    let backups = view["backups"].as_array().cloned().unwrap_or_default();
    if backups.is_empty() {
        println!(
            "no backups of {}",
            view["tenant"].as_str().unwrap_or(tenant)
        );
    }
    for b in &backups {
        if let Some(version) = b["version"].as_i64() {
            println!(
                "{}  {:<13}  taken {}  version {version}",
                text(&b["id"]),
                text(&b["kind"]),
                text(&b["takenAt"]),
            );
            continue;
        }
        println!(
            "{}  {:<13}  taken {}  {:>12}  (+{} written, {} new chunks)",
            text(&b["id"]),
            text(&b["kind"]),
            text(&b["takenAt"]),
            bytes(&b["size"]),
            bytes(&b["bytesWritten"]),
            b["newChunks"]
        );
    }
    let runs = view["runs"].as_array().cloned().unwrap_or_default();
    if !runs.is_empty() {
        println!("\nlatest runs:");
    }
    for run in &runs {
        println!(
            "{}  {:<8}  {:<9}  started {}  by {}{}",
            text(&run["id"]),
            text(&run["kind"]),
            text(&run["status"]),
            text(&run["startedAt"]),
            text(&run["actor"]),
            run["error"]
                .as_str()
                .map(|e| format!("\n    {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn run(args: BackupRunArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let tenant = path_segment(&args.tenant)?;
    let kinds = match &args.kind {
        Some(kind) => vec![kind.as_str()],
        None => vec!["database", "storage"],
    };
    let mut failed = Vec::new();
    let mut finished = Vec::new();
    for kind in kinds {
        let started: Value = api
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/backups"),
                Some(&json!({ "kind": kind })),
            )
            .await?;
        let id = text(&started["id"]);
        if !api.json() {
            println!("{kind} backup {id} started");
        }
        let run = loop {
            let view: Value = api
                .call(
                    Method::GET,
                    &format!("/api/v1/tenants/{tenant}/backups?limit=1"),
                    None::<&()>,
                )
                .await?;
            let run = view["runs"]
                .as_array()
                .and_then(|runs| runs.iter().find(|r| text(&r["id"]) == id))
                .cloned()
                .unwrap_or(Value::Null);
            match run["status"].as_str() {
                Some("running") | None => {
                    if !api.json() && run["bytesRead"].as_u64().is_some_and(|b| b > 0) {
                        eprint!("\r  {} read", bytes(&run["bytesRead"]));
                    }
                    tokio::time::sleep(POLL).await;
                }
                Some(_) => break run,
            }
        };
        if api.json() {
            finished.push(run.clone());
        } else if run["status"] == "succeeded" {
            println!(
                "\r{kind} backup {} done: {} read, {} written, {} new chunks",
                text(&run["backupId"]),
                bytes(&run["bytesRead"]),
                bytes(&run["bytesWritten"]),
                run["newChunks"]
            );
        } else {
            println!("\r{kind} backup failed: {}", text(&run["error"]));
        }
        if run["status"] != "succeeded" {
            failed.push(kind);
        }
    }
    if api.json() {
        print_json(&finished);
    }
    if !failed.is_empty() {
        bail!("backup failed: {}", failed.join(", "));
    }
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let tenant = path_segment(&args.tenant)?;
    let time = args
        .time
        .unwrap_or_else(|| NaiveTime::from_hms_milli_opt(23, 59, 59, 999).expect("a valid time"));
    let at = Utc.from_utc_datetime(&args.date.and_time(time));
    let body = json!({
        "at": at,
        "only": args.only,
        "into": args.into,
        "dryRun": args.dry_run,
    });
    if !api.json() && !args.dry_run {
        eprintln!("restoring {tenant} as it was at {at} (a safety backup first)…");
    }
    let view: Value = api
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/restore"),
            Some(&body),
        )
        .await?;
    if args.dry_run {
        if api.json() {
            print_json(&view);
        } else {
            print_parts(
                "would restore",
                &view["parts"],
                &view["from"],
                &view["into"],
            );
            for left in view["unchanged"].as_array().cloned().unwrap_or_default() {
                println!(
                    "would leave {} of {} as it is: {}",
                    text(&left["kind"]),
                    text(&view["into"]),
                    text(&left["reason"])
                );
            }
        }
        return Ok(());
    }
    // A job: polled until it ends, its progress shown as it goes.
    let job_path = format!(
        "/api/v1/tenants/{}/restores/{}",
        path_segment(args.into.as_deref().unwrap_or(&args.tenant))?,
        text(&view["id"])
    );
    let started = tokio::time::Instant::now();
    let mut shown = String::new();
    let job = loop {
        let job: Value = api.call(Method::GET, &job_path, None::<&()>).await?;
        if job["status"] != "running" {
            break job;
        }
        if !api.json() {
            let line = progress_line(&job, started.elapsed());
            if line != shown {
                eprintln!("{line}");
                shown = line;
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    if api.json() {
        print_json(&job);
    } else {
        print_parts("restored", &job["parts"], &job["source"], &json!(tenant));
    }
    if job["status"] != "succeeded" {
        bail!(
            "restore {} failed ({}): {}",
            text(&job["id"]),
            text(&job["errorCode"]),
            text(&job["error"])
        );
    }
    Ok(())
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let tenant = path_segment(&args.tenant)?;
    let mut query = vec![];
    if let Some(b) = args.backup {
        query.push(format!("backup={b}"));
    }
    if args.deep {
        query.push("deep=true".to_owned());
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let view: Value = api
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/backups/verify{query}"),
            None::<&()>,
        )
        .await?;
    if api.json() {
        print_json(&view);
    } else {
        for problem in view["unreadable"].as_array().cloned().unwrap_or_default() {
            println!("UNREADABLE  {}", text(&problem));
        }
        for b in view["backups"].as_array().cloned().unwrap_or_default() {
            let backup = &b["backup"];
            println!(
                "{}  {:<8}  taken {}  {}{}",
                text(&backup["id"]),
                text(&backup["kind"]),
                text(&backup["takenAt"]),
                if b["ok"] == true { "ok" } else { "DAMAGED" },
                if b["deep"] == true {
                    " (restored and compared)"
                } else {
                    ""
                }
            );
            let shown = b["problems"].as_array().cloned().unwrap_or_default();
            for problem in &shown {
                println!("    {}", text(problem));
            }
            let total = b["problemsTotal"].as_u64().unwrap_or_default();
            if total > shown.len() as u64 {
                println!("    … and {} more", total - shown.len() as u64);
            }
        }
    }
    if view["ok"] != true {
        bail!("some backups of {tenant} cannot be restored");
    }
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn bytes(value: &Value) -> String {
    value
        .as_u64()
        .map(knowton_common::units::format_bytes)
        .unwrap_or_else(|| "-".to_owned())
}

/// How often a restore job is polled.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// "restoring the database: 120 MiB of 300 MiB (40%), about 2 min left".
fn progress_line(job: &Value, elapsed: std::time::Duration) -> String {
    let done = job["bytesDone"].as_u64().unwrap_or(0);
    let total = job["bytesTotal"].as_u64().unwrap_or(0);
    let phase = text(&job["phase"]);
    if total == 0 || done == 0 {
        return format!("{phase}…");
    }
    let left = remaining(done, total, elapsed)
        .map(|secs| {
            format!(
                ", about {} left",
                knowton_common::units::format_duration_secs(secs)
            )
        })
        .unwrap_or_default();
    format!(
        "{phase}: {} of {} ({}%){left}",
        knowton_common::units::format_bytes(done),
        knowton_common::units::format_bytes(total),
        done * 100 / total
    )
}

/// Seconds left at the rate so far.
fn remaining(done: u64, total: u64, elapsed: std::time::Duration) -> Option<u64> {
    let rate = done as f64 / elapsed.as_secs_f64();
    (rate > 0.0 && done < total).then(|| ((total - done) as f64 / rate).ceil() as u64)
}

fn print_parts(verb: &str, parts: &Value, from: &Value, into: &Value) {
    for part in parts.as_array().cloned().unwrap_or_default() {
        println!(
            "{verb} {} of {} into {}: backup {} taken {}, {}{}",
            text(&part["kind"]),
            text(from),
            text(into),
            text(&part["backupId"]),
            text(&part["takenAt"]),
            match part["version"].as_i64() {
                Some(version) => format!("version {version}"),
                None => bytes(&part["size"]),
            },
            part["safetyBackupId"]
                .as_str()
                .map(|id| format!(" (the state before is backup {id})"))
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_the_rest_at_the_rate_so_far() {
        let ten = std::time::Duration::from_secs(10);
        assert_eq!(remaining(100, 400, ten), Some(30));
        assert_eq!(remaining(400, 400, ten), None, "done");
        assert_eq!(remaining(0, 400, ten), None, "no rate yet");
        let job =
            json!({"phase": "restoring the files", "bytesDone": 1048576, "bytesTotal": 4194304});
        assert_eq!(
            progress_line(&job, ten),
            "restoring the files: 1 MiB of 4 MiB (25%), about 30 s left"
        );
    }
}
