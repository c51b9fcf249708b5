//! Command-line interface: `serve`, and the operator commands that are
//! clients of a running coordinator's REST API.

pub mod deploy;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use knowton_common::{Feature, Plan};

use crate::config::{ADMIN_TOKEN_FILE, ServeArgs};
use crate::credentials::KeyKind;
use crate::demo::DemoArgs;

#[derive(Debug, Parser)]
#[command(
    name = "knowton-coordinator",
    version,
    about = "Tenant registry, provisioning and lifecycle for the KnowTon white-label platform"
)]
pub struct Cli {
    /// Log format of `serve`.
    #[arg(long, env = "KNOWTON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator (REST API) on SQLite by default, or PostgreSQL.
    Serve(Box<ServeArgs>),
    /// Provision a tenant (the seed's positional order).
    Provision(ProvisionArgs),
    /// Deprovision a tenant, keeping its data unless --purge.
    Deprovision(DeprovisionArgs),
    /// List or show tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Change a tenant's plan (refused if current usage exceeds a lower plan's limits, unless --force).
    SetPlan(SetPlanArgs),
    /// Replace a tenant's API key; the new key is printed once.
    RotateKey(RotateKeyArgs),
    /// Ask every agent to probe now and print every tenant's fresh status
    /// (the seed ran this from cron every 5 minutes).
    CheckAll(CheckAllArgs),
    /// Summaries of the tenants' health.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Delete health history, resolved alerts, delivered notifications and
    /// ended silences older than the retention.
    Cleanup(CleanupArgs),
    /// The coordinator replicas: who leads in which epoch, each one's
    /// addresses, last heartbeat and agents.
    Cluster(ClientArgs),
    /// Create the mutual-TLS certificates of the agent stream.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Run a coordinator, an agent and simulated tenants in one process,
    /// and watch one tenant degrade and recover.
    Demo(DemoArgs),
    /// Deploy a tenant through the coordinator (the seed's deploy-tenant.sh
    /// flags); --dry-run prints its objects without any cluster,
    /// --dry-run=server shows what the cluster would change.
    Deploy(Box<deploy::DeployArgs>),
    /// A tenant's backups: list, take one now, verify.
    #[command(alias = "backup")]
    Backups {
        #[command(subcommand)]
        command: BackupsCommand,
    },
    /// Restore a tenant's database and files as they were at a date (the
    /// latest complete backups at or before it); a safety backup of what
    /// is replaced is taken first.
    Restore(RestoreArgs),
    /// Check every object of a tenant's backups: present, readable with
    /// this coordinator's key, holding what its name says.
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// The tenant's complete backups, newest first, and its latest runs.
    List(TenantArgs),
    /// Back the tenant up now, and wait for it.
    Run(BackupRunArgs),
}

#[derive(Debug, Args)]
pub struct TenantArgs {
    /// Tenant id or slug.
    pub tenant: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct BackupRunArgs {
    /// Tenant id or slug.
    pub tenant: String,
    /// What to back up (default: database and storage; configuration
    /// versions are backed up as they are committed).
    #[arg(long, value_parser = ["database", "storage"])]
    pub kind: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Tenant id or slug.
    pub tenant: String,
    /// The day (YYYY-MM-DD, UTC): its end, or --time on it.
    #[arg(long)]
    pub date: chrono::NaiveDate,
    /// The time on --date (HH:MM or HH:MM:SS, UTC).
    #[arg(long)]
    pub time: Option<chrono::NaiveTime>,
    /// Only the database, only the files, or only the configuration
    /// (plan, features, branding, domain, thresholds, notification
    /// channels: applied as a new configuration version).
    #[arg(long, value_parser = ["database", "storage", "configuration"])]
    pub only: Option<String>,
    /// Restore into this other (existing) tenant instead.
    #[arg(long)]
    pub into: Option<String>,
    /// Print what would be restored, and restore nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Tenant id or slug.
    pub tenant: String,
    /// Only this backup (its id).
    #[arg(long)]
    pub backup: Option<uuid::Uuid>,
    /// Also restore the latest backup of each kind (or --backup) into a
    /// scratch database and directory and compare it with what the backup
    /// recorded.
    #[arg(long)]
    pub deep: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// A new CA (ca.pem, ca-key.pem) and the coordinator's server.pem / server-key.pem.
    Init(CertsInitArgs),
    /// An agent's client certificate NODE.pem / NODE-key.pem, signed by the CA in --dir.
    Agent(CertsAgentArgs),
}

#[derive(Debug, Args)]
pub struct CertsInitArgs {
    /// Directory to write to (created if missing).
    #[arg(long, env = "KNOWTON_TLS_DIR")]
    pub dir: PathBuf,
    /// Extra subject alternative names of the server certificate (DNS name
    /// or IP), besides localhost and 127.0.0.1; repeatable.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Replace an existing CA (every agent certificate must be re-issued).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CertsAgentArgs {
    /// Directory holding ca.pem and ca-key.pem.
    #[arg(long, env = "KNOWTON_TLS_DIR")]
    pub dir: PathBuf,
    /// The node name: the certificate's identity, which the agent's hello must match.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants.
    List(ListArgs),
    /// Show one tenant.
    Get(GetArgs),
}

/// How the CLI reaches the coordinator.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the coordinator's REST API.
    #[arg(long, env = "KNOWTON_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin token.
    #[arg(long, env = "KNOWTON_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File to read the admin token from when none is given (written by `serve`).
    #[arg(long, env = "KNOWTON_ADMIN_TOKEN_FILE", default_value = ADMIN_TOKEN_FILE)]
    pub token_file: PathBuf,
    /// Output: readable text, or JSON for scripts.
    #[arg(long, short, env = "KNOWTON_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Display name, e.g. "Acme Corp".
    pub name: String,
    /// DNS label naming the tenant, e.g. acme.
    pub slug: String,
    #[arg(value_parser = parse_plan)]
    pub plan: Plan,
    pub admin_email: String,
    /// The tenant's hostname, e.g. acme.knowton.com.
    pub domain: String,
    #[arg(long)]
    pub company_name: Option<String>,
    /// #RRGGBB
    #[arg(long)]
    pub primary_color: Option<String>,
    /// #RRGGBB
    #[arg(long)]
    pub secondary_color: Option<String>,
    #[arg(long)]
    pub logo_url: Option<String>,
    /// Switch off a plan feature (nft, bonds, fractionalization, enterprise, custom-development); repeatable.
    #[arg(long = "disable-feature", value_parser = parse_feature)]
    pub disable: Vec<Feature>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DeprovisionArgs {
    pub tenant: String,
    /// Delete every row of the tenant instead of keeping its data.
    #[arg(long)]
    pub purge: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tenants in this status (active, deprovisioned).
    #[arg(long)]
    pub status: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Tenant id or slug.
    pub tenant: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct SetPlanArgs {
    /// Tenant id or slug.
    pub tenant: String,
    #[arg(value_parser = parse_plan)]
    pub plan: Plan,
    /// Downgrade even if current usage exceeds the new plan's limits.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CheckAllArgs {
    /// Seconds to wait for the agents' fresh results (1 to 120).
    #[arg(long, default_value_t = 15)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Every tenant over the last 24 hours: availability, alerts, usage.
    Daily(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Also e-mail it to the operators (`serve --notify-email`), once per day.
    #[arg(long)]
    pub email: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Retention, e.g. 30d, 12h (at least 1h).
    #[arg(long)]
    pub older_than: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    /// Tenant id or slug.
    pub tenant: String,
    #[arg(value_parser = parse_kind)]
    pub kind: KeyKind,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_plan(s: &str) -> Result<Plan, String> {
    s.parse()
        .map_err(|e: knowton_common::plan::UnknownPlan| e.to_string())
}

fn parse_feature(s: &str) -> Result<Feature, String> {
    Feature::parse(s).ok_or_else(|| {
        format!(
            "unknown feature {s:?}: expected one of {}",
            Feature::ALL.map(Feature::short_name).join(", ")
        )
    })
}

fn parse_kind(s: &str) -> Result<KeyKind, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn provision_takes_the_seed_positional_order() {
        let cli = Cli::try_parse_from([
            "knowton-coordinator",
            "provision",
            "Acme Corp",
            "acme",
            "enterprise",
            "admin@acme.com",
            "acme.knowton.com",
            "--disable-feature",
            "bonds",
        ])
        .unwrap();
        let Command::Provision(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.name.as_str(), args.plan),
            ("Acme Corp", Plan::Enterprise)
        );
        assert_eq!(args.disable, vec![Feature::Bonds]);
        let err =
            Cli::try_parse_from(["knowton-coordinator", "set-plan", "acme", "gold"]).unwrap_err();
        assert!(err.to_string().contains("unknown plan"));
    }
}
