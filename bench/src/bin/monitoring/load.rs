//! The two loads: `GET /metrics` scraped one after another, and
//! `GET /api/v1/monitoring/health` at a fixed rate (open loop) for random
//! tenants; with the latency percentiles of each.

use std::sync::Arc;
use std::time::Duration;

use knowton_coordinator::api::AppState;
use rand::RngExt;
use reqwest::StatusCode;
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// An HTTP/1.1 client with a pool as large as the load needs.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    knowton_coordinator::client::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

/// Latency percentiles (nearest rank) in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(durations: impl Iterator<Item = Duration>) -> Self {
        let mut nanos: Vec<u64> = durations
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect();
        let Some(&max) = nanos.iter().max() else {
            return Latency::default();
        };
        nanos.sort_unstable();
        let ms = |n: u64| n as f64 / 1e6;
        let at = |q: f64| {
            ms(nanos[((q * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len()) - 1])
        };
        let sum: f64 = nanos.iter().map(|&n| n as f64).sum();
        Latency {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(max),
            mean_ms: sum / nanos.len() as f64 / 1e6,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "ms p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        )
    }
}

/// `GET /metrics`, `count` times one after another.
#[derive(Debug)]
pub struct Scrapes {
    pub latencies: Vec<Duration>,
    /// Body size and `knowton_tenant_status` series of the last scrape.
    pub body_bytes: usize,
    pub tenant_series: usize,
    /// The last body's largest families.
    pub families: Vec<Family>,
    pub failures: usize,
}

/// A metric family's share of the body.
#[derive(Debug, Clone, Serialize)]
pub struct Family {
    pub name: String,
    pub series: usize,
    pub bytes: usize,
}

pub async fn scrape(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
    count: usize,
) -> Scrapes {
    let url = format!("{base_url}/metrics");
    let mut scrapes = Scrapes {
        latencies: Vec::with_capacity(count),
        body_bytes: 0,
        tenant_series: 0,
        families: Vec::new(),
        failures: 0,
    };
    for _ in 0..count {
        let sent = Instant::now();
        let body = match client.get(&url).bearer_auth(token).send().await {
            Ok(r) if r.status() == StatusCode::OK => r.bytes().await.ok(),
            _ => None,
        };
        let took = sent.elapsed();
        let Some(body) = body else {
            scrapes.failures += 1;
            continue;
        };
        scrapes.latencies.push(took);
        scrapes.body_bytes = body.len();
        scrapes.tenant_series = tenant_series(&body);
        scrapes.families = largest_families(&body, 6);
    }
    scrapes
}

/// The `top` families with the most bytes of series (comments excluded).
pub fn largest_families(body: &[u8], top: usize) -> Vec<Family> {
    let mut by_name: std::collections::HashMap<&[u8], (usize, usize)> =
        std::collections::HashMap::new();
    for line in body.split(|&b| b == b'\n') {
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let end = line
            .iter()
            .position(|&b| b == b'{' || b == b' ')
            .unwrap_or(line.len());
        let entry = by_name.entry(&line[..end]).or_default();
        entry.0 += 1;
        entry.1 += line.len() + 1;
    }
    let mut families: Vec<Family> = by_name
        .into_iter()
        .map(|(name, (series, bytes))| Family {
            name: String::from_utf8_lossy(name).into_owned(),
            series,
            bytes,
        })
        .collect();
    families.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    families.truncate(top);
    families
}

/// `knowton_tenant_status{…}` lines: one per evaluated tenant.
pub fn tenant_series(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"knowton_tenant_status{"))
        .count()
}

/// `metrics::render` called directly, `count` times: the server's own
/// share of a scrape, without HTTP.
pub fn render(state: &AppState, count: usize) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(knowton_coordinator::api::metrics::render(state));
            started.elapsed()
        })
        .collect()
}

/// Whom the health load asks, and as whom.
#[derive(Debug, Clone)]
pub struct HealthTarget {
    pub client: reqwest::Client,
    pub url: Arc<str>,
    pub admin_token: Arc<str>,
    pub slugs: Arc<[String]>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Status(u16),
    Transport,
}

impl HealthTarget {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        admin_token: &str,
        slugs: Arc<[String]>,
    ) -> Self {
        HealthTarget {
            client,
            url: format!("{base_url}/api/v1/monitoring/health").into(),
            admin_token: admin_token.into(),
            slugs,
        }
    }

    fn request(&self, slug: &str) -> reqwest::RequestBuilder {
        self.client
            .get(&*self.url)
            .bearer_auth(&*self.admin_token)
            .header("x-tenant-slug", slug)
    }

    /// The tenant's health; the whole body is read, so the latency covers it.
    pub async fn get(&self, slug: &str) -> Outcome {
        match self.request(slug).send().await {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) if status == StatusCode::OK => Outcome::Ok,
                    Ok(_) => Outcome::Status(status.as_u16()),
                    Err(err) => transport_error(&err),
                }
            }
            Err(err) => transport_error(&err),
        }
    }

    /// One tenant's health as JSON, and the body's size: to check what the
    /// load will be reading.
    pub async fn sample(&self, slug: &str) -> anyhow::Result<(usize, serde_json::Value)> {
        let response = self.request(slug).send().await?.error_for_status()?;
        let body = response.bytes().await?;
        Ok((body.len(), serde_json::from_slice(&body)?))
    }

    fn random_slug(&self) -> usize {
        rand::rng().random_range(0..self.slugs.len())
    }
}

/// What the open-loop run measured after its warm-up.
#[derive(Debug)]
pub struct OpenRun {
    /// Latency of each measured request from when it was due, and how it
    /// ended.
    pub samples: Vec<(Duration, Outcome)>,
    /// From the first measured request's due time to the last answer.
    pub window: Duration,
    /// How late each measured request was picked up by the load generator
    /// (its own scheduling delay, included in the latency).
    pub send_lags: Vec<Duration>,
    /// The slowest latency among the requests due in each measured second:
    /// shows whether slow requests are spread out or come in stalls.
    pub per_second_max: Vec<Duration>,
}

impl OpenRun {
    pub fn count(&self, outcome: impl Fn(Outcome) -> bool) -> usize {
        self.samples.iter().filter(|(_, o)| outcome(*o)).count()
    }
}

/// Sends the health request at `rate` per second for `warmup + duration`,
/// each for a random tenant. Request `i` is due at `start + i / rate` and
/// its latency is measured from then, so a stalled server is charged for
/// the requests it delayed; at most `connections` are in flight (as wrk2
/// keeps a fixed set of connections), and a request waiting for one is
/// charged for the wait. The pacing runs on this thread (a sleep is precise
/// to tens of microseconds, tokio timers to a millisecond); requests run on
/// `runtime`. The same scheme as `knowton-bench`'s read phase.
pub fn open_loop(
    runtime: &Runtime,
    target: &HealthTarget,
    rate: u32,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> OpenRun {
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
        let tenant = target.random_slug();
        let (target, in_flight) = (target.clone(), in_flight.clone());
        tasks.push(runtime.spawn(async move {
            let lag = scheduled.elapsed();
            let _permit = in_flight.acquire().await;
            let outcome = target.get(&target.slugs[tenant]).await;
            let done = Instant::now();
            (
                i,
                done.saturating_duration_since(scheduled),
                outcome,
                lag,
                done,
            )
        }));
    }
    let measured_start = start + due(warm_count);
    runtime.block_on(async move {
        let mut run = OpenRun {
            samples: Vec::with_capacity(tasks.len()),
            window: Duration::ZERO,
            send_lags: Vec::with_capacity(tasks.len()),
            per_second_max: vec![Duration::ZERO; duration.as_secs_f64().ceil() as usize],
        };
        let mut end = measured_start;
        for task in tasks {
            let Ok((i, latency, outcome, lag, done)) = task.await else {
                continue;
            };
            if i >= warm_count {
                run.samples.push((latency, outcome));
                run.send_lags.push(lag);
                end = end.max(done);
                if let Some(max) = run
                    .per_second_max
                    .get_mut(((i - warm_count) / rate) as usize)
                {
                    *max = (*max).max(latency);
                }
            }
        }
        run.window = end.saturating_duration_since(measured_start);
        run
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = Latency::of((1..=100).map(Duration::from_millis));
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(std::iter::empty()).p99_ms, 0.0);
    }

    #[test]
    fn tenant_series_counts_status_lines_only() {
        let body = b"# TYPE knowton_tenant_status gauge\nknowton_tenant_status{tenant=\"a\"} 0\nknowton_tenant_pods{tenant=\"a\"} 2\nknowton_tenant_status{tenant=\"b\"} 0\n";
        assert_eq!(tenant_series(body), 2);
        let families = largest_families(body, 1);
        assert_eq!(families[0].name, "knowton_tenant_status");
        assert_eq!(families[0].series, 2);
    }
}
