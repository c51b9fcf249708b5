//! Flags of `knowton-agent`, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "knowton-agent",
    version,
    about = "Probes the KnowTon tenant pods on this node and streams the results to the coordinator over mutual TLS"
)]
pub struct Args {
    /// This node's name (from the downward API in a cluster); must match
    /// the identity of the agent's certificate.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,

    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "KNOWTON_COORDINATOR",
        default_value = "https://127.0.0.1:8443"
    )]
    pub coordinator: String,

    /// Directory in the `certs` layout: ca.pem, NODE.pem, NODE-key.pem.
    #[arg(long, env = "KNOWTON_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// CA of the coordinator's certificate (overrides --tls-dir).
    #[arg(long, env = "KNOWTON_AGENT_CA")]
    pub ca: Option<PathBuf>,

    /// This agent's client certificate (overrides --tls-dir).
    #[arg(long, env = "KNOWTON_AGENT_CERT")]
    pub cert: Option<PathBuf>,

    /// This agent's private key (overrides --tls-dir).
    #[arg(long, env = "KNOWTON_AGENT_KEY")]
    pub key: Option<PathBuf>,

    /// YAML list of {tenant, pod, url, storagePath?} to probe, re-read when it changes.
    #[arg(long, env = "KNOWTON_TARGETS")]
    pub targets: PathBuf,

    /// Time between probe rounds (the coordinator may change it).
    #[arg(long, env = "KNOWTON_PROBE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Timeout of each probe request.
    #[arg(long, env = "KNOWTON_PROBE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// A probe slower than this is confirmed at once.
    #[arg(long, env = "KNOWTON_SLOW_THRESHOLD", default_value = "1s", value_parser = parse_duration)]
    pub slow_threshold: Duration,

    /// Pods probed at the same time.
    #[arg(long, env = "KNOWTON_PROBE_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Most bytes of unacknowledged results kept while the coordinator is unreachable.
    #[arg(long, env = "KNOWTON_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub buffer_bytes: usize,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KNOWTON_AGENT_METRICS_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub metrics_addr: SocketAddr,

    /// Time to flush buffered results on shutdown.
    #[arg(long, env = "KNOWTON_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[arg(long, env = "KNOWTON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// The CA, certificate and key files, from the flags or --tls-dir.
    pub fn tls_files(&self) -> Result<(PathBuf, PathBuf, PathBuf), String> {
        let dir = self.tls_dir.as_ref();
        let pick = |explicit: &Option<PathBuf>, file: String| {
            explicit.clone().or_else(|| dir.map(|d| d.join(file)))
        };
        match (
            pick(&self.ca, "ca.pem".into()),
            pick(&self.cert, format!("{}.pem", self.node_name)),
            pick(&self.key, format!("{}-key.pem", self.node_name)),
        ) {
            (Some(ca), Some(cert), Some(key)) => Ok((ca, cert, key)),
            _ => Err("give --tls-dir, or all of --ca, --cert and --key".to_owned()),
        }
    }
}

/// `250ms`, `10s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}: expected e.g. 250ms, 10s or 2m");
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| err())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(err()),
    };
    if d.is_zero() {
        return Err(format!("{s:?} must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent_and_durations_parse() {
        Args::command().debug_assert();
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["10", "s", "1h", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_files_come_from_the_directory_or_the_flags() {
        let args = Args::try_parse_from([
            "knowton-agent",
            "--node-name",
            "n1",
            "--targets",
            "t.yaml",
            "--tls-dir",
            "/tls",
            "--key",
            "/k.pem",
        ])
        .unwrap();
        let (ca, cert, key) = args.tls_files().unwrap();
        assert_eq!(
            (ca.to_str(), cert.to_str(), key.to_str()),
            (Some("/tls/ca.pem"), Some("/tls/n1.pem"), Some("/k.pem"))
        );
        let args =
            Args::try_parse_from(["knowton-agent", "--node-name", "n1", "--targets", "t.yaml"])
                .unwrap();
        assert!(args.tls_files().is_err());
    }
}
