//! Leader election over a Kubernetes Lease (with `kube-lease-manager`):
//! with several coordinator replicas only the holder deploys, reconciles,
//! scales and sends notifications; the others serve reads and ingest.

use tokio::sync::watch;

use super::cluster::Cluster;

#[derive(Debug, Clone)]
pub struct LeaderSettings {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// Seconds a lease lasts without renewal.
    pub duration_seconds: u64,
    /// Seconds of clock skew tolerated before taking over.
    pub grace_seconds: u64,
}

/// Who leads.
#[derive(Debug, Clone)]
pub struct Leadership {
    leader: watch::Receiver<bool>,
}

impl Leadership {
    /// A lone coordinator (no cluster): always the leader.
    pub fn alone() -> Leadership {
        let (_, leader) = watch::channel(true);
        Leadership { leader }
    }

    /// Campaigns for the Lease until `shutdown`, then releases it.
    pub async fn elect(
        cluster: &Cluster,
        settings: &LeaderSettings,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Leadership, kube_lease_manager::LeaseManagerError> {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(
            cluster.client().clone(),
            settings.lease_name.clone(),
        )
        .with_namespace(settings.namespace.clone())
        .with_identity(settings.identity.clone())
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .with_field_manager(format!("{}-lease", super::cluster::FIELD_MANAGER))
        .build()
        .await?;
        let (mut theirs, task) = manager.watch().await;
        // Ours follows theirs; only the task below holds theirs, so that
        // dropping it at shutdown makes the manager release the lease and
        // another replica takes over at once.
        let (ours, leader) = watch::channel(*theirs.borrow_and_update());
        let identity = settings.identity.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = theirs.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let leads = *theirs.borrow_and_update();
                        ours.send_replace(leads);
                        tracing::info!(identity = %identity, leader = leads, "leadership changed");
                    }
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
            }
            ours.send_replace(false);
            drop(theirs);
            match task.await {
                Ok(Ok(_)) => tracing::info!(identity = %identity, "lease released"),
                Ok(Err(err)) => tracing::warn!(error = %err, "leader election stopped"),
                Err(err) => tracing::error!(error = %err, "leader election panicked"),
            }
        });
        Ok(Leadership { leader })
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver that follows leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&self) {
        let mut leader = self.leader.clone();
        let _ = leader.wait_for(|l| *l).await;
    }
}
