//! Why a result an agent sent was not stored: a closed list, counted per
//! reason for `GET /api/v1/agents` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a pod's result was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectedResult {
    /// The tenant it names is not an active tenant.
    UnknownTenant,
    /// With a cluster: no such pod in the namespace of the tenant it names
    /// (a pod elsewhere, labelled as the tenant's, or none at all).
    NotInTenantNamespace,
    /// With a cluster: the pod runs on another node than the agent's.
    WrongNode,
    /// With a cluster: the tenant pods are not listed yet, so where the
    /// pod runs is not known.
    PodsNotListed,
    /// The agent's node already has the most pods of the tenant kept.
    PodsOverLimit,
}

impl RejectedResult {
    pub const ALL: [RejectedResult; 5] = [
        RejectedResult::UnknownTenant,
        RejectedResult::NotInTenantNamespace,
        RejectedResult::WrongNode,
        RejectedResult::PodsNotListed,
        RejectedResult::PodsOverLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectedResult::UnknownTenant => "unknown_tenant",
            RejectedResult::NotInTenantNamespace => "not_in_tenant_namespace",
            RejectedResult::WrongNode => "wrong_node",
            RejectedResult::PodsNotListed => "pods_not_listed",
            RejectedResult::PodsOverLimit => "pods_over_limit",
        }
    }
}

/// Rejected results, by reason.
#[derive(Debug, Default)]
pub struct RejectedCounts([AtomicU64; RejectedResult::ALL.len()]);

impl RejectedCounts {
    pub fn add(&self, reason: RejectedResult, n: u64) {
        if n > 0 {
            self.0[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, reason: RejectedResult) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`RejectedResult::ALL`] order.
    pub fn all(&self) -> impl Iterator<Item = (RejectedResult, u64)> + '_ {
        RejectedResult::ALL.into_iter().map(|r| (r, self.get(r)))
    }
}

/// Rejections of one batch, added to the counters at once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally([u64; RejectedResult::ALL.len()]);

impl Tally {
    pub fn add(&mut self, reason: RejectedResult) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: RejectedResult) -> u64 {
        self.0[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn commit(&self, counts: &RejectedCounts) {
        for reason in RejectedResult::ALL {
            counts.add(reason, self.get(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_at_its_index() {
        for (i, reason) in RejectedResult::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{}", reason.as_str());
        }
        let names: std::collections::HashSet<_> =
            RejectedResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RejectedResult::ALL.len());
    }
}
