//! `knowton-coordinator deploy`: the seed's flags. `--dry-run=client`
//! prints the rendered objects without any cluster or coordinator; a
//! server dry-run and a deployment go through the running coordinator,
//! which holds the tenant's secrets and talks to the cluster.

use clap::{Args, ValueEnum};
use knowton_common::{Branding, Plan};
use uuid::Uuid;

use super::parse_plan;
use crate::deploy::flags::{ClusterArgs, is_cidr};
use crate::deploy::render::{TenantSecrets, TenantSpec, render, to_yaml};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Print the rendered YAML; no cluster needed.
    Client,
    /// Send every object with dryRun=All and report what would change.
    Server,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[arg(long)]
    pub slug: String,
    /// The tenant's id (a UUID).
    #[arg(long)]
    pub id: Uuid,
    #[arg(long, value_parser = parse_plan)]
    pub plan: Plan,
    #[arg(long)]
    pub domain: String,
    /// Preview: `client` prints the objects (no cluster needed), `server`
    /// asks the API server what would change. Without it: deploy.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: Option<DryRun>,
    /// A CIDR allowed to reach the tenant's ingress (repeatable; none: everyone).
    #[arg(long = "allow")]
    pub allowlist: Vec<String>,
    /// Seconds to wait for the deployment to finish (0: do not wait).
    #[arg(long, default_value_t = 900)]
    pub wait_seconds: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub client: super::ClientArgs,
}

/// Checks the flags; every problem at once.
pub fn check(args: &DeployArgs) -> anyhow::Result<()> {
    let mut problems: Vec<String> = [
        knowton_common::tenant::validate_slug(&args.slug).err(),
        knowton_common::tenant::normalize_domain("domain", &args.domain).err(),
    ]
    .into_iter()
    .flatten()
    .map(|e| e.to_string())
    .chain(
        args.allowlist
            .iter()
            .filter(|c| !is_cidr(c))
            .map(|c| format!("--allow {c:?} is not a CIDR (e.g. 203.0.113.0/24)")),
    )
    .collect();
    args.cluster.validate(&mut problems);
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// Renders the tenant from the flags and prints it (client dry-run).
pub fn print_rendered(args: &DeployArgs) -> anyhow::Result<()> {
    check(args)?;
    let spec = TenantSpec {
        id: args.id,
        slug: args.slug.clone(),
        plan: args.plan,
        domain: args.domain.to_ascii_lowercase(),
        features: args.plan.features(),
        branding: Branding::default_for(&args.slug),
        allowlist: args.allowlist.clone(),
        stopped: false,
        min_replicas: None,
    };
    // A client dry-run prints no secret: placeholders, redacted anyway.
    let secrets = TenantSecrets {
        database_password: String::new(),
        jwt_secret: String::new(),
    };
    print!(
        "{}",
        to_yaml(&render(&spec, &secrets, &args.cluster.settings()))
    );
    Ok(())
}
