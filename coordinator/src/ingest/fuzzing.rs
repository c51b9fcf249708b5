//! Entry point for the fuzz target (`coordinator/fuzz`) and the property
//! tests: a `ResultBatch` decoded from arbitrary bytes, checked and stored
//! as an agent's stream would, and the bounds that must hold after it.

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use knowton_proto::agent::v1::{Hello, ResultBatch};
use kube::runtime::watcher::Event;
use prost::Message;

use super::Placement;
use super::registry::{BatchOutcome, MAX_PODS_PER_NODE, Registry};
use super::service::{StreamSettings, check_batch};
use crate::directory::TenantDirectory;

/// The active tenants of the fixture.
pub const TENANTS: [&str; 2] = ["acme", "globex"];
/// The node of the fixture's agent.
pub const NODE: &str = "node-a";

/// An ingest path: two active tenants, with a cluster a few pods of each
/// on two nodes, and an agent of node-a.
#[derive(Debug)]
pub struct IngestFixture {
    pub registry: Registry,
    directory: TenantDirectory,
    settings: StreamSettings,
    sessions: u64,
}

impl IngestFixture {
    pub fn new(cluster: bool) -> Self {
        let registry = Registry::default();
        if cluster {
            let placement = Arc::new(Placement::new("knowton-tenant-"));
            let mut relisting = None;
            placement.apply(Event::Init, &mut relisting);
            for tenant in TENANTS {
                for (i, node) in ["node-a", "node-b"].into_iter().enumerate() {
                    placement.apply(
                        Event::InitApply(pod(tenant, &format!("{tenant}-{i}"), node)),
                        &mut relisting,
                    );
                }
            }
            placement.apply(Event::InitDone, &mut relisting);
            let _ = registry.bind_placement(placement);
        }
        let directory = TenantDirectory::default();
        for tenant in TENANTS {
            directory.insert(tenant);
        }
        IngestFixture {
            registry,
            directory,
            settings: StreamSettings {
                max_batch_results: 1_000,
                ..StreamSettings::default()
            },
            sessions: 0,
        }
    }

    /// Decodes `bytes` as a batch and, if it passes the stream's checks,
    /// stores it from a new session of node-a's agent.
    pub fn ingest(&mut self, bytes: &[u8]) -> Result<BatchOutcome, String> {
        let batch = ResultBatch::decode(bytes).map_err(|e| e.to_string())?;
        self.ingest_batch(batch)
    }

    pub fn ingest_batch(&mut self, batch: ResultBatch) -> Result<BatchOutcome, String> {
        check_batch(&self.settings, &batch).map_err(|s| s.message().to_owned())?;
        self.sessions += 1;
        let hello = Hello {
            protocol_version: 1,
            node_name: NODE.to_owned(),
            agent_version: "fuzz".to_owned(),
            session_id: format!("fuzz-{}", self.sessions),
        };
        let (conn, _) = self
            .registry
            .connect(&hello, 1, SocketAddr::from(([127, 0, 0, 1], 1)));
        Ok(self.registry.ingest(&conn, batch, &self.directory))
    }

    /// Panics unless what the registry keeps is bounded: only active
    /// tenants, at most [`MAX_PODS_PER_NODE`] pods of a tenant from the
    /// one node, and with a cluster only the pods placed on that node.
    pub fn check_bounds(&self, cluster: bool) {
        for tenant in TENANTS {
            let pods = self.registry.latest(tenant);
            assert!(pods.len() <= MAX_PODS_PER_NODE, "{tenant}: {}", pods.len());
            if cluster {
                for (pod, latest) in &pods {
                    assert_eq!(pod, &format!("{tenant}-0"));
                    assert_eq!(latest.node, NODE);
                }
            }
        }
        let unknown = self.registry.latest("");
        assert!(unknown.is_empty(), "results of no tenant were kept");
    }
}

fn pod(tenant: &str, name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(format!("knowton-tenant-{tenant}")),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[cfg(test)]
mod tests;
