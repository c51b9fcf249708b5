//! `knowton-agent`: parse the flags and run until SIGTERM.

use clap::Parser;
use knowton_agent::config::{Args, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc, built to hand freed pages back to the system at once and to
/// keep one arena (`.cargo/config.toml`): with glibc's malloc, each thread's
/// arena kept the buffers of past work resident.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One thread: the agent waits on sockets and timers almost all the time,
/// and its probes start in small groups over the interval, each a wake-up
/// that a thread per core turned into wake-ups across threads
/// (`knowton-bench-alerts`, 1,000 pods in groups of 50: 2.9 CPU-s per
/// minute on two threads, 2.0-2.2 on one).
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // `knowton-agent volume …`: a tenant's volume for the coordinator, on
    // stdin and stdout (so nothing is logged there).
    if std::env::args_os().nth(1).is_some_and(|a| a == "volume") {
        return volume().await;
    }
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match knowton_agent::run::run(args, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {:#}", anyhow::Error::from(err));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn volume() -> std::process::ExitCode {
    use knowton_agent::volume::{VolumeArgs, serve};
    let args = VolumeArgs::parse_from(std::env::args_os().skip(1));
    if args.idle {
        shutdown_signal().await;
        return std::process::ExitCode::SUCCESS;
    }
    match serve(&args, std::io::stdin().lock(), std::io::stdout().lock()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {:#}", anyhow::Error::from(err));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}
