//! Fail-over: coordinator replicas (release binaries, one PostgreSQL
//! schema), the agent binary streaming to all of them, simulated pods and
//! a webhook receiver. Each trial kills the leader with SIGKILL, starts a
//! fault on a tenant that was healthy (its database goes down) in the same
//! instant, and times the first notification of that fault, which only
//! the new leader can send; the killed replica is then started again.
//! Before the trials, with every replica idle, it counts the store's
//! transactions per second (leadership and heartbeats).
//!
//! ```sh
//! cargo build --release -p knowton-bench -p knowton-agent -p knowton-coordinator
//! target/release/knowton-bench-failover --trials 10
//! ```

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::State;
use clap::Parser;
use knowton_bench::coordinator::{AgentLaunch, BenchCoordinator, Launch, sibling_binary};
use knowton_bench::spread::Spread;
use knowton_coordinator::certs;
use knowton_coordinator::sim::{Behaviour, SimPod};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

const NODE: &str = "bench-node";

#[derive(Debug, Parser)]
#[command(name = "knowton-bench-failover", version)]
struct Args {
    /// The PostgreSQL database the replicas share (a schema of its own is
    /// created in it and dropped at the end).
    #[arg(
        long,
        env = "KNOWTON_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Kills of the leader, each with a fault of its own.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Coordinator replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// `--leader-lease-seconds` of every replica.
    #[arg(long, default_value_t = 10)]
    lease_seconds: u64,
    /// The agent's probe interval.
    #[arg(long, default_value = "1s", value_parser = knowton_agent::config::parse_duration)]
    interval: Duration,
    /// Seconds of idle replicas over which the store's transactions are counted.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    replicas: usize,
    lease_seconds: u64,
    interval_seconds: f64,
    /// Kill of the leader to the webhook's first notification of a fault
    /// that started at the kill, per trial.
    failover_ms: Vec<f64>,
    median_ms: f64,
    worst_ms: f64,
    /// Committed transactions per second in the database while the
    /// replicas were idle (no tenant, no agent).
    idle_store_transactions_per_second: f64,
    target_worst_ms: f64,
    pass: bool,
}

/// Firing notifications of a database fault as they arrived: (tenant, when).
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

async fn receive(State(arrivals): State<Arrivals>, body: axum::body::Bytes) -> &'static str {
    let at = Instant::now();
    if let Ok(payload) = serde_json::from_slice::<Value>(&body)
        && payload["status"] == "firing"
        && payload["commonLabels"]["alertname"] == "database"
    {
        let tenant = payload["commonLabels"]["tenant"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tenant, at));
    }
    "ok"
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = knowton_bench::runtime(2, "bench").and_then(|rt| rt.block_on(run(&args)));
    knowton_bench::conclude(result, args.json, print_text, |r| r.pass)
}

fn print_text(r: &Report) {
    println!(
        "fail-over     {} replicas, lease {} s, probes every {:.1} s, {} trials",
        r.replicas,
        r.lease_seconds,
        r.interval_seconds,
        r.failover_ms.len()
    );
    let trials: Vec<String> = r.failover_ms.iter().map(|ms| format!("{ms:.0}")).collect();
    println!("trials ms     {}", trials.join(" "));
    println!(
        "kill to first notification by the new leader: median {:.0} ms, worst {:.0} ms",
        r.median_ms, r.worst_ms
    );
    println!(
        "store load    {:.2} transactions/s with {} idle replicas",
        r.idle_store_transactions_per_second, r.replicas
    );
    println!(
        "target        worst <= lease + 2 s = {:.0} ms: {}",
        r.target_worst_ms,
        if r.pass { "PASS" } else { "FAIL" }
    );
}

async fn get(http: &reqwest::Client, token: &str, url: String, slug: Option<&str>) -> Value {
    let mut request = http.get(url).bearer_auth(token);
    if let Some(slug) = slug {
        request = request.header("X-Tenant-Slug", slug);
    }
    match request.send().await {
        Ok(reply) => reply.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Polls `check` every 20 ms until it holds, for at most `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.replicas >= 2, "--replicas must be at least 2");
    anyhow::ensure!(
        (1..=200).contains(&args.trials),
        "--trials must be 1 to 200"
    );
    let arrivals: Arrivals = Arc::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", receiver.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await });
    // The database's own statistics, whatever the schema.
    let admin = sqlx::PgPool::connect(&args.postgres_url)
        .await
        .context("failed to connect to --postgres-url")?;
    let launch = Launch::Replicas {
        binary: sibling_binary("knowton-coordinator")?,
        count: args.replicas,
        database_url: args.postgres_url.clone(),
    };
    let mut kt = BenchCoordinator::start_with_env(
        &launch,
        &[
            (
                "KNOWTON_LEADER_LEASE_SECONDS",
                args.lease_seconds.to_string(),
            ),
            ("KNOWTON_NOTIFY_WEBHOOK", hook),
            ("KNOWTON_HEALTH_SWEEP_SECONDS", "1".to_owned()),
        ],
    )
    .await?;
    let result = match certs::agent(&kt.tls_dir, NODE) {
        Ok(_) => bench(args, &mut kt, &admin, &arrivals).await,
        Err(err) => Err(err.into()),
    };
    admin.close().await;
    kt.stop_after(result, 10).await
}

async fn bench(
    args: &Args,
    kt: &mut BenchCoordinator,
    admin: &sqlx::PgPool,
    arrivals: &Arrivals,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let token = kt.admin_token().to_owned();

    // The store's load from idle replicas.
    let commits = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(admin)
        .await
    };
    let (before, started) = (commits().await?, Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_rate = (commits().await? - before) as f64 / started.elapsed().as_secs_f64();

    // A tenant per trial, each with a pod of its own, probed by one agent
    // streaming to every replica.
    let base0 = kt.api_url(0);
    let mut pods = Vec::new();
    let mut targets = String::new();
    for trial in 0..args.trials {
        let slug = format!("failover-{trial}");
        let reply = http
            .post(format!("{base0}/api/v1/tenants"))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "name": format!("Failover {trial}"),
                "slug": slug,
                "plan": "professional",
                "adminEmail": format!("admin@{slug}.example.com"),
                "domain": format!("{slug}.example.com"),
            }))
            .send()
            .await?;
        anyhow::ensure!(
            reply.status() == 201,
            "provisioning answered {}",
            reply.status()
        );
        let pod = SimPod::try_start(Ipv4Addr::new(127, 0, 2, 10 + trial as u8), 0)?;
        targets.push_str(&format!(
            "- {{tenant: {slug}, pod: {slug}-web-0, url: '{}'}}\n",
            pod.url()
        ));
        pods.push(pod);
    }
    let targets_file = kt.dir().join("targets.yaml");
    std::fs::write(&targets_file, targets)?;
    let coordinators: Vec<String> = kt
        .grpc_addrs()
        .iter()
        .map(|addr| format!("https://{addr}"))
        .collect();
    let agent_bin = sibling_binary("knowton-agent")?;
    let log = kt.dir().join("agent.log");
    let mut agent = AgentLaunch {
        binary: &agent_bin,
        node: NODE,
        targets: &targets_file,
        interval: args.interval,
        coordinators: coordinators.join(","),
        log: &log,
    }
    .spawn(kt)?;
    for replica in 0..kt.replicas() {
        let base = kt.api_url(replica);
        let healthy = until(
            Duration::from_secs(60),
            "every tenant healthy on every replica",
            || async {
                for trial in 0..args.trials {
                    let slug = format!("failover-{trial}");
                    let url = format!("{base}/api/v1/monitoring/health");
                    if get(&http, &token, url, Some(&slug)).await["status"] != "healthy" {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        if let Err(err) = healthy {
            let url = format!("{base}/api/v1/monitoring/health");
            let seen = get(&http, &token, url, Some("failover-0")).await;
            let agent_log = std::fs::read_to_string(kt.dir().join("agent.log")).unwrap_or_default();
            let tail: Vec<&str> = agent_log.lines().rev().take(5).collect();
            bail!(
                "{err}: {} has failover-0 at {seen}; agent log ends {tail:?}",
                kt.replica_name(replica)
            );
        }
    }

    let mut failover_ms = Vec::new();
    for (trial, pod) in pods.iter().enumerate() {
        let cluster = get(&http, &token, format!("{base0}/api/v1/cluster"), None).await;
        let leader = cluster["leader"].as_str().unwrap_or_default().to_owned();
        let Some(index) =
            (0..kt.replicas()).find(|&i| leader.starts_with(&format!("{}#", kt.replica_name(i))))
        else {
            bail!("no leader in {cluster}");
        };
        let slug = format!("failover-{trial}");
        let killed_at = Instant::now();
        kt.kill(index)?;
        pod.set(Behaviour::DatabaseDown).await;
        let arrived = || {
            arrivals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(tenant, _)| *tenant == slug)
                .map(|(_, at)| *at)
        };
        let limit = Duration::from_secs(args.lease_seconds * 3 + 30);
        until(limit, "the new leader's notification", || async {
            arrived().is_some()
        })
        .await?;
        let at = arrived().context("arrival")?;
        failover_ms.push((at - killed_at).as_secs_f64() * 1000.0);

        // The killed replica comes back and catches up before the next trial.
        kt.restart(index).await?;
        let base = kt.api_url(index);
        until(
            Duration::from_secs(60),
            "the restarted replica's agent",
            || async {
                let agents = get(&http, &token, format!("{base}/api/v1/agents"), None).await;
                agents["agents"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["connected"] == true))
            },
        )
        .await?;
        // Its first full read of the leader's alerts is a sweep away.
        let others = trial + 1;
        until(
            Duration::from_secs(60),
            "the restarted replica's view",
            || async {
                let alerts = get(
                    &http,
                    &token,
                    format!("{base}/api/v1/monitoring/alerts?resolved=false&limit=200"),
                    None,
                )
                .await;
                alerts["alerts"]
                    .as_array()
                    .is_some_and(|a| a.len() >= others)
            },
        )
        .await?;
    }
    let _ = agent.kill();
    let _ = agent.wait();

    let spread = Spread::of(&failover_ms).context("no trial")?;
    let (median_ms, worst_ms) = (spread.median, spread.max);
    let target_worst_ms = (args.lease_seconds * 1000 + 2000) as f64;
    Ok(Report {
        replicas: args.replicas,
        lease_seconds: args.lease_seconds,
        interval_seconds: args.interval.as_secs_f64(),
        failover_ms,
        median_ms,
        worst_ms,
        idle_store_transactions_per_second: idle_rate,
        target_worst_ms,
        pass: worst_ms <= target_worst_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
