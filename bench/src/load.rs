//! The load generator: provisioning through the API, then tenant reads at a
//! fixed rate (open loop) and as fast as a fixed set of clients can go
//! (closed loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use knowton_bench::open_loop::{self, Outcome, Sample, Schedule, finish};
use knowton_bench::seed::SeededTenant;
use rand::RngExt;
use reqwest::StatusCode;
use tokio::runtime::Runtime;
use tokio::time::Instant;

/// Provisions `count` tenants through `POST /api/v1/tenants` with
/// `concurrency` clients. Returns one sample per request and the wall time.
pub async fn provision(
    client: &reqwest::Client,
    base_url: &str,
    admin_token: &str,
    count: usize,
    concurrency: usize,
) -> (Vec<Sample>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let url: Arc<str> = format!("{base_url}/api/v1/tenants").into();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, next, url) = (client.clone(), next.clone(), url.clone());
            let token = admin_token.to_owned();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return samples;
                    }
                    let plan = knowton_common::Plan::ALL[i % 3];
                    let slug = format!("prov-{i:06}");
                    let body = serde_json::json!({
                        "name": format!("Provisioned {i}"),
                        "slug": slug,
                        "plan": plan,
                        "adminEmail": format!("admin@{slug}.example.com"),
                        "domain": format!("{slug}.bench.knowton.example"),
                    });
                    let sent = Instant::now();
                    let request = client.post(&*url).bearer_auth(&token).json(&body);
                    let outcome = finish(request.send().await, StatusCode::CREATED).await;
                    samples.push(Sample::new(sent, outcome));
                }
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(count);
    for worker in workers {
        samples.extend(worker.await.unwrap_or_default());
    }
    (samples, started.elapsed())
}

/// Whom the read phases ask, and as which tenants.
#[derive(Debug, Clone)]
pub struct ReadTarget {
    pub client: reqwest::Client,
    pub base_url: Arc<str>,
    pub tenants: Arc<Vec<SeededTenant>>,
}

impl ReadTarget {
    /// `GET /api/v1/tenants/{id}` of tenant number `index`, with its own key.
    async fn get_tenant(&self, index: usize) -> Outcome {
        let tenant = &self.tenants[index];
        let response = self
            .client
            .get(format!("{}/api/v1/tenants/{}", self.base_url, tenant.id))
            .bearer_auth(&tenant.production_key)
            .send()
            .await;
        finish(response, StatusCode::OK).await
    }

    fn random_tenant(&self) -> usize {
        rand::rng().random_range(0..self.tenants.len())
    }
}

/// What a read phase measured: samples after the warm-up, and the window
/// they cover.
#[derive(Debug)]
pub struct ReadRun {
    pub samples: Vec<Sample>,
    pub window: Duration,
    /// Open loop: how late each measured request was picked up by the load
    /// generator (its own scheduling delay, included in the latency).
    pub send_lags: Vec<Duration>,
}

/// Sends `GET /api/v1/tenants/{id}` at `rate` requests per second for
/// `warmup + duration`, each as its tenant, to random tenants, with at
/// most `connections` in flight: the open loop of [`open_loop::run`].
pub fn open_loop(
    runtime: &Runtime,
    target: &ReadTarget,
    rate: u32,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> ReadRun {
    let schedule = Schedule {
        rate,
        connections,
        warmup,
        duration,
    };
    let run = open_loop::run(runtime, schedule, || {
        let tenant = target.random_tenant();
        let target = target.clone();
        async move { target.get_tenant(tenant).await }
    });
    ReadRun {
        samples: run.samples,
        window: run.window,
        send_lags: run.send_lags,
    }
}

/// `concurrency` clients each send a request as soon as their previous one
/// is answered, for `warmup + duration`; latency is from send to answer.
pub async fn closed_loop(
    target: &ReadTarget,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> ReadRun {
    let start = Instant::now();
    let measured_start = start + warmup;
    let deadline = measured_start + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= deadline {
                        return samples;
                    }
                    let outcome = target.get_tenant(target.random_tenant()).await;
                    if sent >= measured_start {
                        samples.push(Sample::new(sent, outcome));
                    }
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.unwrap_or_default());
    }
    let end = samples.iter().map(|s| s.done).max().unwrap_or(deadline);
    ReadRun {
        samples,
        window: end.saturating_duration_since(measured_start),
        send_lags: Vec::new(),
    }
}
