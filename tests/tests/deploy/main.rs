//! Tenant deployments against the FAKE Kubernetes API server (no cluster
//! can run here; the real kube client talks HTTP to it): provisioning
//! deploys, rollout outcomes driven by writing Deployment status, server
//! dry-runs, pruning, deprovisioning, purge, drift repair, failures mid-apply.
//!
//! One test binary; its modules by subject:
//! - `rollout`: provisioning deploys, rollout outcomes, dry runs.
//! - `teardown`: deprovisioning, purge, drift repair, failures mid-apply.
//! - `data`: each tenant's volume claim and database settings, kept when
//!   deprovisioned, deleted by purge.
//! - `purge_expired`: tenants whose retention ended purged with their
//!   namespace.
//! - `without_a_cluster`: skipped deployments, refused settings.
//! - `scaling`: replicas following sustained response times.
//! - `restore`: a restore of a tenant's data holds it at zero, then
//!   redeploys it.
//! - `reconcile`: the periodic drift check reads the watch's cache.
//! - `watch`: the drift watch's cache.

mod data;
mod purge_expired;
mod reconcile;
mod restore;
mod rollout;
mod scaling;
mod teardown;
mod watch;
mod without_a_cluster;

use std::time::Duration;

use knowton_tests::deploy::{Cluster, WAIT, deployment_of, events, ns, until_phase, until_settled};
use knowton_tests::{Db, Reply, TestCoordinator, eventually, on_every_backend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `POST /api/v1/tenants/{slug}/deploy?dryRun={mode}` as the admin.
async fn dry_run(kt: &TestCoordinator, slug: &str, mode: &str) -> Reply {
    kt.admin(
        Method::POST,
        &format!("/api/v1/tenants/{slug}/deploy?dryRun={mode}"),
        None,
    )
    .await
}
