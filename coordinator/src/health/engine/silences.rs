//! Silences: which transitions they quiet, for whom, and how many a tenant may have.

use super::*;

/// Whose channels a transition is sent to, once silences are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Audience {
    Everyone,
    /// A tenant's silence covers it: the operator still hears.
    Operator,
    Nobody,
}

/// Most silences one tenant may have in force or to come: each is kept in
/// memory and checked on every transition.
pub const MAX_ACTIVE_SILENCES: usize = 50;

impl Runner {
    /// Records a silence unless its tenant already has the most it may
    /// have in force. Commands run one at a time, so the count read from
    /// the store cannot be raced by another creation.
    pub(super) async fn create_silence(&mut self, silence: Silence) -> Result<(), EngineError> {
        let active = self
            .store
            .active_silences(silence.created_at)
            .await?
            .iter()
            .filter(|s| s.tenant_id == silence.tenant_id)
            .count();
        if active >= MAX_ACTIVE_SILENCES {
            return Err(EngineError::SilenceLimit {
                limit: MAX_ACTIVE_SILENCES,
            });
        }
        self.store.create_silence(&silence).await?;
        self.silences.push(silence);
        Ok(())
    }

    pub(super) fn silenced(&self, tenant: Uuid, check: Check, at: DateTime<Utc>) -> bool {
        self.silences.iter().any(|s| s.covers(tenant, check, at))
    }

    pub(super) fn audience(&self, tenant: Uuid, check: Check, at: DateTime<Utc>) -> Audience {
        audience_of(&self.silences, tenant, check, at)
    }
}

/// Who hears of a transition: a silence the operator set quiets every
/// channel; one the tenant set quiets only the tenant's own.
pub(super) fn audience_of(
    silences: &[Silence],
    tenant: Uuid,
    check: Check,
    at: DateTime<Utc>,
) -> Audience {
    let mut covering = silences.iter().filter(|s| s.covers(tenant, check, at));
    match covering.next() {
        None => Audience::Everyone,
        Some(first) if first.by_operator() => Audience::Nobody,
        Some(_) if covering.any(Silence::by_operator) => Audience::Nobody,
        Some(_) => Audience::Operator,
    }
}
