//! Probes one tenant pod: liveness, API health (with its database) and a
//! metrics scrape over one keep-alive connection, plus its volume usage.
//!
//! Timings in each [`ProbeOutcome`] are microseconds: `connect_us` is the
//! TCP connect paid by that request (0 when it reused the probe's
//! connection), `first_byte_us` runs from sending the request to the
//! response head and `latency_us` to the end of the body. A check that
//! failed, or an API health check that took longer than the slow threshold
//! (connect included), is repeated at once on a fresh connection and that
//! confirmation is reported.

pub(crate) mod http;
pub(crate) mod metrics;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use knowton_proto::agent::v1::{Failure, MetricsSample, PodResult, ProbeOutcome, StorageSample};
use tokio::time::Instant;

use crate::discover::Target;
use crate::instructions::SlowThresholds;
use crate::storage;
use http::{Attempt, Client, Conn, Endpoint, Failed};

/// Largest `/health` or `/api/health` body read.
const HEALTH_BODY_LIMIT: usize = 64 * 1024;
/// Largest `/metrics` body read.
const METRICS_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// How a [`Prober`] probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Bound on each request, connecting included.
    pub timeout: Duration,
    /// An API health check slower than this is confirmed like a failed one,
    /// unless the coordinator sent thresholds (see
    /// [`Prober::set_slow_thresholds`]).
    pub slow_threshold: Duration,
    /// Repeat a failed or slow check once before reporting it.
    pub confirm: bool,
}

/// Probes pods one at a time per call (callers bound the concurrency),
/// remembers each pod's previous scrape to derive request rates, and keeps
/// each pod's connection open between probes: a new TCP connection per pod
/// per round would be most of the agent's CPU.
#[derive(Debug)]
pub struct Prober {
    settings: Mutex<ProbeSettings>,
    /// The coordinator's per-tenant slow thresholds, once it sent them.
    slow: Mutex<Option<SlowThresholds>>,
    history: metrics::History,
    /// Idle keep-alive connections by pod URL; a probe takes its pod's
    /// connection and gives it back when done.
    idle: Mutex<HashMap<String, Conn>>,
}

/// Which health check a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Liveness,
    ApiHealth,
}

impl Check {
    fn path(self) -> &'static str {
        match self {
            Check::Liveness => "/health",
            Check::ApiHealth => "/api/health",
        }
    }
}

impl Prober {
    pub fn new(settings: ProbeSettings) -> Self {
        Prober {
            settings: Mutex::new(settings),
            slow: Mutex::new(None),
            history: metrics::History::default(),
            idle: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> ProbeSettings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies to the probes that start after this call.
    pub fn set_settings(&self, settings: ProbeSettings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// The coordinator's slow thresholds, for the probes that start after
    /// this call; `None` goes back to [`ProbeSettings::slow_threshold`].
    pub fn set_slow_thresholds(&self, slow: Option<SlowThresholds>) {
        *self.slow.lock().unwrap_or_else(|e| e.into_inner()) = slow;
    }

    /// The settings a probe of `tenant`'s pod uses.
    pub fn settings_for(&self, tenant: &str) -> ProbeSettings {
        let mut settings = self.settings();
        if let Some(slow) = &*self.slow.lock().unwrap_or_else(|e| e.into_inner()) {
            settings.slow_threshold = slow.of(tenant);
        }
        settings
    }

    /// Forgets the previous scrapes and closes the connections of pods that
    /// are not in `targets`.
    pub fn retain(&self, targets: &[Target]) {
        let pods: std::collections::HashSet<(&str, &str)> = targets
            .iter()
            .map(|t| (t.tenant.as_str(), t.pod.as_str()))
            .collect();
        self.history
            .retain(|tenant, pod| pods.contains(&(tenant, pod)));
        let urls: std::collections::HashSet<&str> =
            targets.iter().map(|t| t.url.as_str()).collect();
        self.idle_pool()
            .retain(|url, _| urls.contains(url.as_str()));
    }

    /// Idle connections kept for the next probe.
    pub fn idle_connections(&self) -> usize {
        self.idle_pool().len()
    }

    fn idle_pool(&self) -> std::sync::MutexGuard<'_, HashMap<String, Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Probes `target` and reports every check; failures are in the result,
    /// never an error.
    pub async fn probe(&self, target: &Target) -> PodResult {
        let settings = self.settings_for(&target.tenant);
        let mut result = PodResult {
            tenant: target.tenant.clone(),
            pod: target.pod.clone(),
            observed_at_unix_ms: chrono::Utc::now().timestamp_millis(),
            ..PodResult::default()
        };
        let storage = volume_usage(target, settings.timeout);
        let checks = async {
            match Endpoint::parse(&target.url) {
                Ok(endpoint) => {
                    result.pod_ip.clone_from(&endpoint.host);
                    self.checks(target, &endpoint, settings).await
                }
                Err(failed) => {
                    let outcome = failure_outcome(failed, false);
                    let metrics = metrics_failure(Failure::Other);
                    (outcome.clone(), outcome, metrics)
                }
            }
        };
        let ((liveness, api_health, metrics), storage) = tokio::join!(checks, storage);
        result.liveness = Some(liveness);
        result.api_health = Some(api_health);
        result.metrics = Some(metrics);
        result.storage = storage;
        result
    }

    async fn checks(
        &self,
        target: &Target,
        endpoint: &Endpoint,
        settings: ProbeSettings,
    ) -> (ProbeOutcome, ProbeOutcome, MetricsSample) {
        let idle = self.idle_pool().remove(&target.url);
        let mut probe = PodProbe {
            client: Client::new(endpoint, settings.timeout, idle),
            settings,
            unreachable: None,
        };
        let liveness = probe.check(Check::Liveness).await;
        let api_health = probe.check(Check::ApiHealth).await;
        let metrics = match &probe.unreachable {
            Some(failed) => metrics_failure(failed.failure),
            None => self.scrape(target, &mut probe.client).await,
        };
        if let Some(conn) = probe.client.into_idle() {
            self.idle_pool().insert(target.url.clone(), conn);
        }
        (liveness, api_health, metrics)
    }

    async fn scrape(&self, target: &Target, client: &mut Client<'_>) -> MetricsSample {
        let attempt = client.get("/metrics", false, METRICS_BODY_LIMIT).await;
        let at = Instant::now();
        let parsed = match attempt.result {
            Err(failed) => Err((failed.failure, failed.detail)),
            Ok(response) if !(200..300).contains(&response.status) => Err((
                Failure::HttpStatus,
                format!("GET /metrics answered {}", response.status),
            )),
            Ok(response) => std::str::from_utf8(&response.body)
                .map_err(|err| (Failure::BadBody, format!("GET /metrics: not UTF-8: {err}")))
                .and_then(|text| {
                    metrics::parse(text)
                        .map_err(|err| (Failure::BadBody, format!("GET /metrics: {err}")))
                }),
        };
        match parsed {
            Ok(scrape) => self.history.sample(&target.tenant, &target.pod, at, scrape),
            Err((failure, detail)) => {
                tracing::debug!(tenant = %target.tenant, pod = %target.pod, %detail, "metrics scrape failed");
                metrics_failure(failure)
            }
        }
    }
}

/// The state of one probe of one pod.
#[derive(Debug)]
struct PodProbe<'a> {
    client: Client<'a>,
    settings: ProbeSettings,
    /// Set once connecting has failed for good: the remaining checks report
    /// it instead of waiting for the same failure again.
    unreachable: Option<Failed>,
}

impl PodProbe<'_> {
    async fn check(&mut self, check: Check) -> ProbeOutcome {
        if let Some(failed) = &self.unreachable {
            return failure_outcome(failed.clone(), self.settings.confirm);
        }
        let attempt = self
            .client
            .get(check.path(), false, HEALTH_BODY_LIMIT)
            .await;
        let connect_failed = attempt
            .result
            .as_ref()
            .err()
            .filter(|f| f.connecting)
            .cloned();
        let first = outcome(check, attempt);
        if !self.settings.confirm {
            self.unreachable = connect_failed;
            return first;
        }
        // Slowness matters for the API (the response-time check), not for
        // liveness, which only says up or down: a slow but answering
        // liveness probe is not repeated, and the API's confirmation comes
        // that much sooner.
        if first.ok && (check == Check::Liveness || !self.is_slow(&first)) {
            return first;
        }
        let attempt = self.client.get(check.path(), true, HEALTH_BODY_LIMIT).await;
        self.unreachable = attempt
            .result
            .as_ref()
            .err()
            .filter(|f| f.connecting)
            .cloned();
        let mut confirmation = outcome(check, attempt);
        confirmation.confirmed = true;
        confirmation
    }

    fn is_slow(&self, outcome: &ProbeOutcome) -> bool {
        let took = Duration::from_micros(outcome.connect_us.saturating_add(outcome.latency_us));
        took > self.settings.slow_threshold
    }
}

/// What a health check's response means.
fn outcome(check: Check, attempt: Attempt) -> ProbeOutcome {
    let mut outcome = ProbeOutcome {
        connect_us: attempt.connect_us,
        first_byte_us: attempt.first_byte_us,
        latency_us: attempt.latency_us,
        ..ProbeOutcome::default()
    };
    let response = match attempt.result {
        Ok(response) => response,
        Err(failed) => {
            outcome.set_failure(failed.failure);
            outcome.detail = failed.detail;
            return outcome;
        }
    };
    let path = check.path();
    outcome.status_code = response.status.into();
    if !(200..300).contains(&response.status) {
        outcome.set_failure(Failure::HttpStatus);
        outcome.detail = format!("GET {path} answered {}", response.status);
        return outcome;
    }
    if check == Check::ApiHealth {
        match serde_json::from_slice::<serde_json::Value>(&response.body) {
            Ok(body) => outcome.database_ok = body.get("database").and_then(|v| v.as_bool()),
            Err(err) => {
                outcome.set_failure(Failure::BadBody);
                outcome.detail = format!("GET {path}: body is not JSON: {err}");
                return outcome;
            }
        }
    }
    outcome.ok = true;
    outcome
}

fn failure_outcome(failed: Failed, confirmed: bool) -> ProbeOutcome {
    let mut outcome = ProbeOutcome {
        detail: failed.detail,
        confirmed,
        ..ProbeOutcome::default()
    };
    outcome.set_failure(failed.failure);
    outcome
}

fn metrics_failure(failure: Failure) -> MetricsSample {
    let mut sample = MetricsSample::default();
    sample.set_failure(failure);
    sample
}

/// The target's volume usage, if it has a volume path; a filesystem that
/// does not answer within `timeout` (a hung network mount) gives none.
async fn volume_usage(target: &Target, timeout: Duration) -> Option<StorageSample> {
    let path = target.storage_path.clone()?;
    let read = tokio::task::spawn_blocking({
        let path = path.clone();
        move || storage::volume_usage(&path)
    });
    let error = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(Ok(sample))) => return Some(sample),
        Ok(Ok(Err(err))) => err.to_string(),
        Ok(Err(join)) => join.to_string(),
        Err(_) => format!("no answer within {timeout:?}"),
    };
    tracing::warn!(
        tenant = %target.tenant,
        pod = %target.pod,
        path = %path.display(),
        %error,
        "failed to read volume usage"
    );
    None
}
