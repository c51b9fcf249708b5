//! Tenant deployments on Kubernetes: what each tenant gets ([`render`]),
//! how it reaches the cluster ([`cluster`], [`rollout`]) and what differs
//! from what is there ([`diff`]); the tenant's data volume ([`volume`]); the cluster flags `serve` and `deploy`
//! share ([`flags`]).

pub mod cluster;
pub mod config;
pub mod controller;
pub mod diff;
pub mod flags;
mod hold;
pub mod kinds;
pub mod render;
pub mod rollout;
pub mod scaling;
pub mod volume;
pub mod watch;

pub use cluster::{Cluster, ClusterError};
pub use controller::{DeploySettings, Deployer, Trigger};
pub use render::{ClusterSettings, TenantSecrets, TenantSpec, render, to_yaml};
