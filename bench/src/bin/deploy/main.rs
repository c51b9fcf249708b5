//! `knowton-bench-deploy`: the cost of a tenant's deployment.
//!
//! 1. Render and client dry-run (the YAML stream) of many tenants: time per
//!    tenant (target: under 1 ms).
//! 2. A full apply of one tenant (server-side apply of every object, then
//!    the prune listing) against the in-process FAKE Kubernetes API server,
//!    over HTTP on loopback: requests made and time; then the same apply
//!    again (nothing changes), a server dry-run and a drift check.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use knowton_common::{Branding, Plan};
use knowton_coordinator::deploy::{
    Cluster, ClusterSettings, TenantSecrets, TenantSpec, render, to_yaml,
};
use knowton_tests::fake_kube::FakeKube;
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "knowton-bench-deploy", version)]
struct Args {
    /// Tenants rendered per round.
    #[arg(long, default_value_t = 1_000)]
    tenants: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Tenants applied one after the other against the fake API server.
    #[arg(long, default_value_t = 20)]
    applies: usize,
}

fn spec(i: usize) -> TenantSpec {
    let plan = [Plan::Basic, Plan::Professional, Plan::Enterprise][i % 3];
    let slug = format!("tenant-{i:05}");
    TenantSpec {
        id: Uuid::new_v4(),
        domain: format!("{slug}.knowton.example.com"),
        features: plan.features(),
        branding: Branding::default_for(&slug),
        allowlist: if i.is_multiple_of(2) {
            vec!["203.0.113.0/24".to_owned()]
        } else {
            Vec::new()
        },
        stopped: false,
        min_replicas: None,
        slug,
        plan,
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Apply,
    DryRun,
    Drift,
}

fn secrets() -> TenantSecrets {
    TenantSecrets {
        database_password: "p".repeat(32),
        jwt_secret: "j".repeat(64),
    }
}

fn per_tenant(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / n as f64
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cluster_settings = ClusterSettings::default();
    let specs: Vec<TenantSpec> = (0..args.tenants).map(spec).collect();
    let secrets = secrets();

    let mut rounds = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.rounds {
        let started = Instant::now();
        bytes = 0;
        for spec in &specs {
            let objects = render(spec, &secrets, &cluster_settings);
            bytes += to_yaml(&objects).len();
        }
        rounds.push(per_tenant(started.elapsed(), specs.len()));
    }
    rounds.sort_by(f64::total_cmp);
    let median = rounds[rounds.len() / 2];
    println!(
        "render + client dry-run: {} tenants x {} rounds: median {:.1} us/tenant, best {:.1}, worst {:.1} ({} KiB of YAML per round) - target < 1000 us: {}",
        args.tenants,
        args.rounds,
        median,
        rounds[0],
        rounds[rounds.len() - 1],
        bytes / 1024,
        if median < 1000.0 { "PASS" } else { "FAIL" }
    );

    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("kubeconfig written");
    knowton_coordinator::client::install_crypto_provider();
    let cluster = match Cluster::connect(Some(&kubeconfig)).await {
        Ok(Some(cluster)) => cluster,
        other => {
            eprintln!("cannot reach the fake API server: {other:?}");
            return ExitCode::FAILURE;
        }
    };

    let objects: Vec<(String, Vec<serde_json::Value>)> = specs
        .iter()
        .take(args.applies)
        .map(|s| (s.slug.clone(), render(s, &secrets, &cluster_settings)))
        .collect();
    for (what, step) in [
        (
            "first apply (14 objects created, prune listing)",
            Step::Apply,
        ),
        ("second apply (nothing changes)", Step::Apply),
        ("server dry-run (per-object diff)", Step::DryRun),
        ("drift check (read and compare every object)", Step::Drift),
    ] {
        let requests_before = fake.requests().len();
        let started = Instant::now();
        for (slug, objects) in &objects {
            let done = match step {
                Step::Apply => cluster.apply(slug, objects).await.map(drop),
                Step::DryRun => cluster.dry_run(slug, objects).await.map(drop),
                Step::Drift => cluster.drifted(objects).await.map(drop),
            };
            if let Err(err) = done {
                eprintln!("{what} of {slug} failed: {err}");
                return ExitCode::FAILURE;
            }
        }
        let n = objects.len() as f64;
        println!(
            "{what}: {:.2} ms and {} requests per tenant (mean of {n})",
            started.elapsed().as_secs_f64() * 1e3 / n,
            (fake.requests().len() - requests_before) as f64 / n
        );
    }
    ExitCode::SUCCESS
}
