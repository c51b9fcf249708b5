//! The delivery worker: claims due outbox rows, delivers each on its own,
//! and records the outcome.
//!
//! - Each channel has its own concurrency limit, so a receiver that hangs
//!   or fails (Slack, say) never holds up another channel's deliveries.
//! - It sleeps until the next row is due, or until [`Wakeup::poke`] says
//!   something was enqueued, or a delivery finished: no polling interval.
//! - A claim is a lease (`claimed_until`), taken with `FOR UPDATE SKIP
//!   LOCKED` on PostgreSQL, so coordinators sharing a database never
//!   deliver a row twice at once, and a crashed coordinator's rows are
//!   delivered by the next one once the lease runs out.
//! - A row is marked delivered only after the receiver accepted it: at
//!   least once, with the idempotency key for receivers to drop repeats.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use rand::RngExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::email::{Mailer, MailerError};
use super::http::HttpSender;
use super::welcome::EmailBody;
use super::{Attempt, Channel, HttpDelivery, NotifyService, RetryPolicy, outbox_context};
use crate::leader::Leadership;
use crate::store::{ClaimedMessage, DeliveryOutcome, Fence, now};

/// Deliveries in flight at once, per channel.
const PER_CHANNEL: usize = 8;
/// Shortest sleep when rows are due but none could be claimed (every slot
/// busy, or another coordinator is claiming them right now).
const BUSY_WAIT: Duration = Duration::from_millis(200);
/// Longest sleep with nothing due: a safety net only (a poke or a due
/// time wakes the worker sooner).
const IDLE_WAIT: Duration = Duration::from_secs(300);

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`: `base` doubled per attempt
    /// made, at most `max`, with "equal jitter" (between half and all of it)
    /// so that messages that failed together do not retry together.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .base
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max);
        let half = full / 2;
        let jitter =
            rand::rng().random_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_micros(jitter)
    }

    /// What to record after `attempt` on a row enqueued at `created_at`
    /// with `attempts` made before: retry at the backoff (or at what
    /// `Retry-After` asked), no later than the maximum age; dead-letter
    /// when that has passed or cannot be honoured.
    pub fn outcome(
        &self,
        attempt: Attempt,
        attempts: i64,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DeliveryOutcome {
        let (error, asked) = match attempt {
            Attempt::Delivered => return DeliveryOutcome::Delivered,
            Attempt::Permanent { error } => return DeliveryOutcome::Failed { error },
            Attempt::Retry { error, after } => (error, after),
        };
        let made = attempts.saturating_add(1);
        let deadline = created_at
            .checked_add_signed(chrono_duration(self.max_age))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if now >= deadline {
            return DeliveryOutcome::Failed {
                error: format!(
                    "not delivered within {}s ({made} attempts); last error: {error}",
                    self.max_age.as_secs()
                ),
            };
        }
        let at = now
            .checked_add_signed(chrono_duration(asked.unwrap_or_else(|| self.backoff(made))))
            .map_or(DateTime::<Utc>::MAX_UTC, ceil_micros);
        match asked {
            Some(wait) if at > deadline => DeliveryOutcome::Failed {
                error: format!(
                    "the receiver asked to retry in {}s, past the maximum age of {}s; last error: {error}",
                    wait.as_secs(),
                    self.max_age.as_secs()
                ),
            },
            _ => DeliveryOutcome::Retry {
                at: at.min(deadline),
                error,
            },
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Rounds up to the microseconds the store keeps, so that a retry is
/// never stored earlier than asked.
fn ceil_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let truncated = t.trunc_subsecs(6);
    if truncated < t {
        truncated
            .checked_add_signed(chrono::Duration::microseconds(1))
            .unwrap_or(truncated)
    } else {
        truncated
    }
}

/// The delivery worker, set up (its SMTP client built, the CA read) but
/// not yet running.
#[derive(Debug)]
pub struct Deliveries(Arc<Worker>);

impl Deliveries {
    pub fn new(service: Arc<NotifyService>) -> Result<Self, MailerError> {
        let settings = service.settings();
        let mailer = settings
            .smtp
            .as_ref()
            .map(|smtp| Mailer::new(smtp, settings.timeout))
            .transpose()?;
        Ok(Deliveries(Arc::new(Worker {
            http: HttpSender::new(settings),
            mailer,
            // Long enough for an attempt to finish and be recorded.
            lease: settings.timeout * 2 + Duration::from_secs(10),
            permits: Channel::ALL
                .iter()
                .map(|_| Arc::new(Semaphore::new(PER_CHANNEL)))
                .collect(),
            service,
        })))
    }

    /// Starts delivering; stops when `stop` turns true, after letting
    /// in-flight deliveries finish for up to `grace`.
    /// Delivers while this replica leads (one replica sends), until `stop`.
    pub fn spawn(
        self,
        stop: watch::Receiver<bool>,
        grace: Duration,
        leadership: Leadership,
    ) -> JoinHandle<()> {
        match &self.0.service.settings().smtp {
            Some(smtp) => {
                tracing::info!(smtp = %smtp.display(), "notification e-mail goes through SMTP")
            }
            None => {
                tracing::info!("no SMTP server configured (--smtp-url): e-mail waits in the outbox")
            }
        }
        tokio::spawn(
            self.0
                .run(stop, grace, leadership.subscribe())
                .instrument(tracing::info_span!("notify")),
        )
    }
}

#[derive(Debug)]
struct Worker {
    service: Arc<NotifyService>,
    mailer: Option<Mailer>,
    http: HttpSender,
    lease: Duration,
    /// One semaphore per entry of [`Channel::ALL`].
    permits: Vec<Arc<Semaphore>>,
}

impl Worker {
    async fn run(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
        grace: Duration,
        mut leader: watch::Receiver<Option<Fence>>,
    ) {
        let mut inflight = JoinSet::new();
        let mut store_failures = 0u32;
        loop {
            if *stop.borrow() {
                break;
            }
            if leader.borrow().is_none() {
                tracing::info!(
                    "not the leader: notifications are sent by the replica holding the lease"
                );
                tokio::select! {
                    led = leader.wait_for(Option::is_some) => if led.is_err() { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
            let (claimed, failed) = self.claim(&mut inflight).await;
            if claimed > 0 {
                // There may be more due than the batch took.
                continue;
            }
            let wake_at = if failed {
                store_failures += 1;
                Instant::now() + Duration::from_secs(1u64 << store_failures.min(5))
            } else {
                store_failures = 0;
                self.next_wake().await
            };
            tokio::select! {
                _ = self.service.wakeup().wait() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Err(err) = done
                        && err.is_panic()
                    {
                        tracing::error!(error = %err, "a notification delivery panicked");
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if !inflight.is_empty() {
            tracing::info!(
                in_flight = inflight.len(),
                "shutdown: finishing notification deliveries"
            );
            let drained = tokio::time::timeout(grace, async {
                while inflight.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                // Their leases run out and they are delivered after the restart.
                inflight.abort_all();
            }
        }
    }

    /// Claims as many due rows per channel as it has free slots and
    /// starts delivering them; returns how many, and whether the store failed.
    async fn claim(self: &Arc<Self>, inflight: &mut JoinSet<()>) -> (usize, bool) {
        let store = self.service.store();
        let at = now();
        let lease_until = at + chrono_duration(self.lease);
        let mut claimed = 0;
        let mut failed = false;
        for (&channel, permits) in Channel::ALL.iter().zip(&self.permits) {
            if channel == Channel::Email && self.mailer.is_none() {
                continue;
            }
            let free = permits.available_permits();
            if free == 0 {
                continue;
            }
            let rows = match store
                .claim_due(channel, at, lease_until, u32::try_from(free).unwrap_or(1))
                .await
            {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(channel = channel.as_str(), error = %knowton_common::error_chain(&err), "failed to claim due notifications");
                    failed = true;
                    continue;
                }
            };
            for row in rows {
                claimed += 1;
                let worker = self.clone();
                let permits = permits.clone();
                inflight.spawn(
                    async move {
                        // Free at claim time; waits only if the store
                        // returned more rows than asked for.
                        let Ok(_permit) = permits.acquire_owned().await else {
                            return;
                        };
                        worker.deliver(row).await;
                    }
                    .in_current_span(),
                );
            }
        }
        (claimed, failed)
    }

    /// When to look again: the next due time, or soon if rows are due
    /// that could not be claimed.
    async fn next_wake(&self) -> Instant {
        let at = now();
        match self
            .service
            .store()
            .next_due(self.mailer.is_some(), at)
            .await
        {
            Ok(Some(due)) => {
                let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                Instant::now()
                    + (wait + Duration::from_millis(1)).max(if due <= at {
                        BUSY_WAIT
                    } else {
                        Duration::ZERO
                    })
            }
            Ok(None) => Instant::now() + IDLE_WAIT,
            Err(err) => {
                tracing::warn!(error = %knowton_common::error_chain(&err), "failed to read the next notification due time");
                Instant::now() + Duration::from_secs(1)
            }
        }
    }

    /// One attempt on one claimed row, and its outcome recorded.
    async fn deliver(&self, row: ClaimedMessage) {
        if row.attempts == 0
            && let Some(cause) = row.caused_at
        {
            self.service
                .metrics()
                .first_attempt
                .with_label_values(&[row.channel.as_str()])
                .observe((now() - cause).as_seconds_f64().max(0.0));
        }
        let timeout = self.service.settings().timeout;
        let attempt = tokio::time::timeout(timeout + Duration::from_secs(5), self.attempt(&row))
            .await
            .unwrap_or_else(|_| Attempt::Retry {
                error: format!("timed out after {}s", timeout.as_secs()),
                after: None,
            });
        let at = now();
        let outcome =
            self.service
                .settings()
                .retry
                .outcome(attempt, row.attempts, row.created_at, at);
        let attempts = row.attempts + 1;
        let metrics = self.service.metrics();
        let outcome_label = match &outcome {
            DeliveryOutcome::Delivered => {
                metrics
                    .delay
                    .with_label_values(&[row.channel.as_str()])
                    .observe((at - row.created_at).as_seconds_f64().max(0.0));
                "delivered"
            }
            DeliveryOutcome::Retry { .. } => "retried",
            DeliveryOutcome::Failed { .. } => "failed",
        };
        metrics
            .outcomes
            .with_label_values(&[row.channel.as_str(), outcome_label])
            .inc();
        match &outcome {
            DeliveryOutcome::Delivered => tracing::info!(
                message_id = %row.id, tenant_id = ?row.tenant_id, kind = %row.kind,
                channel = %row.channel, recipient = %row.recipient, attempts,
                "notification delivered"
            ),
            DeliveryOutcome::Retry { at: next, error } => tracing::warn!(
                message_id = %row.id, tenant_id = ?row.tenant_id, channel = %row.channel,
                recipient = %row.recipient, attempts, next_attempt_at = %next, error = %error,
                "notification not delivered; will retry"
            ),
            DeliveryOutcome::Failed { error } => tracing::error!(
                message_id = %row.id, tenant_id = ?row.tenant_id, kind = %row.kind,
                channel = %row.channel, recipient = %row.recipient, attempts, error = %error,
                "notification dead-lettered: it will not be delivered"
            ),
        }
        if let Err(err) = self
            .service
            .store()
            .record_delivery(row.id, &outcome, at)
            .await
        {
            // The lease runs out and the row is attempted again: at least once.
            tracing::error!(message_id = %row.id, error = %knowton_common::error_chain(&err), "failed to record a notification delivery");
        }
        // The worker wakes when this task ends and looks at due times again.
    }

    async fn attempt(&self, row: &ClaimedMessage) -> Attempt {
        let body = match self
            .service
            .secrets()
            .open(&row.sealed_body, &outbox_context(row.id))
        {
            Ok(body) => body,
            Err(err) => {
                return Attempt::Permanent {
                    error: format!("the sealed body does not open: {err}"),
                };
            }
        };
        let malformed = |err: serde_json::Error| Attempt::Permanent {
            error: format!("the sealed body is not a {} message: {err}", row.channel),
        };
        match row.channel {
            Channel::Email => {
                let email: EmailBody = match serde_json::from_slice(&body) {
                    Ok(email) => email,
                    Err(err) => return malformed(err),
                };
                match &self.mailer {
                    Some(mailer) => {
                        mailer
                            .send(&row.recipient, &row.subject, &email, &row.idempotency_key)
                            .await
                    }
                    None => Attempt::Retry {
                        error: super::NO_SMTP.to_owned(),
                        after: None,
                    },
                }
            }
            Channel::Webhook | Channel::Slack => {
                match serde_json::from_slice::<HttpDelivery>(&body) {
                    Ok(delivery) => self.http.post(&delivery, &row.idempotency_key).await,
                    Err(err) => malformed(err),
                }
            }
        }
    }
}
