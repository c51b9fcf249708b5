//! The agent's life: load, bind, spawn the stream, probe every pod once an
//! interval (in groups spread over it) with bounded concurrency, then drain
//! within a grace period.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use knowton_proto::agent::v1::{Failure, PodResult, ProbeOutcome};
use rand::RngExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::config::Args;
use crate::discover::{self, DiscoveryError, Target};
use crate::instructions::Instructed;
use crate::kubelet::{PodStorage, Volumes};
use crate::metrics::{self, AgentMetrics, HttpState};
use crate::node::NodeSampler;
use crate::probe::{IdleClosed, ProbeSettings, Prober};
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

    let (prober, idle_closed) = Prober::watching(ProbeSettings {
        timeout: args.timeout,
        slow_threshold: args.slow_threshold,
        confirm: true,
    });
    let probing = probe_loop(
        &args,
        Arc::new(prober),
        idle_closed,
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

/// What the probes produce, for [`batch_results`].
#[derive(Debug)]
enum Produced {
    /// A pod's result; `now`: sent at once (a slow verdict, a failure, or
    /// a result found between rounds), not held [`FLUSH_AFTER`] for company.
    Result { result: Box<PodResult>, now: bool },
    /// The node's figures, sent with the next batch.
    Node(knowton_proto::agent::v1::NodeMetrics),
    /// This round's kubelet summary: the storage of the results from now on.
    Volumes(Volumes),
    /// A round starts: what the previous one left waiting leaves now, so
    /// each round has batches of its own.
    RoundStarted,
}

/// Why a pod is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Its turn in a round.
    Round,
    /// The pod reset its idle connection: probed at once, result sent at once.
    Reset,
    /// The pod closed its idle connection cleanly: re-checked, and probed
    /// (the result sent at once) only if the re-check does not answer.
    Closed,
}

/// Pods whose probe is running, by (tenant, pod).
type InFlight = Arc<std::sync::Mutex<HashSet<(String, String)>>>;

/// Removes its pod from [`InFlight`] when the probe ends, however it ends.
struct Running {
    in_flight: InFlight,
    key: (String, String),
}

impl Drop for Running {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// Starts rounds on schedule, each pod's probe when its group's turn comes
/// (all at once for a check-all), and probes pods between rounds when their
/// idle connection is closed; the results go to [`batch_results`]. A pod whose
/// previous probe still runs is skipped (and counted), never queued, so a
/// slow or hanging pod delays neither the others nor the next round.
#[allow(clippy::too_many_arguments)]
async fn probe_loop(
    args: &Args,
    prober: Arc<Prober>,
    mut idle_closed: mpsc::UnboundedReceiver<IdleClosed>,
    mut targets: watch::Receiver<Vec<Target>>,
    storage: Option<PodStorage>,
    mut instructions: watch::Receiver<Instructed>,
    rounds: mpsc::Sender<Round>,
    metrics: AgentMetrics,
) {
    let (produced, results) = mpsc::unbounded_channel();
    let batching = batch_results(results, rounds, metrics.clone());
    let scheduling = async {
        let mut sampler = NodeSampler::new().ok();
        let interval_of = |i: &Instructed| i.interval.unwrap_or(args.interval);
        // None seen yet: one asked for before the loop started is honoured.
        let mut check_alls = 0;
        // Start at a random point of the first interval, so agents do not probe in step.
        let mut interval = interval_of(&instructions.borrow());
        let mut next = Instant::now() + interval.mul_f64(rand::rng().random_range(0.0..0.1));
        let probes = Probes {
            prober: prober.clone(),
            permits: Arc::new(Semaphore::new(args.concurrency.max(1))),
            in_flight: InFlight::default(),
            produced: produced.clone(),
            metrics: metrics.clone(),
        };
        let storage = storage.map(Arc::new);
        let mut by_url: HashMap<String, Vec<Target>> = HashMap::new();
        // This round's probes not started yet, soonest first.
        let mut due: VecDeque<(Instant, Target)> = VecDeque::new();
        // A check-all probes every pod at once rather than spread out.
        let mut all_at_once = false;
        loop {
            let wake = due.front().map_or(next, |(at, _)| next.min(*at));
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
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
                        all_at_once = true;
                    }
                    continue;
                }
                Some(closed) = idle_closed.recv() => {
                    let (how, cause) = if closed.reset {
                        ("reset", Cause::Reset)
                    } else {
                        ("clean", Cause::Closed)
                    };
                    metrics.idle_closed.with_label_values(&[how]).inc();
                    for target in by_url.get(&closed.url).into_iter().flatten() {
                        probes.start(target.clone(), cause);
                    }
                    continue;
                }
            }
            let now = Instant::now();
            while let Some((_, target)) = due.pop_front_if(|(at, _)| *at <= now) {
                probes.start(target, Cause::Round);
            }
            if now < next {
                continue;
            }
            // Only a check-all starts a round before the last one's probes
            // have all started: it probes those pods now anyway.
            due.clear();
            let changed = targets.has_changed().unwrap_or(false);
            let round: Vec<Target> = targets.borrow_and_update().clone();
            if changed || by_url.is_empty() {
                // Pods gone: their scrape history and idle connections go too.
                prober.retain(&round);
                by_url.clear();
                for target in &round {
                    by_url
                        .entry(target.url.clone())
                        .or_default()
                        .push(target.clone());
                }
            }
            metrics
                .targets
                .set(i64::try_from(round.len()).unwrap_or(i64::MAX));
            // The kubelet's summary is read once per round, beside the probes.
            if let Some(storage) = storage.as_ref().filter(|_| !round.is_empty()) {
                let (storage, produced, metrics) =
                    (storage.clone(), produced.clone(), metrics.clone());
                let timeout = args.timeout;
                tokio::spawn(async move {
                    if let Some(volumes) = round_volumes(&storage, timeout, &metrics).await {
                        let _ = produced.send(Produced::Volumes(volumes));
                    }
                });
            }
            let _ = produced.send(Produced::RoundStarted);
            if let Some(node) = sampler.as_mut().map(NodeSampler::sample) {
                let _ = produced.send(Produced::Node(node));
            }
            // Started when due, from the next turn of the loop on.
            due = if std::mem::take(&mut all_at_once) {
                round.into_iter().map(|target| (now, target)).collect()
            } else {
                spread(round, next, interval)
            };
            metrics.rounds.inc();
            next += interval;
            let now = Instant::now();
            if next < now {
                next = now + interval.mul_f64(rand::rng().random_range(0.0..0.1));
            }
        }
    };
    tokio::select! {
        () = batching => {}
        () = scheduling => {}
    }
}

/// A round's probes start in this many groups, spread over the interval
/// (every 50 ms at the default 5 s).
const SPREAD: u32 = 100;

/// The round starting at `start` as (when, pod), soonest first: each pod in
/// one of [`SPREAD`] groups, the same every round, so every pod is still
/// probed once per interval but a round's probes (and the results, and the
/// coordinator's work on them) come a few at a time over the interval
/// rather than all at its start. The group is a hash of the pod's tenant
/// and name, as Prometheus spreads its scrapes by a hash of the target.
///
/// `knowton-bench-alerts`, 1,000 pods: all at once, a thousand results
/// queued in the coordinator behind each other and behind the agent's
/// burst for the CPU (arrival to webhook p99 100-500 ms); an offset of its
/// own for each pod cost the agent half as much CPU again as groups do, a
/// wake-up for each probe.
fn spread(round: Vec<Target>, start: Instant, interval: Duration) -> VecDeque<(Instant, Target)> {
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut due: Vec<(Instant, Target)> = round
        .into_iter()
        .map(|target| {
            let hash = hasher.hash_one((&target.tenant, &target.pod));
            let group = u32::try_from(hash % u64::from(SPREAD)).unwrap_or(0);
            (start + interval / SPREAD * group, target)
        })
        .collect();
    due.sort_by_key(|(at, _)| *at);
    due.into()
}

/// A probe holds its place among `--concurrency` until it ends or this
/// passes (or its slow threshold, if shorter): the bound paces how many
/// probes start at once; a pod that takes its time to answer costs a
/// socket and a timer, not a place, so it does not hold the others back.
const PACE: Duration = Duration::from_millis(100);

/// Starts probes: each a task of its own. Round probes hold one of
/// `permits` at most [`PACE`]; probes of a pod that closed its idle
/// connection take none (they are few, and urgent).
struct Probes {
    prober: Arc<Prober>,
    permits: Arc<Semaphore>,
    in_flight: InFlight,
    produced: mpsc::UnboundedSender<Produced>,
    metrics: AgentMetrics,
}

impl Probes {
    fn start(&self, target: Target, cause: Cause) {
        let key = (target.tenant.clone(), target.pod.clone());
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        if !fresh {
            if cause == Cause::Round {
                self.metrics.probes_skipped.inc();
            }
            return;
        }
        let running = Running {
            in_flight: self.in_flight.clone(),
            key,
        };
        let (prober, permits, produced) = (
            self.prober.clone(),
            self.permits.clone(),
            self.produced.clone(),
        );
        let slow_verdicts = self.metrics.slow_verdicts.clone();
        tokio::spawn(async move {
            let _running = running;
            let permit = match cause {
                Cause::Round => Some(
                    permits
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                ),
                Cause::Reset | Cause::Closed => None,
            };
            let pace = PACE.min(prober.settings_for(&target.tenant).slow_threshold);
            let verdict = produced.clone();
            // Boxed, so a task still waiting for its permit is small: a
            // round starts every pod's task at once, and the probe's own
            // state (its requests, their buffers) exists only once it runs.
            let mut probe = Box::pin(async {
                if cause == Cause::Closed {
                    return prober.recheck(&target).await;
                }
                let report = move |result: PodResult| {
                    slow_verdicts.inc();
                    let _ = verdict.send(Produced::Result {
                        result: Box::new(result),
                        now: true,
                    });
                };
                Some(prober.probe_reporting(&target, report).await)
            });
            let result = tokio::select! {
                result = &mut probe => result,
                () = tokio::time::sleep(pace) => {
                    drop(permit);
                    probe.await
                }
            };
            if let Some(result) = result {
                // A failure is news: it does not wait for company either.
                let now = cause != Cause::Round || failed(&result);
                let _ = produced.send(Produced::Result {
                    result: Box::new(result),
                    now,
                });
            }
        });
    }
}

/// This round's storage of the discovered pods; none when the summary
/// cannot be read (logged and counted).
async fn round_volumes(
    storage: &PodStorage,
    timeout: Duration,
    metrics: &AgentMetrics,
) -> Option<Volumes> {
    match storage.fetch(timeout).await {
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

/// Hands the results to the stream as they come: a batch leaves
/// [`FLUSH_AFTER`] after its first result or the node's figures (at once
/// for a result that must not wait, or when it is full). Storage comes
/// from the latest kubelet summary. Returns when the stream is gone.
async fn batch_results(
    mut results: mpsc::UnboundedReceiver<Produced>,
    rounds: mpsc::Sender<Round>,
    metrics: AgentMetrics,
) {
    let mut batch = Batch::default();
    loop {
        let mut closed = false;
        tokio::select! {
            got = results.recv() => match got {
                Some(produced) => {
                    batch.take(produced, &metrics);
                    // What else is already there joins this batch: a burst
                    // of results that must not wait leaves as one batch.
                    while batch.results.len() < BATCH_RESULTS {
                        match results.try_recv() {
                            Ok(produced) => batch.take(produced, &metrics),
                            Err(_) => break,
                        }
                    }
                }
                None => closed = true,
            },
            () = async {
                match batch.flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let due = batch.flush_at.is_some_and(|at| Instant::now() >= at);
        let full = batch.results.len() >= BATCH_RESULTS;
        if (due || closed || full)
            && let Some(round) = batch.flush()
            && rounds.send(round).await.is_err()
        {
            return;
        }
        if closed {
            return;
        }
    }
}

/// The batch being gathered by [`batch_results`].
#[derive(Default)]
struct Batch {
    results: Vec<PodResult>,
    node: Option<knowton_proto::agent::v1::NodeMetrics>,
    volumes: Option<Volumes>,
    flush_at: Option<Instant>,
}

impl Batch {
    fn take(&mut self, produced: Produced, metrics: &AgentMetrics) {
        let now = Instant::now();
        match produced {
            Produced::Result {
                result,
                now: at_once,
            } => {
                count(metrics, &result);
                self.results.push(*result);
                let at = if at_once { now } else { now + FLUSH_AFTER };
                self.flush_at = Some(self.flush_at.map_or(at, |f| f.min(at)));
            }
            Produced::Node(sample) => {
                self.node = Some(sample);
                self.flush_at.get_or_insert(now + FLUSH_AFTER);
            }
            Produced::Volumes(read) => self.volumes = Some(read),
            Produced::RoundStarted => {
                if !self.results.is_empty() {
                    self.flush_at = Some(now);
                }
            }
        }
    }

    /// What leaves now, if anything; storage from the latest summary.
    fn flush(&mut self) -> Option<Round> {
        self.flush_at = None;
        if let Some(volumes) = self.volumes.as_ref() {
            volumes.fill(&mut self.results);
        }
        (!self.results.is_empty() || self.node.is_some()).then(|| Round {
            results: std::mem::take(&mut self.results),
            node: self.node.take(),
        })
    }
}

/// Whether liveness or API health failed.
fn failed(result: &PodResult) -> bool {
    [&result.liveness, &result.api_health]
        .into_iter()
        .flatten()
        .any(|o| !o.ok)
}

fn count(metrics: &AgentMetrics, result: &PodResult) {
    // A slow verdict is counted with the probe's final result.
    if result.api_health.as_ref().is_some_and(|o| o.pending) {
        return;
    }
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

#[cfg(test)]
mod tests;
