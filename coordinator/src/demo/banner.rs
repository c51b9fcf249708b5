//! The banner printed once the demo runs: where everything is, what to
//! try, and what will happen when.

use std::net::SocketAddr;
use std::time::Duration;

use super::scenario::{DEGRADING, SLOW};
use super::{Demo, DemoArgs};
use crate::config::ADMIN_TOKEN_FILE;

/// Where everything is, what to try, and what will happen.
pub(super) async fn render(demo: &Demo, args: &DemoArgs) -> String {
    let api = demo.api_url();
    let webhook_log = demo.webhook_log();
    let token_file = demo.dir.join(ADMIN_TOKEN_FILE);
    let metrics = demo
        .coordinator
        .metrics_addr
        .map(|addr| format!("http://{addr}/metrics"));
    let mut b = String::from("\n");
    let mut row = |name: &str, value: String| b.push_str(&format!("  {name:<13} {value}\n"));
    row(
        "REST API",
        format!("{api}  (admin token in {})", token_file.display()),
    );
    if let Some(metrics) = metrics {
        row("metrics", metrics);
    }
    if args.agent_metrics_addr.port() != 0 {
        row(
            "agent",
            format!("http://{}/metrics  (/readyz)", args.agent_metrics_addr),
        );
    }
    row(
        "webhook log",
        format!(
            "{}  (every alert notification, Alertmanager v4 JSON, one per line)",
            webhook_log.display()
        ),
    );
    row(
        "database",
        format!("{}  (SQLite)", demo.dir.join("knowton.db").display()),
    );
    b.push_str("\n  Tenants and their simulated pods:\n");
    for t in &demo.tenants {
        let pods: Vec<String> = t
            .pods
            .iter()
            .map(|(name, url)| format!("{name} {url}"))
            .collect();
        b.push_str(&format!(
            "    {:<10} {:<13} {}\n",
            t.slug,
            t.plan.as_str(),
            pods.join(", ")
        ));
    }
    let server = if demo.coordinator.http_addr == SocketAddr::from(([127, 0, 0, 1], 8080)) {
        String::new()
    } else {
        format!(" --server {api}")
    };
    b.push_str(&format!(
        "\n  Try, in another terminal:\n    \
         curl -s -H \"Authorization: Bearer $(cat {token})\" -H 'X-Tenant-Slug: {slug}' {api}/api/v1/monitoring/health\n    \
         cargo run -q --release -p knowton-coordinator -- tenants list{server} --token-file {token}\n",
        token = token_file.display(),
        slug = DEGRADING,
    ));
    let at = |after: Duration| {
        (chrono::Local::now() + chrono::TimeDelta::from_std(after).unwrap_or_default())
            .format("%H:%M:%S")
            .to_string()
    };
    b.push_str(&format!(
        "\n  At {} {} slows down ({:.1} s per answer) and at {} it recovers: watch for ALERT lines.\n  Ctrl-C stops everything.\n",
        at(args.degrade_after),
        DEGRADING,
        SLOW.as_secs_f64(),
        at(args.degrade_after + args.recover_after),
    ));
    b
}
