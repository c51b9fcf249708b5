//! Flags of `knowton-agent`, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::replicas::{self, CoordinatorUrl};

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

    /// The coordinator replicas' gRPC addresses: `https://host:port`,
    /// comma-separated. Results go to every replica. A DNS name (e.g. a
    /// headless Service) stands for every address it resolves to (IPv4
    /// ones if it has both; 16 replicas at most in all), re-resolved every
    /// --coordinator-resolve-seconds; each replica's certificate must
    /// carry the name. An IP literal is that one replica.
    #[arg(
        long,
        env = "KNOWTON_COORDINATOR",
        default_value = "https://127.0.0.1:8443"
    )]
    pub coordinator: String,

    /// How often the DNS names in --coordinator are resolved again: a new
    /// address gets a stream, a gone one has its stream closed.
    #[arg(long, env = "KNOWTON_COORDINATOR_RESOLVE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub coordinator_resolve_seconds: u64,

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

    /// YAML list of {tenant, pod, url, storagePath?} to probe, re-read when
    /// it changes; giving it makes `file` the default discovery.
    #[arg(long, env = "KNOWTON_TARGETS")]
    pub targets: Option<PathBuf>,

    /// Where the pods to probe come from: the Kubernetes API (pods on this
    /// node in a tenant namespace, labelled `knowton.io/tenant` with that
    /// tenant) or the --targets file. Default:
    /// `file` when --targets is given, else `kubernetes`.
    #[arg(long, env = "KNOWTON_DISCOVERY", value_enum)]
    pub discovery: Option<DiscoveryKind>,

    /// Port of a discovered pod's backend when none of its containers has a
    /// port named `http`.
    #[arg(long, env = "KNOWTON_POD_PORT", default_value_t = 3000)]
    pub pod_port: u16,

    /// Prefix of the tenant namespaces, as the coordinator's
    /// --namespace-prefix: only pods in `<prefix><tenant>` are probed as
    /// that tenant's, whatever labels pods elsewhere carry.
    #[arg(
        long,
        env = "KNOWTON_NAMESPACE_PREFIX",
        default_value = knowton_common::namespace::DEFAULT_NAMESPACE_PREFIX
    )]
    pub namespace_prefix: String,

    /// The Kubernetes API server's URL, used as is without credentials
    /// (e.g. `kubectl proxy` on http://127.0.0.1:8001, or a test's fake API
    /// server). Default: the in-cluster service account, else the kubeconfig.
    #[arg(long, env = "KNOWTON_KUBE_API_URL")]
    pub kube_api_url: Option<String>,

    /// Time between probe rounds (the coordinator may change it).
    #[arg(long, env = "KNOWTON_PROBE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Timeout of each probe request.
    #[arg(long, env = "KNOWTON_PROBE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// A probe slower than this is confirmed at once.
    #[arg(long, env = "KNOWTON_SLOW_THRESHOLD", default_value = "1s", value_parser = parse_duration)]
    pub slow_threshold: Duration,

    /// Pods whose probe starts at the same time (a probe stops counting
    /// after 100 ms: a pod slow to answer does not hold the others back).
    #[arg(long, env = "KNOWTON_PROBE_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Most bytes of results kept until every coordinator replica
    /// acknowledged them: one buffer shared by the replicas, whatever their
    /// number (a replica that is down costs only its own backlog).
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

/// The `--discovery` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryKind {
    Kubernetes,
    File,
}

/// Where the pods to probe come from, once the flags are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverySource {
    /// The targets file at this path.
    File(PathBuf),
    /// The Kubernetes API.
    Kubernetes {
        /// Explicit API server URL (`--kube-api-url`); `None`: inferred.
        api_url: Option<String>,
        /// Backend port of a pod without a container port named `http`.
        pod_port: u16,
        /// Prefix of the tenant namespaces (`--namespace-prefix`).
        namespace_prefix: String,
    },
}

/// What [`Args::check`] derives from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub coordinators: Vec<CoordinatorUrl>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub discovery: DiscoverySource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// An agent for tests: node `node_name` streaming to the coordinator's
    /// gRPC listener at `coordinator` with the certificates in `tls_dir`
    /// (the `certs` layout), probing fast (every 200 ms, 500 ms timeout,
    /// slow above 300 ms), metrics on a free loopback port. Set the
    /// discovery (`targets`, or `kube_api_url` and `pod_port`) and anything
    /// else with struct update syntax.
    #[doc(hidden)]
    pub fn for_tests(node_name: &str, coordinator: SocketAddr, tls_dir: &std::path::Path) -> Args {
        Args {
            node_name: node_name.to_owned(),
            coordinator: format!("https://127.0.0.1:{}", coordinator.port()),
            coordinator_resolve_seconds: 30,
            tls_dir: Some(tls_dir.to_owned()),
            ca: None,
            cert: None,
            key: None,
            targets: None,
            discovery: None,
            pod_port: 3000,
            namespace_prefix: knowton_common::namespace::DEFAULT_NAMESPACE_PREFIX.to_owned(),
            kube_api_url: None,
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
            slow_threshold: Duration::from_millis(300),
            concurrency: 8,
            buffer_bytes: 1 << 20,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_grace: Duration::from_secs(2),
            log_format: LogFormat::Text,
        }
    }

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

    /// The discovery source the flags choose.
    pub fn discovery_source(&self) -> Result<DiscoverySource, String> {
        let kind = self.discovery.unwrap_or(if self.targets.is_some() {
            DiscoveryKind::File
        } else {
            DiscoveryKind::Kubernetes
        });
        match (kind, &self.targets) {
            (DiscoveryKind::File, Some(path)) => Ok(DiscoverySource::File(path.clone())),
            (DiscoveryKind::File, None) => {
                Err("--discovery file needs --targets FILE (KNOWTON_TARGETS)".to_owned())
            }
            (DiscoveryKind::Kubernetes, Some(path)) => Err(format!(
                "--targets {} is only read with --discovery file; drop one of them",
                path.display()
            )),
            (DiscoveryKind::Kubernetes, None) => {
                if !knowton_common::namespace::is_namespace_prefix(&self.namespace_prefix) {
                    return Err(format!(
                        "--namespace-prefix {:?} must be lower-case letters, digits and '-', start with a letter and be at most 23 characters",
                        self.namespace_prefix
                    ));
                }
                Ok(DiscoverySource::Kubernetes {
                    api_url: self.kube_api_url.clone(),
                    pod_port: self.pod_port,
                    namespace_prefix: self.namespace_prefix.clone(),
                })
            }
        }
    }

    /// The coordinator URLs, the TLS files and the discovery source, or
    /// every problem with the flags at once.
    pub fn check(&self) -> Result<Checked, String> {
        match (
            replicas::parse_list(&self.coordinator),
            self.tls_files(),
            self.discovery_source(),
        ) {
            (Ok(coordinators), Ok((ca, cert, key)), Ok(discovery)) => Ok(Checked {
                coordinators,
                ca,
                cert,
                key,
                discovery,
            }),
            (coordinators, tls, source) => Err([coordinators.err(), tls.err(), source.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ")),
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
    fn test_agents_are_valid_once_given_a_discovery() {
        let coordinator = SocketAddr::from(([127, 0, 0, 1], 8443));
        let args = Args {
            targets: Some("t.yaml".into()),
            ..Args::for_tests("n1", coordinator, std::path::Path::new("/tls"))
        };
        let checked = args.check().unwrap();
        assert_eq!(checked.cert.to_str(), Some("/tls/n1.pem"));
        assert_eq!(checked.discovery, DiscoverySource::File("t.yaml".into()));
        assert_eq!(args.coordinator, "https://127.0.0.1:8443");
        assert_eq!(checked.coordinators.len(), 1);
    }

    #[test]
    fn the_coordinator_takes_a_list_and_a_resolve_interval() {
        let args = Args::try_parse_from([
            "knowton-agent",
            "--node-name",
            "n1",
            "--tls-dir",
            "/tls",
            "--targets",
            "t.yaml",
            "--coordinator",
            "https://10.0.0.5:8443,https://knowton-coordinator-replicas:8443",
        ])
        .unwrap();
        assert_eq!(args.coordinator_resolve_seconds, 30);
        let checked = args.check().unwrap();
        assert_eq!(checked.coordinators.len(), 2);
        assert_eq!(
            checked.coordinators[1].host,
            replicas::Host::Name("knowton-coordinator-replicas".into())
        );
        let zero = Args::try_parse_from([
            "knowton-agent",
            "--node-name",
            "n1",
            "--coordinator-resolve-seconds",
            "0",
        ]);
        assert!(zero.is_err(), "re-resolving needs a pause");
        let empty = Args {
            coordinator: " ".into(),
            ..args
        };
        assert!(empty.check().unwrap_err().contains("--coordinator"));
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

    #[test]
    fn discovery_defaults_to_the_targets_file_when_given_else_kubernetes() {
        let parse = |flags: &[&str]| {
            let base = ["knowton-agent", "--node-name", "n1", "--tls-dir", "/tls"];
            Args::try_parse_from(base.iter().chain(flags)).unwrap()
        };
        assert_eq!(
            parse(&["--targets", "t.yaml"]).discovery_source(),
            Ok(DiscoverySource::File("t.yaml".into()))
        );
        assert_eq!(
            parse(&[]).discovery_source(),
            Ok(DiscoverySource::Kubernetes {
                api_url: None,
                pod_port: 3000,
                namespace_prefix: "knowton-tenant-".into(),
            })
        );
        assert_eq!(
            parse(&[
                "--discovery",
                "kubernetes",
                "--kube-api-url",
                "http://127.0.0.1:8001",
                "--pod-port",
                "8080"
            ])
            .discovery_source(),
            Ok(DiscoverySource::Kubernetes {
                api_url: Some("http://127.0.0.1:8001".into()),
                pod_port: 8080,
                namespace_prefix: "knowton-tenant-".into(),
            })
        );
        let err = parse(&["--discovery", "file"])
            .discovery_source()
            .unwrap_err();
        assert!(err.contains("--targets"), "{err}");
        let err = parse(&["--discovery", "kubernetes", "--targets", "t.yaml"])
            .discovery_source()
            .unwrap_err();
        assert!(err.contains("t.yaml"), "{err}");
        let err = parse(&["--namespace-prefix", "Tenants_"])
            .discovery_source()
            .unwrap_err();
        assert!(err.contains("--namespace-prefix"), "{err}");
        // Every bad flag at once.
        let args = Args::try_parse_from([
            "knowton-agent",
            "--node-name",
            "n1",
            "--discovery",
            "file",
            "--coordinator",
            "https://c1:8443,c2:8443",
        ])
        .unwrap();
        let err = args.check().unwrap_err();
        assert!(
            err.contains("--tls-dir") && err.contains("--targets") && err.contains("\"c2:8443\""),
            "{err}"
        );
    }
}
