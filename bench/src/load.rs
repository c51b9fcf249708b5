//! The load generator: provisioning through the API, then tenant reads at a
//! fixed rate (open loop) and as fast as a fixed set of clients can go
//! (closed loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngExt;
use reqwest::StatusCode;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::report::{Outcome, Sample};
use crate::seed::SeededTenant;

/// An HTTP/1.1 client with a pool as large as the load needs.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    knowton_coordinator::certs::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

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
/// `warmup + duration`, each as its tenant, to random tenants. Request `i`
/// is due at `start + i / rate` and its latency is measured from then, so a
/// stalled server is charged for the requests it delayed.
///
/// At most `connections` requests are in flight (as wrk2 keeps a fixed set
/// of connections): a request due while all are busy waits for one, and
/// that wait counts in its latency. Without a bound, a brief stall turns
/// into a storm of new connections that the stall did not deserve.
///
/// The pacing runs on this thread (a sleep is precise to tens of
/// microseconds, tokio timers to a millisecond); requests run on `runtime`.
pub fn open_loop(
    runtime: &Runtime,
    target: &ReadTarget,
    rate: u32,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> ReadRun {
    let in_flight = Arc::new(Semaphore::new(connections.max(1)));
    let rate = u64::from(rate.max(1));
    let due = |i: u64| Duration::from_nanos(i * 1_000_000_000 / rate);
    let warm_count = (warmup.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
    let total = warm_count + (duration.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
    let mut tasks = Vec::with_capacity(total as usize);
    let start = Instant::now() + Duration::from_millis(10);
    for i in 0..total {
        let scheduled = start + due(i);
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let tenant = target.random_tenant();
        let (target, in_flight) = (target.clone(), in_flight.clone());
        tasks.push(runtime.spawn(async move {
            let lag = scheduled.elapsed();
            let _permit = in_flight.acquire().await;
            let outcome = target.get_tenant(tenant).await;
            (i >= warm_count, Sample::new(scheduled, outcome), lag)
        }));
    }
    let measured_start = start + due(warm_count);
    runtime.block_on(async move {
        let mut samples = Vec::with_capacity(tasks.len());
        let mut send_lags = Vec::with_capacity(tasks.len());
        for task in tasks {
            let Ok((measured, sample, lag)) = task.await else {
                continue;
            };
            if measured {
                send_lags.push(lag);
                samples.push(sample);
            }
        }
        let end = samples
            .iter()
            .map(|s| s.done)
            .max()
            .unwrap_or(measured_start);
        ReadRun {
            samples,
            window: end.saturating_duration_since(measured_start),
            send_lags,
        }
    })
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

/// Reads the whole body (so the latency covers it) and classifies the answer.
async fn finish(response: reqwest::Result<reqwest::Response>, expected: StatusCode) -> Outcome {
    match response {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status == expected => Outcome::Ok,
                Ok(_) if status == StatusCode::TOO_MANY_REQUESTS => Outcome::RateLimited,
                Ok(_) => Outcome::Status(status.as_u16()),
                Err(err) => transport_error(&err),
            }
        }
        Err(err) => transport_error(&err),
    }
}

/// Reports the first transport error on stderr (the rest are only counted).
fn transport_error(err: &reqwest::Error) -> Outcome {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| {
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            chain.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("first transport error: {chain}");
    });
    Outcome::Transport
}
