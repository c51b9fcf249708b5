//! Healthy results for every tenant's pods, handed straight to the ingest
//! registry as simulated agents' streams would after their handshake: one
//! full round at once (so every tenant gets evaluated), then a round every
//! interval, each node's batch at its own moment within it, so results
//! stay fresh while the figures are taken.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use knowton_coordinator::api::AppState;
use knowton_coordinator::ingest::registry::{BatchOutcome, Connection};
use knowton_proto::agent::v1::{Hello, PodResult, ResultBatch};
use knowton_tests::feed::healthy;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the feeder handed to the registry.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FeedTotals {
    pub batches: u64,
    pub results: u64,
    /// Results the registry took (the rest were for unknown tenants).
    pub accepted: u64,
}

/// The running feeder; [`Feeder::stop`] ends it.
#[derive(Debug)]
pub struct Feeder {
    pub nodes: usize,
    stop: watch::Sender<bool>,
    task: JoinHandle<FeedTotals>,
}

/// One simulated node: its pods and its stream.
#[derive(Debug)]
struct Node {
    conn: Connection,
    sequence: u64,
    /// `(tenant, pod)` of each result it sends.
    pods: Vec<(Arc<str>, String)>,
}

impl Feeder {
    /// Spreads `pods_per_tenant` pods of each of `slugs` over nodes of at
    /// most `batch_results` pods, sends every node's batch at once, then
    /// each again every `interval`, spaced evenly, on `handle`.
    pub fn start(
        handle: &Handle,
        state: AppState,
        slugs: &[String],
        pods_per_tenant: usize,
        batch_results: usize,
        interval: Duration,
    ) -> Self {
        let pairs: Vec<(Arc<str>, String)> = slugs
            .iter()
            .flat_map(|slug| {
                let tenant: Arc<str> = slug.as_str().into();
                (0..pods_per_tenant).map(move |p| (tenant.clone(), format!("{tenant}-pod-{p}")))
            })
            .collect();
        let mut nodes: Vec<Node> = pairs
            .chunks(batch_results.max(1))
            .enumerate()
            .map(|(n, pods)| {
                let hello = Hello {
                    protocol_version: 1,
                    node_name: format!("bench-node-{n:03}"),
                    agent_version: "bench".to_owned(),
                    session_id: format!("bench-monitoring-{n}"),
                };
                let (conn, _) =
                    state
                        .ingest
                        .connect(&hello, 1, SocketAddr::from(([127, 0, 0, 1], 1)));
                Node {
                    conn,
                    sequence: 0,
                    pods: pods.to_vec(),
                }
            })
            .collect();
        let count = nodes.len();
        let (stop, mut stopped) = watch::channel(false);
        let task = handle.spawn(async move {
            let mut totals = FeedTotals::default();
            for node in &mut nodes {
                send(&state, node, &mut totals);
                tokio::task::yield_now().await;
            }
            if nodes.is_empty() {
                return totals;
            }
            let every = interval / nodes.len() as u32;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for next in (0..nodes.len()).cycle() {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    _ = tick.tick() => send(&state, &mut nodes[next], &mut totals),
                }
            }
            totals
        });
        Feeder {
            nodes: count,
            stop,
            task,
        }
    }

    /// Stops feeding; returns what was sent.
    pub async fn stop(self) -> FeedTotals {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// One batch of fresh healthy results from `node`.
fn send(state: &AppState, node: &mut Node, totals: &mut FeedTotals) {
    node.sequence += 1;
    let results: Vec<PodResult> = node
        .pods
        .iter()
        .map(|(tenant, pod)| healthy(tenant, pod))
        .collect();
    totals.batches += 1;
    totals.results += results.len() as u64;
    let batch = ResultBatch {
        sequence: node.sequence,
        results,
        node: None,
    };
    if let BatchOutcome::Stored { accepted, .. } =
        state
            .ingest
            .ingest(&node.conn, batch, state.service.directory())
    {
        totals.accepted += accepted as u64;
    }
}
