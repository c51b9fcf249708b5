//! Who leads among the coordinator replicas.
//!
//! Every replica campaigns for the store's lease ([`LeaseStore`]); the one
//! holding it leads: it records alert transitions, rollups, deployments,
//! scaling, reports and purges, and sends the notifications. The others
//! serve reads, take agents' streams and evaluate every tenant, ready to
//! take over.
//!
//! A leader renews its lease every third of the lease's length and steps
//! down on its own once the lease could have run out without a renewal
//! (measured on its monotonic clock from when it sent the last successful
//! renewal, so never later than the store's expiry). That cannot stop a
//! leader that was paused (SIGSTOP, a long GC-like stall, a frozen VM) and
//! resumes believing it still leads: its writes carry the [`Fence`] of its
//! term and the store refuses them once another replica has taken over
//! ([`crate::store::StoreError::Fenced`]); the writer then calls
//! [`Leadership::fenced`] and this replica follows.
//!
//! The Kubernetes Lease the coordinator used before is gone: it could say
//! who leads but could not stop a deposed leader's writes to the store,
//! and two sources of truth can disagree. The store's lease works the same
//! with or without a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::{Fence, Store, StoreError};

/// Flags of `serve` for leadership.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderArgs {
    /// This replica's name among the coordinators (the pod's name);
    /// default: the host name.
    #[arg(long, env = "POD_NAME")]
    pub replica_id: Option<String>,

    /// Seconds a leader's lease lasts without a renewal: the longest the
    /// replicas are without a leader after the leader dies. Renewed every
    /// third of it.
    #[arg(long, env = "KNOWTON_LEADER_LEASE_SECONDS", default_value_t = 10)]
    pub leader_lease_seconds: u64,

    /// The address the other replicas reach this one at (the pod's IP);
    /// default: the HTTP listener's address, or 127.0.0.1 when it listens
    /// on every address.
    #[arg(long, env = "POD_IP")]
    pub advertise_ip: Option<std::net::IpAddr>,

    /// Seconds between two full re-reads of the tenants, thresholds and
    /// silences that other replicas may have changed (their announcements
    /// apply at once; this catches one that was missed).
    #[arg(long, env = "KNOWTON_REPLICA_RESYNC_SECONDS", default_value_t = 30)]
    pub replica_resync_seconds: u64,
}

impl Default for LeaderArgs {
    fn default() -> Self {
        LeaderArgs {
            replica_id: None,
            leader_lease_seconds: 10,
            advertise_ip: None,
            replica_resync_seconds: 30,
        }
    }
}

/// The longest lease: a dead leader holds the others back this long.
const MAX_LEASE_SECONDS: u64 = 300;

impl LeaderArgs {
    pub fn validate(&self, errors: &mut Vec<String>) -> LeaderSettings {
        if !(2..=MAX_LEASE_SECONDS).contains(&self.leader_lease_seconds) {
            errors.push(format!(
                "--leader-lease-seconds must be between 2 and {MAX_LEASE_SECONDS}"
            ));
        }
        let replica = match &self.replica_id {
            Some(id) => id.trim().to_owned(),
            None => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "coordinator".to_owned()),
        };
        if self.replica_resync_seconds == 0 {
            errors.push("--replica-resync-seconds must be at least 1".to_owned());
        }
        if replica.is_empty()
            || replica.len() > 253
            || !replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            errors
                .push("--replica-id must be 1 to 253 letters, digits, '-', '.' or '_'".to_owned());
        }
        LeaderSettings {
            replica,
            lease: Duration::from_secs(self.leader_lease_seconds.clamp(2, MAX_LEASE_SECONDS)),
            advertise_ip: self.advertise_ip,
            resync_every: Duration::from_secs(self.replica_resync_seconds.max(1)),
        }
    }
}

/// How a replica campaigns.
#[derive(Debug, Clone)]
pub struct LeaderSettings {
    /// The replica's name (the pod's name in a cluster, else the host's).
    /// A random suffix is added per process, so that a restarted replica
    /// never continues its predecessor's term.
    pub replica: String,
    /// How long a term lasts without a renewal.
    pub lease: Duration,
    /// Where the other replicas reach this one.
    pub advertise_ip: Option<std::net::IpAddr>,
    /// How often what other replicas change is read again in full.
    pub resync_every: Duration,
}

impl LeaderSettings {
    /// Renewals come this often, so that two can fail before the lease
    /// runs out.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// This replica's view of leadership; cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    term: watch::Receiver<Option<Fence>>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// `replica#suffix`: the holder name this process campaigns under.
    holder: String,
    /// `--replica-id`.
    replica: String,
    /// How often the lease is renewed (and replicas beat).
    renew_every: Duration,
    /// Steps down when a write is fenced.
    term: watch::Sender<Option<Fence>>,
    fenced_writes: AtomicU64,
    /// The lease's epoch when this replica last read it (0: never).
    seen_epoch: AtomicI64,
}

impl Leadership {
    /// Leads from the start in `epoch`, without a store lease: for tests of
    /// parts that only need to know whether they lead.
    pub fn fixed(epoch: i64) -> Leadership {
        let settings = LeaderSettings {
            replica: "fixed".to_owned(),
            lease: Duration::from_secs(10),
            advertise_ip: None,
            resync_every: Duration::from_secs(30),
        };
        Self::new(&settings, "0", Some(Fence { epoch }))
    }

    fn new(settings: &LeaderSettings, suffix: &str, initial: Option<Fence>) -> Leadership {
        let (tx, term) = watch::channel(initial);
        Leadership {
            term,
            shared: Arc::new(Shared {
                holder: format!("{}#{suffix}", settings.replica),
                replica: settings.replica.clone(),
                renew_every: settings.renew_every(),
                seen_epoch: AtomicI64::new(initial.map_or(0, |f| f.epoch)),
                term: tx,
                fenced_writes: AtomicU64::new(0),
            }),
        }
    }

    /// Starts campaigning for the store's lease until `shutdown`, then
    /// resigns a term it holds so that another replica takes over at once.
    /// With `alone` (one process owns the store: SQLite under its file
    /// lock), the lease is taken at once whoever held it last.
    pub async fn campaign(
        store: Arc<dyn Store>,
        settings: LeaderSettings,
        alone: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Leadership, tokio::task::JoinHandle<()>), StoreError> {
        let suffix = Uuid::new_v4().simple().to_string();
        let leadership = Self::new(&settings, &suffix[..8], None);
        if alone && let Some(term) = store.term().await? {
            // The last holder is gone (this process has the file lock):
            // end its term rather than wait for it to run out.
            store.resign(&term.holder, term.epoch).await?;
        }
        let mut campaign = Campaign {
            store,
            settings,
            shared: leadership.shared.clone(),
            deadline: None,
        };
        // The first round before returning: a lone coordinator leads from
        // its first request on.
        campaign.round().await;
        let task = tokio::spawn(campaign.run(shutdown));
        Ok((leadership, task))
    }

    /// The term this replica leads in, if it leads.
    pub fn fence(&self) -> Option<Fence> {
        *self.term.borrow()
    }

    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    /// The holder name this process campaigns under.
    pub fn holder(&self) -> &str {
        &self.shared.holder
    }

    /// `--replica-id`.
    pub fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// How often the lease is renewed; replicas beat as often.
    pub fn renew_every(&self) -> Duration {
        self.shared.renew_every
    }

    /// A receiver that follows the term this replica leads in.
    pub fn subscribe(&self) -> watch::Receiver<Option<Fence>> {
        self.term.clone()
    }

    /// Resolves once this replica leads; never if the campaign has stopped.
    pub async fn acquired(&self) -> Option<Fence> {
        let mut term = self.term.clone();
        let led = term.wait_for(Option::is_some).await.ok()?;
        *led
    }

    /// A write made in `fence`'s term was refused: another replica leads.
    /// Counts it and steps down (unless this replica has since started
    /// another term).
    pub fn fenced(&self, fence: Fence) {
        self.shared.fenced_writes.fetch_add(1, Ordering::Relaxed);
        let stepped_down = self.shared.term.send_if_modified(|term| {
            if *term == Some(fence) {
                *term = None;
                true
            } else {
                false
            }
        });
        if stepped_down {
            tracing::warn!(
                holder = %self.shared.holder,
                epoch = fence.epoch,
                "a write was fenced: another replica leads; stepping down"
            );
        }
    }

    /// The lease's epoch as this replica last read it, whoever leads in it
    /// (0 before the first campaign).
    pub fn epoch(&self) -> i64 {
        self.shared.seen_epoch.load(Ordering::Relaxed)
    }

    /// Writes refused because their term had ended.
    pub fn fenced_writes(&self) -> u64 {
        self.shared.fenced_writes.load(Ordering::Relaxed)
    }
}

/// The campaign task's state.
struct Campaign {
    store: Arc<dyn Store>,
    settings: LeaderSettings,
    shared: Arc<Shared>,
    /// While leading: when the lease could have run out, on this
    /// process's monotonic clock.
    deadline: Option<Instant>,
}

impl Campaign {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = Instant::now() + self.settings.renew_every();
            let wake = self.deadline.map_or(next, |d| d.min(next));
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.step_down_if_expired();
            self.round().await;
        }
        let held = self.shared.term.send_replace(None);
        if let Some(fence) = held {
            match self.store.resign(&self.shared.holder, fence.epoch).await {
                Ok(()) => {
                    tracing::info!(holder = %self.shared.holder, epoch = fence.epoch, "resigned the lease")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "failed to resign the lease; it runs out on its own")
                }
            }
        }
    }

    /// One campaign: take or renew the lease, and say what came of it.
    async fn round(&mut self) {
        let sent = Instant::now();
        // A store that does not answer must not keep a leader past its
        // lease: the attempt ends at the deadline at the latest.
        let limit = self
            .deadline
            .map_or(self.settings.renew_every(), |d| {
                d.saturating_duration_since(sent)
            })
            .max(Duration::from_millis(100));
        let attempt = self
            .store
            .campaign(&self.shared.holder, self.settings.lease);
        let outcome = tokio::time::timeout(limit, attempt).await;
        if let Ok(Ok(term)) = &outcome {
            self.shared.seen_epoch.store(term.epoch, Ordering::Relaxed);
        }
        match outcome {
            Ok(Ok(term)) if term.holder == self.shared.holder => {
                self.deadline = Some(sent + term.remaining());
                let fence = Some(Fence { epoch: term.epoch });
                // Subscribers hear of a new term, not of each renewal of
                // the one they know: the deployer reconciles every tenant
                // when told it leads, and did so at every renewal.
                let new = self.shared.term.send_if_modified(|held| {
                    let new = *held != fence;
                    *held = fence;
                    new
                });
                if new {
                    tracing::info!(holder = %self.shared.holder, epoch = term.epoch, "leading");
                }
            }
            Ok(Ok(term)) => {
                self.deadline = None;
                if self.shared.term.send_replace(None).is_some() {
                    tracing::warn!(leader = %term.holder, epoch = term.epoch, "another replica took the lease; following");
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "failed to campaign for the lease");
                self.step_down_if_expired();
            }
            Err(_) => {
                tracing::warn!("the store did not answer the campaign in time");
                self.step_down_if_expired();
            }
        }
    }

    fn step_down_if_expired(&mut self) {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.deadline = None;
            if self.shared.term.send_replace(None).is_some() {
                tracing::warn!(holder = %self.shared.holder, "the lease ran out without a renewal; stepping down");
            }
        }
    }
}
