//! `knowton-bench-deploy`: the cost of a tenant's deployment.
//!
//! 1. Render and client dry-run (the YAML stream) of many tenants: time per
//!    tenant (target: under 1 ms).
//! 2. A full apply of one tenant (server-side apply of every object, then
//!    the prune listing) against the in-process FAKE Kubernetes API server,
//!    over HTTP on loopback: requests made and time; then the same apply
//!    again (nothing changes), a server dry-run and a drift check.
//! 3. The drift watch's cache of many applied tenants: objects held, their
//!    size as JSON against the same objects as served (managedFields
//!    included), the time to fill it and the process's RSS growth.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use knowton_bench::system::rss_bytes;
use knowton_common::{Branding, Plan};
use knowton_coordinator::deploy::render::MANAGED_BY;
use knowton_coordinator::deploy::watch::{LiveCache, watch_kind, watched};
use knowton_coordinator::deploy::{
    Cluster, ClusterSettings, TenantSecrets, TenantSpec, render, to_yaml,
};
use knowton_tests::fake_kube::FakeKube;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_stream::StreamExt;
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
    /// Tenants applied before the drift watch fills its cache (0: skip).
    #[arg(long, default_value_t = 10_000)]
    cached_tenants: usize,
    /// Internal: run as the fake API server of the watch cache step,
    /// writing its kubeconfig here.
    #[arg(long, hide = true)]
    serve_fake: Option<PathBuf>,
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
    if let Some(kubeconfig) = &args.serve_fake {
        return serve_fake(&args, kubeconfig).await;
    }
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
    knowton_coordinator::certs::install_crypto_provider();
    let Some(cluster) = connect(&kubeconfig).await else {
        return ExitCode::FAILURE;
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
    drop(fake);
    if args.cached_tenants > 0 {
        return watch_cache(&args).await;
    }
    ExitCode::SUCCESS
}

/// The coordinator's client of the fake API server at `kubeconfig`.
async fn connect(kubeconfig: &Path) -> Option<Cluster> {
    match Cluster::connect(Some(kubeconfig)).await {
        Ok(Some(cluster)) => Some(cluster),
        other => {
            eprintln!("cannot reach the fake API server: {other:?}");
            None
        }
    }
}

/// The drift watch's caches of every managed kind filled from a fake API
/// server holding `--cached-tenants` applied tenants, as when the
/// coordinator starts with a cluster. The fake runs in a child process so
/// that this process's RSS is the watch's alone.
async fn watch_cache(args: &Args) -> ExitCode {
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    let exe = std::env::current_exe().expect("this benchmark's path");
    let mut child = match tokio::process::Command::new(exe)
        .arg("--serve-fake")
        .arg(&kubeconfig)
        .arg("--cached-tenants")
        .arg(args.cached_tenants.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("cannot start the fake API server's process: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut served = 0usize;
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line == "ready" => break,
            Ok(Some(line)) => match line.strip_prefix("served-bytes ") {
                Some(bytes) => served = bytes.parse().unwrap_or(0),
                None => println!("{line}"),
            },
            _ => {
                eprintln!("the fake API server's process ended before it was ready");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(cluster) = connect(&kubeconfig).await else {
        return ExitCode::FAILURE;
    };

    let rss_before = rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let cache = Arc::new(LiveCache::default());
    for kind in watched() {
        let events = watch_kind(cluster.api_of(kind), kind, cache.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while events.next().await.is_some() {}
        });
    }
    cache.wait_until_ready().await;
    let filled = started.elapsed();
    let rss_after = rss_bytes().unwrap_or(0);
    let (objects, held) = cache.size();
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    let grown = usize::try_from(rss_after.saturating_sub(rss_before)).unwrap_or(usize::MAX);
    let tenants = args.cached_tenants;
    println!(
        "drift watch cache of {tenants} tenants: {objects} objects filled in {:.2} s \
         (the fake API server's paging included); {:.1} MiB held as compact JSON ({:.1} MiB \
         as served, with managedFields and status); RSS grew {:.1} MiB to {:.1} MiB ({:.1} KiB per tenant)",
        filled.as_secs_f64(),
        mib(held),
        mib(served),
        mib(grown),
        mib(usize::try_from(rss_after).unwrap_or(usize::MAX)),
        grown as f64 / 1024.0 / tenants as f64,
    );
    drop(child);
    ExitCode::SUCCESS
}

/// The child process of [`watch_cache`]: a fake API server with
/// `--cached-tenants` tenants applied through the coordinator's client,
/// serving until its standard input closes.
async fn serve_fake(args: &Args, kubeconfig: &Path) -> ExitCode {
    let fake = FakeKube::start().await;
    if let Err(err) = std::fs::write(kubeconfig, fake.kubeconfig()) {
        eprintln!("cannot write {}: {err}", kubeconfig.display());
        return ExitCode::FAILURE;
    }
    let Some(cluster) = connect(kubeconfig).await else {
        return ExitCode::FAILURE;
    };
    let (secrets, settings) = (secrets(), ClusterSettings::default());
    let started = Instant::now();
    for i in 0..args.cached_tenants {
        let spec = spec(i);
        if let Err(err) = cluster
            .apply(&spec.slug, &render(&spec, &secrets, &settings))
            .await
        {
            eprintln!("apply of {} failed: {err}", spec.slug);
            return ExitCode::FAILURE;
        }
    }
    println!(
        "{} tenants applied in {:.1} s",
        args.cached_tenants,
        started.elapsed().as_secs_f64()
    );
    let served: usize = watched()
        .flat_map(|kind| fake.objects(&kind.api_version(), kind.kind, None))
        .filter(|o| o["metadata"]["labels"][MANAGED_BY.0] == MANAGED_BY.1)
        .map(|o| serde_json::to_vec(&o).map_or(0, |v| v.len()))
        .sum();
    println!("served-bytes {served}");
    println!("ready");
    // Serves until the benchmark closes the pipe (or ends).
    let _ =
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await;
    ExitCode::SUCCESS
}
