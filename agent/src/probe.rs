//! Probes one tenant pod: API health (with its database), liveness and a
//! metrics scrape at the same time, each on its own keep-alive connection,
//! plus its volume usage.
//!
//! Timings in each [`ProbeOutcome`] are microseconds: `connect_us` is the
//! TCP connect paid by that request (0 when it reused a kept connection),
//! `first_byte_us` runs from sending the request to the response head and
//! `latency_us` to the end of the body.
//!
//! Confirmation runs beside the first request, on a second connection:
//! API health is always asked twice at once (its slow verdict cannot wait
//! for a second try), liveness a second time as soon as the first fails.
//! A check is reported failed only when both requests failed (the second
//! one's outcome, `confirmed`), and the API slow only when neither request
//! answered within the threshold. That slow verdict is handed to the
//! caller the moment the threshold passes (see [`Prober::probe_reporting`]),
//! without waiting for the slow answer, whose time the final result
//! carries.

pub(crate) mod http;
pub(crate) mod metrics;
mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use knowton_proto::agent::v1::{Failure, MetricsSample, PodResult, ProbeOutcome, StorageSample};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::discover::Target;
use crate::instructions::SlowThresholds;
use crate::storage;
use http::{Attempt, Client, Endpoint, Failed};
pub use pool::IdleClosed;
use pool::{MAX_IDLE_PER_POD, Pools};

/// Largest `/health` or `/api/health` body read.
const HEALTH_BODY_LIMIT: usize = 64 * 1024;
/// Largest `/metrics` body read.
const METRICS_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// How a [`Prober`] probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Bound on each request, connecting included.
    pub timeout: Duration,
    /// An API health check with no answer within this is slow, unless the
    /// coordinator sent thresholds (see [`Prober::set_slow_thresholds`]).
    pub slow_threshold: Duration,
    /// Confirm a failed or slow check on a second connection before
    /// reporting it.
    pub confirm: bool,
}

/// Probes pods (callers bound the concurrency), remembers each pod's
/// previous scrape to derive request rates, and keeps each pod's
/// connections open between probes: a new TCP connection per request
/// would be most of the agent's CPU.
#[derive(Debug)]
pub struct Prober {
    settings: Mutex<ProbeSettings>,
    /// The coordinator's per-tenant slow thresholds, once it sent them.
    slow: Mutex<Option<SlowThresholds>>,
    history: metrics::History,
    /// Idle keep-alive connections by pod URL; a probe takes its pod's
    /// connections and gives them back when done.
    pools: Pools,
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

/// A boxed request in flight, borrowing its client.
type InFlight<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

impl Prober {
    /// A prober that keeps idle connections without watching them.
    pub fn new(settings: ProbeSettings) -> Self {
        Prober {
            settings: Mutex::new(settings),
            slow: Mutex::new(None),
            history: metrics::History::default(),
            pools: Pools::default(),
        }
    }

    /// A prober that watches one idle connection per pod between probes
    /// and says on the returned channel when a pod closes or resets it.
    pub fn watching(settings: ProbeSettings) -> (Self, mpsc::UnboundedReceiver<IdleClosed>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let prober = Prober {
            pools: Pools::watching(tx),
            ..Prober::new(settings)
        };
        (prober, rx)
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
        self.pools.retain(|url| urls.contains(url));
    }

    /// Idle connections kept for the next probe (watched ones included).
    pub fn idle_connections(&self) -> usize {
        self.pools.len()
    }

    /// Probes `target` and reports every check; failures are in the result,
    /// never an error.
    pub async fn probe(&self, target: &Target) -> PodResult {
        self.probe_reporting(target, |_| {}).await
    }

    /// [`Self::probe`], handing `slow` the slow verdict as soon as the slow
    /// threshold passes with no answer to API health: a result whose
    /// `api_health` is `pending` (see the protocol), with liveness as far
    /// as it is known. The result returned at the end has the answers.
    pub async fn probe_reporting(
        &self,
        target: &Target,
        slow: impl FnOnce(PodResult) + Send,
    ) -> PodResult {
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
                    self.checks(target, &endpoint, settings, &result, slow)
                        .await
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

    /// After the pod closed its watched idle connection cleanly: asks its
    /// liveness on a new connection. An answer means a routine close (a
    /// keep-alive timeout): the connection is kept and there is nothing to
    /// report. Anything else is probed in full at once, for the result.
    pub async fn recheck(&self, target: &Target) -> Option<PodResult> {
        let settings = self.settings_for(&target.tenant);
        if let Ok(endpoint) = Endpoint::parse(&target.url) {
            let mut client = Client::new(&endpoint, settings.timeout, None);
            let attempt = client
                .get(Check::Liveness.path(), true, HEALTH_BODY_LIMIT)
                .await;
            if outcome(Check::Liveness, attempt).ok {
                if let Some(conn) = client.into_quiet_idle() {
                    self.pools.put(&target.url, conn);
                }
                return None;
            }
        }
        Some(self.probe(target).await)
    }

    async fn checks(
        &self,
        target: &Target,
        endpoint: &Endpoint,
        settings: ProbeSettings,
        so_far: &PodResult,
        slow: impl FnOnce(PodResult) + Send,
    ) -> (ProbeOutcome, ProbeOutcome, MetricsSample) {
        let mut conns = self.pools.take(&target.url, MAX_IDLE_PER_POD).await;
        let mut client = || Client::new(endpoint, settings.timeout, conns.pop());
        // API health first (it decides the slow verdict), then liveness,
        // then metrics: started in that order, none waiting for another.
        let (mut api, mut api_confirm) = (client(), client());
        let (mut live, mut scrape) = (client(), client());
        // Needed only when liveness fails: a new connection then.
        let mut live_confirm = client();
        let liveness_seen: Mutex<Option<ProbeOutcome>> = Mutex::new(None);
        let verdict = |waited: Duration, confirmed: bool| {
            let pending = ProbeOutcome {
                ok: true,
                pending: true,
                latency_us: micros(waited),
                confirmed,
                ..ProbeOutcome::default()
            };
            let liveness = lock(&liveness_seen)
                .clone()
                .unwrap_or_else(|| pending.clone());
            slow(PodResult {
                liveness: Some(liveness),
                api_health: Some(pending),
                metrics: None,
                storage: None,
                ..so_far.clone()
            });
        };
        let api_check = confirmed_check(
            Check::ApiHealth,
            (&mut api, &mut api_confirm),
            settings,
            Some(Duration::ZERO),
            Some(verdict),
        );
        let liveness_check = async {
            let outcome = confirmed_check(
                Check::Liveness,
                (&mut live, &mut live_confirm),
                settings,
                None,
                None::<fn(Duration, bool)>,
            )
            .await;
            *lock(&liveness_seen) = Some(outcome.clone());
            outcome
        };
        let metrics = self.scrape(target, &mut scrape);
        let (api_health, liveness, metrics) = tokio::join!(api_check, liveness_check, metrics);
        for client in [api, api_confirm, live, live_confirm, scrape] {
            if let Some(conn) = client.into_idle() {
                self.pools.put(&target.url, conn);
            }
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One health check with its confirmation on a second connection, started
/// `hedge` after the first request (`None`: only if the first fails) or as
/// soon as the first fails. The first request is reported as it is when it
/// answers well in time; otherwise the confirmation is (`confirmed`), and a
/// confirmation that answers well in time wins. `slow` is called once the
/// slow threshold passes with no answer in time (with how long it waited
/// and whether the confirmation runs); without confirmation (settings),
/// the first request alone decides.
async fn confirmed_check(
    check: Check,
    (first, second): (&mut Client<'_>, &mut Client<'_>),
    settings: ProbeSettings,
    hedge: Option<Duration>,
    slow: Option<impl FnOnce(Duration, bool)>,
) -> ProbeOutcome {
    let started = Instant::now();
    let slow_at = started + settings.slow_threshold;
    let hedge_at = hedge.filter(|_| settings.confirm).map(|h| started + h);
    let path = check.path();
    // Liveness only says up or down: an answer is in time whenever it comes.
    let in_time = |o: &ProbeOutcome| {
        o.ok && (check == Check::Liveness
            || Duration::from_micros(o.connect_us.saturating_add(o.latency_us))
                <= settings.slow_threshold)
    };
    let mut slow = slow;
    let mut one: InFlight<'_> = Box::pin(first.get(path, false, HEALTH_BODY_LIMIT));
    let mut second = Some(second);
    // Confirmation from the start: sent right after the first request.
    let mut two: Option<InFlight<'_>> = match hedge_at {
        Some(at) if at <= started => second
            .take()
            .map(|client| Box::pin(client.get(path, false, HEALTH_BODY_LIMIT)) as InFlight<'_>),
        _ => None,
    };
    let (mut first_outcome, mut second_outcome) = (None::<ProbeOutcome>, None::<ProbeOutcome>);
    let mut past_threshold = false;
    loop {
        if !past_threshold && Instant::now() >= slow_at {
            past_threshold = true;
            let answered = first_outcome.iter().chain(&second_outcome).any(&in_time);
            if !answered && let Some(slow) = slow.take() {
                slow(started.elapsed(), two.is_some());
            }
        }
        let two_done = two.is_none() || second_outcome.is_some();
        if let Some(o) = first_outcome.as_ref().filter(|o| in_time(o))
            && (two_done || past_threshold)
        {
            return o.clone();
        }
        if let Some(o) = second_outcome.as_ref().filter(|o| in_time(o))
            && (first_outcome.is_some() || past_threshold)
        {
            let mut o = o.clone();
            o.confirmed = true;
            return o;
        }
        if let Some(first) = &first_outcome {
            if !settings.confirm {
                return first.clone();
            }
            if two.is_none() {
                // Failed, or answered too late: confirm now.
                if let Some(client) = second.take() {
                    two = Some(Box::pin(client.get(path, false, HEALTH_BODY_LIMIT)));
                }
            } else if let Some(confirmation) = &second_outcome {
                let mut o = confirmation.clone();
                o.confirmed = true;
                return o;
            }
        }
        tokio::select! {
            attempt = &mut one, if first_outcome.is_none() => {
                first_outcome = Some(outcome(check, attempt));
            }
            attempt = maybe(two.as_mut()), if two.is_some() && second_outcome.is_none() => {
                second_outcome = Some(outcome(check, attempt));
            }
            () = sleep_until_opt(hedge_at), if two.is_none() && first_outcome.is_none() && hedge_at.is_some() => {
                if let Some(client) = second.take() {
                    two = Some(Box::pin(client.get(path, false, HEALTH_BODY_LIMIT)));
                }
            }
            // The slow verdict, at the top of the loop.
            () = tokio::time::sleep_until(slow_at), if !past_threshold => {}
        }
    }
}

async fn maybe(fut: Option<&mut InFlight<'_>>) -> Attempt {
    match fut {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
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
