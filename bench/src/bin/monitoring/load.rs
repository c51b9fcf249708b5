//! The two loads: `GET /metrics` scraped one after another, and
//! `GET /api/v1/monitoring/health` at a fixed rate (open loop) for random
//! tenants; with the latency percentiles of each.

use std::sync::Arc;
use std::time::Duration;

use knowton_bench::open_loop::{self, OpenRun, Outcome, Schedule, finish};
use knowton_coordinator::api::AppState;
use rand::RngExt;
use reqwest::StatusCode;
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::time::Instant;

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
        finish(self.request(slug).send().await, StatusCode::OK).await
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

/// Sends the health request at `rate` per second for `warmup + duration`,
/// each for a random tenant, with at most `connections` in flight: the
/// open loop of [`open_loop::run`], as `knowton-bench`'s read phase.
pub fn open_loop(
    runtime: &Runtime,
    target: &HealthTarget,
    rate: u32,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> OpenRun {
    let schedule = Schedule {
        rate,
        connections,
        warmup,
        duration,
    };
    open_loop::run(runtime, schedule, || {
        let tenant = target.random_slug();
        let target = target.clone();
        async move { target.get(&target.slugs[tenant]).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_series_counts_status_lines_only() {
        let body = b"# TYPE knowton_tenant_status gauge\nknowton_tenant_status{tenant=\"a\"} 0\nknowton_tenant_pods{tenant=\"a\"} 2\nknowton_tenant_status{tenant=\"b\"} 0\n";
        assert_eq!(tenant_series(body), 2);
        let families = largest_families(body, 1);
        assert_eq!(families[0].name, "knowton_tenant_status");
        assert_eq!(families[0].series, 2);
    }
}
