//! Monitoring commands: check every tenant now, the daily report, the
//! cleanup of old monitoring data, and the coordinator replicas.

use reqwest::Method;
use serde_json::Value;

use super::{Api, path_segment, print_json};
use crate::cli::{CheckAllArgs, CleanupArgs, ClientArgs, ReportArgs};
use crate::replicas::ClusterView;

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

pub async fn cluster(args: ClientArgs) -> anyhow::Result<()> {
    let api = Api::new(&args)?;
    let view: ClusterView = api
        .call(Method::GET, "/api/v1/cluster", None::<&()>)
        .await?;
    if api.json() {
        print_json(&view);
        return Ok(());
    }
    match &view.leader {
        Some(leader) => println!("epoch {}, led by {leader}", view.epoch),
        None => println!("epoch {}, no leader", view.epoch),
    }
    for r in &view.replicas {
        println!(
            "{:<2}{:<32} {:<6} {:<28} grpc {:<22} heartbeat {}  agents {}",
            if r.leader { "*" } else { "" },
            r.id,
            if r.alive { "alive" } else { "silent" },
            r.http_url,
            r.grpc_addr.as_deref().unwrap_or("-"),
            r.last_heartbeat_at.format("%Y-%m-%dT%H:%M:%SZ"),
            if r.agents.is_empty() {
                "-".to_owned()
            } else {
                r.agents.join(",")
            },
        );
    }
    Ok(())
}
