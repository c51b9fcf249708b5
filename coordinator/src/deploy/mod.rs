//! Tenant deployments on Kubernetes: what each tenant gets ([`render`]).

pub mod cli;
pub mod render;

pub use render::{ClusterSettings, TenantSecrets, TenantSpec, render, to_yaml};
