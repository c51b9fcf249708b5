//! The agent's life: load, bind, spawn the stream, probe every interval
//! with jitter and bounded concurrency, then drain within a grace period.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use knowton_proto::agent::v1::{Failure, PodResult, ProbeOutcome};
use rand::RngExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Args;
use crate::discover::{self, DiscoveryError, Target};
use crate::instructions::Instructed;
use crate::kubelet::{PodStorage, Volumes};
use crate::metrics::{self, AgentMetrics, HttpState};
use crate::node::NodeSampler;
use crate::probe::{ProbeSettings, Prober};
use crate::stream::{self, Round, StreamConfig, StreamStats};

/// Most results sent in one batch.
const BATCH_RESULTS: usize = 5_000;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Every problem with the flags, at once.
    #[error("{0}")]
    CheckFlags(String),
    #[error("failed to start discovering the pods to probe")]
    StartDiscovery(#[source] DiscoveryError),
    #[error("failed to bind the metrics listener on {addr}")]
    BindMetrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` resolves, then flushes what it can.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let checked = args.check().map_err(RunError::CheckFlags)?;
    let (ca, cert, key) = (checked.ca, checked.cert, checked.key);
    let coordinators = checked.coordinators;
    // Set once the first complete list of pods is known: /readyz waits for it.
    let discovered = Arc::new(AtomicBool::new(false));
    let discovery = discover::start(checked.discovery, &args.node_name, discovered.clone())
        .await
        .map_err(RunError::StartDiscovery)?;
    let targets = discovery.targets;
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RunError::BindMetrics {
            addr: args.metrics_addr,
            source,
        })?;
    let stats = Arc::new(StreamStats::default());
    let agent_metrics = AgentMetrics::new();
    let http = metrics::router(HttpState {
        metrics: agent_metrics.clone(),
        stream: stats.clone(),
        discovered,
    });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, http).await {
            tracing::error!(error = %err, "agent metrics server failed");
        }
    });

    let (instructions_tx, instructions) = watch::channel(Instructed::default());
    let (rounds_tx, rounds_rx) = mpsc::channel(4);
    let stream_task = tokio::spawn(stream::run(
        StreamConfig {
            coordinators,
            resolve_every: Duration::from_secs(args.coordinator_resolve_seconds),
            ca,
            cert,
            key,
            node: args.node_name.clone(),
            buffer_bytes: args.buffer_bytes,
            heartbeat_every: Duration::from_secs(5),
            dead_after: Duration::from_secs(20),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        },
        rounds_rx,
        stats.clone(),
        instructions_tx,
    ));
    tracing::info!(node = %args.node_name, coordinator = %args.coordinator, targets = targets.borrow().len(), "agent started");

    let prober = Arc::new(Prober::new(ProbeSettings {
        timeout: args.timeout,
        slow_threshold: args.slow_threshold,
        confirm: true,
    }));
    let probing = probe_loop(
        &args,
        prober,
        targets,
        discovery.storage,
        instructions,
        rounds_tx,
        agent_metrics,
    );
    tokio::select! {
        () = probing => {}
        () = shutdown => tracing::info!("shutting down: flushing buffered results"),
    }
    match tokio::time::timeout(args.shutdown_grace, stream_task).await {
        Ok(_) => tracing::info!("all results acknowledged"),
        Err(_) => tracing::warn!(
            unacknowledged_bytes = stats.buffer_bytes.load(Ordering::Relaxed),
            "shutdown grace period over with results unacknowledged"
        ),
    }
    Ok(())
}

async fn probe_loop(
    args: &Args,
    prober: Arc<Prober>,
    mut targets: watch::Receiver<Vec<Target>>,
    storage: Option<PodStorage>,
    mut instructions: watch::Receiver<Instructed>,
    rounds: mpsc::Sender<Round>,
    metrics: AgentMetrics,
) {
    let mut sampler = NodeSampler::new().ok();
    let interval_of = |i: &Instructed| i.interval.unwrap_or(args.interval);
    let mut check_alls = instructions.borrow().check_alls;
    // Start at a random point of the first interval, so agents do not probe in step.
    let mut interval = interval_of(&instructions.borrow());
    let mut next = Instant::now() + interval.mul_f64(rand::rng().random_range(0.0..0.1));
    // The last storage read, for results sent before this round's arrives.
    let mut last_volumes: Option<Volumes> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            changed = instructions.changed() => {
                if changed.is_err() {
                    return;
                }
                let instructed = instructions.borrow_and_update().clone();
                interval = interval_of(&instructed);
                prober.set_slow_thresholds(instructed.slow);
                if instructed.check_alls != check_alls {
                    check_alls = instructed.check_alls;
                    next = Instant::now();
                }
                continue;
            }
        }
        let changed = targets.has_changed().unwrap_or(false);
        let round: Vec<Target> = targets.borrow_and_update().clone();
        if changed {
            // Pods gone: their scrape history and idle connections go too.
            prober.retain(&round);
        }
        metrics
            .targets
            .set(i64::try_from(round.len()).unwrap_or(i64::MAX));
        // The kubelet's summary is read once per round, beside the probes.
        let storage_wanted = !round.is_empty();
        let volumes = async {
            match &storage {
                Some(storage) if storage_wanted => round_volumes(storage, args, &metrics).await,
                _ => None,
            }
        };
        let node = sampler.as_mut().map(NodeSampler::sample);
        let sent = probe_round(
            &prober,
            round,
            args.concurrency,
            volumes,
            &mut last_volumes,
            node,
            &rounds,
            &metrics,
        )
        .await;
        if !sent {
            return;
        }
        metrics.rounds.inc();
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now + interval.mul_f64(rand::rng().random_range(0.0..0.1));
        }
    }
}

/// This round's storage of the discovered pods; none when the summary
/// cannot be read (logged and counted).
async fn round_volumes(
    storage: &PodStorage,
    args: &Args,
    metrics: &AgentMetrics,
) -> Option<Volumes> {
    match storage.fetch(args.timeout).await {
        Ok(volumes) => Some(volumes),
        Err(err) => {
            metrics.stats_summary_failures.inc();
            tracing::warn!(
                error = &err as &(dyn std::error::Error + 'static),
                "no pod storage this round"
            );
            None
        }
    }
}

/// Results wait at most this long for others to share their batch: a slow
/// pod does not hold back the rest of the round (nor a failure its alert).
const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// Probes every target, at most `concurrency` at a time, and hands the
/// results to the stream as they come: a batch leaves [`FLUSH_AFTER`] after
/// its first result (or when it is full, or the round is over). Storage
/// comes from this round's kubelet summary once read, and from the
/// previous one until then. Returns false when the stream is gone.
#[allow(clippy::too_many_arguments)]
async fn probe_round(
    prober: &Arc<Prober>,
    targets: Vec<Target>,
    concurrency: usize,
    volumes: impl Future<Output = Option<Volumes>>,
    last_volumes: &mut Option<Volumes>,
    node: Option<knowton_proto::agent::v1::NodeMetrics>,
    rounds: &mpsc::Sender<Round>,
    metrics: &AgentMetrics,
) -> bool {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for target in targets {
        let (prober, permits) = (prober.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            prober.probe(&target).await
        });
    }
    tokio::pin!(volumes);
    let mut volumes_pending = true;
    let mut node = node;
    let mut pending: Vec<PodResult> = Vec::new();
    let mut flush_at: Option<Instant> = None;
    let mut sent_any = false;
    loop {
        let done = tasks.is_empty();
        if done && !volumes_pending {
            break;
        }
        tokio::select! {
            joined = tasks.join_next(), if !done => match joined {
                Some(Ok(result)) => {
                    count(metrics, &result);
                    pending.push(result);
                    flush_at.get_or_insert_with(|| Instant::now() + FLUSH_AFTER);
                }
                Some(Err(err)) => tracing::error!(error = %err, "a probe task failed"),
                None => {}
            },
            read = &mut volumes, if volumes_pending => {
                volumes_pending = false;
                if read.is_some() {
                    *last_volumes = read;
                }
            }
            () = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let due = flush_at.is_some_and(|at| Instant::now() >= at);
        if (due || pending.len() >= BATCH_RESULTS || tasks.is_empty()) && !pending.is_empty() {
            if let Some(volumes) = last_volumes.as_ref() {
                volumes.fill(&mut pending);
            }
            let round = Round {
                results: std::mem::take(&mut pending),
                node: node.take(),
            };
            flush_at = None;
            sent_any = true;
            if rounds.send(round).await.is_err() {
                return false;
            }
        }
    }
    if !sent_any {
        // An empty round still carries the node's metrics.
        let round = Round {
            results: Vec::new(),
            node,
        };
        return rounds.send(round).await.is_ok();
    }
    true
}

fn count(metrics: &AgentMetrics, result: &PodResult) {
    let outcome = |check: &str, outcome: &Option<ProbeOutcome>| {
        if let Some(o) = outcome {
            metrics.probes.with_label_values(&[check]).inc();
            if !o.ok {
                metrics
                    .probe_failures
                    .with_label_values(&[check, reason(o.failure)])
                    .inc();
            }
        }
    };
    outcome("liveness", &result.liveness);
    outcome("api_health", &result.api_health);
    if let Some(m) = &result.metrics {
        metrics.probes.with_label_values(&["metrics"]).inc();
        if !m.scraped {
            metrics
                .probe_failures
                .with_label_values(&["metrics", reason(m.failure)])
                .inc();
        }
    }
}

fn reason(failure: i32) -> &'static str {
    Failure::label_of(failure)
}
