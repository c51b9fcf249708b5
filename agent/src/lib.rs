//! The KnowTon node agent: runs on every node (a DaemonSet), probes the
//! tenant pods scheduled there and streams the results to the coordinator.
//!
//! # Layout
//! - [`config`]: the flags.
//! - [`run`]: the agent's life: load, bind, spawn, probe rounds, drain.
//! - [`discover`]: which pods to probe (Kubernetes pods on this node, or a
//!   targets file).
//! - [`probe`]: liveness, API health and metrics probes of one pod.
//! - [`storage`]: volume usage of a pod from its filesystem (targets file).
//! - [`kubelet`]: volume usage of the discovered pods from the kubelet.
//! - [`node`]: the node's CPU, memory and disk, sent with the results.
//! - [`stream`]: the streams to the coordinator replicas, with [`buffer`]
//!   holding what they have not all acknowledged yet.
//! - [`replicas`]: which replicas: the `--coordinator` list, DNS names
//!   resolved to every address.
//! - [`instructions`]: what the coordinator told the agent (interval,
//!   per-tenant slow thresholds, check-alls), merged.
//! - [`metrics`]: the agent's own /metrics, /healthz and /readyz.
//! - [`volume`]: `knowton-agent volume`, which reads and writes a tenant's
//!   volume for the coordinator's storage backups and restores.
//! - `fuzzing`: the parsers of outside input, for the fuzz targets.

pub mod buffer;
pub mod config;
pub mod discover;
#[doc(hidden)]
pub mod fuzzing;
pub mod instructions;
pub mod kubelet;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod replicas;
pub mod run;
pub mod storage;
pub mod stream;
pub mod volume;
