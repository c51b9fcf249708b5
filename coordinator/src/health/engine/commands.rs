//! Operators' actions (resolve, acknowledge, thresholds, silences, evaluate all), sent to the engine's task and answered in turn.

use super::*;
use crate::store::Change;

/// What an operator may do to an open alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorAction {
    /// Resolve it by hand; its resolution is notified if it fired. A
    /// breach that goes on opens a new alert.
    Resolve,
    /// No more reminders; it stays open until it resolves.
    Acknowledge,
}

/// What the API asks of the engine.
#[derive(Debug)]
pub(super) enum Command {
    Act {
        action: OperatorAction,
        id: Uuid,
        actor: String,
        note: Option<String>,
        reply: oneshot::Sender<Result<AlertRow, EngineError>>,
    },
    SetThresholds {
        tenant: Uuid,
        thresholds: Option<Thresholds>,
        actor: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    CreateSilence {
        silence: Silence,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    EndSilence {
        id: Uuid,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Evaluates every active tenant now.
    EvaluateAll { reply: oneshot::Sender<()> },
    /// Drops what is kept of a tenant that is no longer active.
    Forget {
        slug: String,
        reply: oneshot::Sender<()>,
    },
    /// Reads again what another replica changed.
    Reload {
        what: Reload,
        reply: oneshot::Sender<()>,
    },
}

/// What the engine keeps that a change made elsewhere (another replica)
/// makes stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The tenant's record (plan, features, status): read again and the
    /// tenant evaluated at once.
    Tenant(String),
    /// The tenant's thresholds.
    Thresholds(Uuid),
    /// The active silences.
    Silences,
    /// All of it: thresholds, silences, every tenant's record.
    Everything,
}

impl Engine {
    pub(super) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.published
            .commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// An operator's action on an open alert, kept with who did it and
    /// their note.
    pub async fn act(
        &self,
        action: OperatorAction,
        id: Uuid,
        actor: &str,
        note: Option<String>,
    ) -> Result<AlertRow, EngineError> {
        let actor = actor.to_owned();
        self.ask(|reply| Command::Act {
            action,
            id,
            actor,
            note,
            reply,
        })
        .await?
    }

    /// Sets (or with `None` resets) a tenant's thresholds and re-evaluates it.
    pub async fn set_thresholds(
        &self,
        tenant: Uuid,
        thresholds: Option<Thresholds>,
        actor: &str,
    ) -> Result<(), EngineError> {
        let actor = actor.to_owned();
        self.ask(|reply| Command::SetThresholds {
            tenant,
            thresholds,
            actor,
            reply,
        })
        .await?
    }

    pub async fn create_silence(&self, silence: Silence) -> Result<(), EngineError> {
        self.ask(|reply| Command::CreateSilence { silence, reply })
            .await?
    }

    pub async fn end_silence(&self, id: Uuid) -> Result<(), EngineError> {
        self.ask(|reply| Command::EndSilence { id, reply }).await?
    }

    /// Evaluates every active tenant now (after a check-all's fresh results).
    pub async fn evaluate_all(&self) -> Result<(), EngineError> {
        self.ask(|reply| Command::EvaluateAll { reply }).await
    }

    /// Drops everything kept of a tenant that was deprovisioned or purged
    /// (its cached record, alert slots, results and published health).
    pub async fn forget(&self, slug: &str) -> Result<(), EngineError> {
        let slug = slug.to_owned();
        self.ask(|reply| Command::Forget { slug, reply }).await
    }

    /// Reads again what a change made elsewhere made stale.
    pub async fn reload(&self, what: Reload) -> Result<(), EngineError> {
        self.ask(|reply| Command::Reload { what, reply }).await
    }

    /// The thresholds a tenant is evaluated against.
    pub fn thresholds_of(&self, slug: &str) -> Option<Thresholds> {
        self.tenant(slug).map(|h| h.thresholds)
    }
}

impl Runner {
    pub(super) async fn command(&mut self, command: Command) {
        match command {
            Command::Act {
                action,
                id,
                actor,
                note,
                reply,
            } => {
                let done = match action {
                    OperatorAction::Resolve => self.resolve_by_hand(id, &actor, note).await,
                    OperatorAction::Acknowledge => self.acknowledge(id, &actor, note).await,
                };
                let _ = reply.send(done);
            }
            Command::SetThresholds {
                tenant,
                thresholds,
                actor,
                reply,
            } => {
                let result = self
                    .store
                    .set_thresholds(tenant, thresholds.as_ref(), &actor)
                    .await
                    .map_err(EngineError::from);
                if result.is_ok() {
                    match thresholds {
                        Some(t) => self.thresholds.insert(tenant, t),
                        None => self.thresholds.remove(&tenant),
                    };
                    self.evaluate_tenant(tenant).await;
                    self.announce(Change::Thresholds { tenant }).await;
                }
                let _ = reply.send(result);
            }
            Command::CreateSilence { silence, reply } => {
                let created = self.create_silence(silence).await;
                if created.is_ok() {
                    self.announce(Change::Silences).await;
                }
                let _ = reply.send(created);
            }
            Command::EndSilence { id, reply } => {
                let now = self.clock.now();
                let result = match self.store.end_silence(id, now).await {
                    Ok(true) => {
                        self.silences.retain(|s| s.id != id);
                        self.announce(Change::Silences).await;
                        Ok(())
                    }
                    Ok(false) => Err(EngineError::SilenceNotFound(id)),
                    Err(err) => Err(err.into()),
                };
                let _ = reply.send(result);
            }
            Command::EvaluateAll { reply } => {
                let slugs: Vec<String> = self.directory.with(|a| a.iter().cloned().collect());
                for slug in slugs {
                    self.evaluate(&slug, false).await;
                }
                let _ = reply.send(());
            }
            Command::Forget { slug, reply } => {
                self.forget(&slug);
                let _ = reply.send(());
            }
            Command::Reload { what, reply } => {
                self.reload(what).await;
                let _ = reply.send(());
            }
        }
    }

    /// Evaluates the tenant with this id now, if it is known.
    async fn evaluate_tenant(&mut self, tenant: Uuid) {
        let slug = self
            .tenants
            .values()
            .find(|c| c.tenant.id == tenant)
            .map(|c| c.tenant.slug.clone());
        if let Some(slug) = slug {
            self.evaluate(&slug, true).await;
        }
    }

    /// Tells the other replicas (a lost announcement is caught by their
    /// periodic re-read).
    async fn announce(&self, change: Change) {
        if let Err(err) = self.store.announce(&change).await {
            tracing::warn!(error = %err, ?change, "failed to announce a change to the other replicas");
        }
    }

    async fn reload(&mut self, what: Reload) {
        let now = self.clock.now();
        let reloaded = match what {
            Reload::Tenant(slug) => {
                self.mark_stale(Some(&slug));
                if self.directory.contains(&slug) {
                    self.evaluate(&slug, true).await;
                }
                Ok(())
            }
            Reload::Thresholds(tenant) => match self.store.thresholds(tenant).await {
                Ok(thresholds) => {
                    match thresholds {
                        Some(t) => self.thresholds.insert(tenant, t),
                        None => self.thresholds.remove(&tenant),
                    };
                    self.evaluate_tenant(tenant).await;
                    Ok(())
                }
                Err(err) => Err(err),
            },
            Reload::Silences => self.store.active_silences(now).await.map(|silences| {
                self.silences = silences;
                self.silences_loaded_at = now;
            }),
            Reload::Everything => {
                self.mark_stale(None);
                let read = async {
                    let thresholds = self.store.all_thresholds().await?;
                    let silences = self.store.active_silences(now).await?;
                    Ok::<_, StoreError>((thresholds, silences))
                };
                read.await.map(|(thresholds, silences)| {
                    self.thresholds = thresholds.into_iter().collect();
                    self.silences = silences;
                    self.silences_loaded_at = now;
                })
            }
        };
        if let Err(err) = reloaded {
            count(&self.published.counters.store_errors);
            tracing::warn!(error = %err, "failed to read a change made elsewhere; the next re-read tries again");
        }
    }

    /// The open alert with this id, wherever it is kept.
    pub(super) fn check_alert_of(&self, id: Uuid) -> Option<(Uuid, Check)> {
        self.check_alerts
            .iter()
            .find(|(_, tracked)| tracked.alert.as_ref().is_some_and(|a| a.id == id))
            .map(|(key, _)| *key)
    }

    pub(super) async fn open_alert(
        &mut self,
        id: Uuid,
    ) -> Result<(AlertRow, Arc<Tenant>), EngineError> {
        let alert = match self
            .check_alert_of(id)
            .and_then(|k| self.check_alerts[&k].alert.as_deref().cloned())
        {
            Some(alert) => alert,
            None => {
                let stored = self
                    .store
                    .get_alert(id)
                    .await?
                    .ok_or(EngineError::AlertNotFound(id))?;
                if stored.resolved_at.is_some() {
                    return Err(EngineError::AlreadyResolved(id));
                }
                stored
            }
        };
        let now = self.clock.now();
        let tenant = match self.tenant(&alert.tenant_slug, now).await {
            Some(t) => t,
            None => self
                .store
                .get_tenant(alert.tenant_id)
                .await?
                .map(Arc::new)
                .ok_or(EngineError::AlertNotFound(id))?,
        };
        Ok((alert, tenant))
    }

    pub(super) async fn resolve_by_hand(
        &mut self,
        id: Uuid,
        actor: &str,
        note: Option<String>,
    ) -> Result<AlertRow, EngineError> {
        let (current, tenant) = self.open_alert(id).await?;
        let now = self.clock.now();
        let step = alerting::Step {
            kind: TransitionKind::Resolved,
            summary: format!("resolved by {actor}"),
            actor,
            note: note.clone(),
            notify: Some(AlertStatus::Resolved),
        };
        let planned = alerting::step(&current, now, step, |alert| {
            alert.state = AlertState::Resolved;
            alert.resolved_at = Some(now);
            alert.resolved_by = Some(actor.to_owned());
            alert.resolve_note = note;
        });
        let resolved = self.record(&tenant, planned, None).await?;
        if let Some(tracked) = self
            .check_alerts
            .get_mut(&(resolved.tenant_id, resolved.check))
        {
            tracked.alert = None;
            tracked.tracker.resolved_by_hand();
        }
        self.republish(&tenant.slug);
        Ok(resolved)
    }

    pub(super) async fn acknowledge(
        &mut self,
        id: Uuid,
        actor: &str,
        note: Option<String>,
    ) -> Result<AlertRow, EngineError> {
        let (current, tenant) = self.open_alert(id).await?;
        if current.acknowledged_at.is_some() {
            return Ok(current);
        }
        let now = self.clock.now();
        let step = alerting::Step {
            kind: TransitionKind::Acknowledged,
            summary: format!("acknowledged by {actor}"),
            actor,
            note,
            notify: None,
        };
        let planned = alerting::step(&current, now, step, |alert| {
            alert.acknowledged_at = Some(now);
            alert.acknowledged_by = Some(actor.to_owned());
        });
        let acked = self.record(&tenant, planned, None).await?;
        if let Some(tracked) = self.check_alerts.get_mut(&(acked.tenant_id, acked.check)) {
            tracked.alert = Some(Box::new(acked.clone()));
        }
        self.republish(&tenant.slug);
        Ok(acked)
    }
}
