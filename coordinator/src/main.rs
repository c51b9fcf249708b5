//! `knowton-coordinator`: parse the command line and run it.

use clap::Parser;
use knowton_coordinator::certs;
use knowton_coordinator::cli::{
    BackupsCommand, CertsCommand, Cli, Command, LogFormat, ReportCommand, TenantsCommand,
};
use knowton_coordinator::config::ServeConfig;
use knowton_coordinator::{client, server};
use tracing_subscriber::EnvFilter;

/// jemalloc, built to hand freed pages back to the system at once and to
/// keep one arena (`.cargo/config.toml`): with glibc's malloc, each thread's
/// arena kept the buffers of past work resident.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    certs::install_crypto_provider();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging(cli.log_format);
            serve(*args).await
        }
        Command::Provision(args) => client::provision(args).await,
        Command::Deprovision(args) => client::deprovision(args).await,
        Command::Tenants {
            command: TenantsCommand::List(args),
        } => client::list(args).await,
        Command::Tenants {
            command: TenantsCommand::Get(args),
        } => client::get(args).await,
        Command::SetPlan(args) => client::set_plan(args).await,
        Command::RotateKey(args) => client::rotate_key(args).await,
        Command::CheckAll(args) => client::check_all(args).await,
        Command::Report {
            command: ReportCommand::Daily(args),
        } => client::report_daily(args).await,
        Command::Cleanup(args) => client::cleanup(args).await,
        Command::Cluster(args) => client::cluster(args).await,
        Command::Certs {
            command: CertsCommand::Init(args),
        } => certs::init(&args.dir, &args.sans, args.force)
            .map(print_written)
            .map_err(Into::into),
        Command::Certs {
            command: CertsCommand::Agent(args),
        } => certs::agent(&args.dir, &args.node)
            .map(print_written)
            .map_err(Into::into),
        Command::Deploy(args) => client::deploy(*args).await,
        Command::Backups {
            command: BackupsCommand::List(args),
        } => client::backups_list(args).await,
        Command::Backups {
            command: BackupsCommand::Run(args),
        } => client::backups_run(args).await,
        Command::Restore(args) => client::restore(args).await,
        Command::Verify(args) => client::verify(args).await,
        Command::Demo(args) => {
            // Logs (warnings and errors only, unless RUST_LOG) go to stderr:
            // stdout is the demo's narrative.
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            knowton_coordinator::demo::run(args, shutdown_signal())
                .await
                .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_written(paths: Vec<std::path::PathBuf>) {
    for path in paths {
        println!("wrote {}", path.display());
    }
}

async fn serve(args: knowton_coordinator::config::ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::try_from(args)?;
    server::run(config, shutdown_signal()).await?;
    tracing::info!("coordinator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
