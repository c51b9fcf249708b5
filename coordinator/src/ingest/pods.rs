//! One tenant's latest result per pod, bounded per node, with stale pods
//! forgotten to make room (on tokio time, so tests can pause the clock).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::registry::LatestResult;
#[cfg(doc)]
use super::registry::Registry;

/// Most pods of one tenant kept from one node. A node runs at most a few
/// hundred pods (the kubelet's default limit is 110); the bound keeps an
/// agent that invents pod names from growing memory without end, and from
/// crowding out the tenant's pods on other nodes.
pub const MAX_PODS_PER_NODE: usize = 256;

/// A pod not heard of for this long makes room for a new one when its node
/// is at [`MAX_PODS_PER_NODE`] for the tenant (pods are replaced on every
/// deploy).
pub(super) const STALE_POD: Duration = Duration::from_secs(10 * 60);

/// Stale pods are looked for at most this often when a node is full.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One tenant's pods, by name.
#[derive(Debug, Default)]
pub(super) struct TenantPods {
    /// Boxed: the map holds its values inline, with room to spare, and
    /// most tenants have a pod or two.
    pub(super) pods: HashMap<String, Box<LatestResult>>,
    /// Pods kept per node.
    per_node: HashMap<String, usize>,
    /// When stale pods were last forgotten to make room.
    pruned: Option<Instant>,
    /// Has results the health engine has not taken yet.
    pub(super) dirty: bool,
    /// Among them one the engine takes first (see [`Registry::take_changed`]).
    pub(super) urgent: bool,
    /// Set by the engine while the tenant is not healthy: all its results
    /// are taken first.
    pub(super) attention: bool,
}

impl TenantPods {
    /// Keeps `latest` as its pod's result unless its node already has
    /// [`MAX_PODS_PER_NODE`] other pods of this tenant; then it first forgets
    /// pods not heard of for a while (at most once a minute, so a full
    /// tenant costs little per result). Returns whether it was kept.
    pub(super) fn keep(&mut self, pod: String, latest: LatestResult) -> bool {
        let now = latest.received;
        let latest = Box::new(latest);
        match self.pods.get_mut(&pod) {
            Some(previous) if previous.node == latest.node => {
                *previous = latest;
                true
            }
            Some(_) => {
                // The pod is now reported by another node.
                let node = latest.node.clone();
                if !self.room_on(&node, now) {
                    return false;
                }
                if let Some(previous) = self.pods.insert(pod, latest) {
                    self.count(&previous.node, -1);
                }
                self.count(&node, 1);
                true
            }
            None => {
                let node = latest.node.clone();
                if !self.room_on(&node, now) {
                    return false;
                }
                self.pods.insert(pod, latest);
                self.count(&node, 1);
                true
            }
        }
    }

    /// Pods of this tenant kept from `node`.
    pub(super) fn on_node(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    fn room_on(&mut self, node: &str, now: Instant) -> bool {
        if self.on_node(node) < MAX_PODS_PER_NODE {
            return true;
        }
        if self
            .pruned
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            self.pruned = Some(now);
            let stale: Vec<(String, String)> = self
                .pods
                .iter()
                .filter(|(_, latest)| now.saturating_duration_since(latest.received) >= STALE_POD)
                .map(|(pod, latest)| (pod.clone(), latest.node.clone()))
                .collect();
            for (pod, node) in stale {
                self.pods.remove(&pod);
                self.count(&node, -1);
            }
        }
        self.on_node(node) < MAX_PODS_PER_NODE
    }

    fn count(&mut self, node: &str, delta: isize) {
        let n = self.per_node.entry(node.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.per_node.remove(node);
        }
    }
}
