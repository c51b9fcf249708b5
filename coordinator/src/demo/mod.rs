//! `knowton-coordinator demo`: the whole system in one process, narrated
//! on the terminal: a coordinator on SQLite, a node agent with generated
//! certificates, simulated tenant pods, and an operator webhook; one tenant
//! degrades after a while and recovers later.
//!
//! # Layout
//! - `banner`: where everything is, printed once started.
//! - `scenario`: the demo's tenants, their simulated pods (`crate::sim`),
//!   and the timeline.
//! - `webhook`: the receiver that logs every alert notification.
//! - `status`: the status table, read from the REST API.
//! - [`console`]: where the narrative goes (stdout, or a test's channel).

mod banner;
pub mod console;
mod scenario;
mod status;
mod webhook;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use knowton_common::Plan;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use console::Console;

use crate::certs::{self, CertError};
use crate::config::{ConfigError, ServeArgs, ServeConfig};
use crate::provision::LifecycleError;
use crate::server::{self, Running, ServeError};

/// The agent's node name (and certificate identity).
pub const NODE: &str = "demo-node";

/// How long the agent may take to connect before the demo gives up.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Flags of `knowton-coordinator demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Working directory: database, keys, certificates, targets file and
    /// webhook log (kept on exit). Default: a new knowton-demo-XXXXXXXX in
    /// the system's temporary directory. An existing demo directory is reused.
    #[arg(long, env = "KNOWTON_DEMO_DIR")]
    pub dir: Option<PathBuf>,

    /// Address of the coordinator's REST API.
    #[arg(long, env = "KNOWTON_DEMO_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of the coordinator's mutual-TLS listener for the agent.
    #[arg(long, env = "KNOWTON_DEMO_GRPC_ADDR", default_value = "127.0.0.1:8443")]
    pub grpc_addr: SocketAddr,

    /// Address of the agent's /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KNOWTON_DEMO_AGENT_METRICS_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub agent_metrics_addr: SocketAddr,

    /// When globex's pods start answering slowly (e.g. 60s, 2m).
    #[arg(long, env = "KNOWTON_DEMO_DEGRADE_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub degrade_after: Duration,

    /// How long after degrading they recover.
    #[arg(long, env = "KNOWTON_DEMO_RECOVER_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub recover_after: Duration,

    /// The agent's probe interval, and how often the status table is printed.
    #[arg(long, env = "KNOWTON_DEMO_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Stop after this long. Default: run until Ctrl-C.
    #[arg(long, env = "KNOWTON_DEMO_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    knowton_agent::config::parse_duration(s)
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("failed to create the demo directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create the certificates in {path}")]
    Certs {
        path: PathBuf,
        #[source]
        source: CertError,
    },
    #[error("failed to start the webhook receiver")]
    Webhook(#[source] std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("failed to start the coordinator")]
    Coordinator(#[source] ServeError),
    #[error("failed to provision tenant {slug}")]
    Provision {
        slug: String,
        #[source]
        source: LifecycleError,
    },
    #[error("failed to start the simulated pods")]
    Pods(#[source] std::io::Error),
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid agent settings: {0}")]
    AgentArgs(String),
    #[error("the agent stopped: {0}")]
    Agent(String),
    #[error("the agent did not connect to {0} within 20 s")]
    AgentTimeout(String),
}

/// A tenant of the demo and its simulated pods.
#[derive(Debug, Clone)]
pub struct DemoTenant {
    pub slug: String,
    pub plan: Plan,
    /// (pod name, URL)
    pub pods: Vec<(String, String)>,
}

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    dir: PathBuf,
    tenants: Vec<DemoTenant>,
    admin_token: String,
    console: Console,
    coordinator: Running,
    webhook: webhook::Receiver,
    agent: Option<JoinHandle<Result<(), knowton_agent::run::RunError>>>,
    agent_stop: Option<oneshot::Sender<()>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The simulated pods, stopped last.
    pods: Arc<Vec<scenario::DemoPod>>,
}

/// Runs the demo, narrated on stdout, until `shutdown` resolves, `--duration`
/// is over, or the agent fails; then stops everything.
pub async fn run(args: DemoArgs, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let console = Console::stdout();
    let duration = args.duration;
    let mut demo = Demo::start(args, console.clone()).await?;
    let over = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = shutdown => {
            console.event("stopping");
            Ok(())
        }
        () = over => {
            console.event("stopping: --duration is over");
            Ok(())
        }
        err = demo.agent_failure() => Err(err),
    };
    demo.stop().await;
    outcome
}

impl Demo {
    /// Starts everything, printing each step and then the banner, and
    /// returns once the agent is connected. The status table and the
    /// timeline run until [`Demo::stop`].
    pub async fn start(args: DemoArgs, console: Console) -> Result<Demo, DemoError> {
        crate::certs::install_crypto_provider();
        let dir = args.dir.clone().unwrap_or_else(new_demo_dir);
        std::fs::create_dir_all(&dir).map_err(|source| DemoError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        console.line(format!(
            "KnowTon demo: a coordinator, a node agent and {} simulated tenants in one process.\n\
             Working directory: {}\n",
            scenario::TENANTS.len(),
            dir.display()
        ));

        let tls = dir.join("tls");
        make_certificates(&tls, args.grpc_addr.ip())?;
        console.event(format!(
            "certificates: a CA, the coordinator's and agent {NODE}'s in {}",
            tls.display()
        ));

        let webhook = webhook::Receiver::start(dir.join("webhook.log"), console.clone())
            .await
            .map_err(DemoError::Webhook)?;
        let mut serve = ServeArgs::for_dir(&dir);
        serve.http_addr = args.http_addr;
        serve.grpc_addr = args.grpc_addr;
        serve.tls_dir = Some(tls);
        serve.notify.notify_webhook = Some(webhook.url.clone());
        // Metrics on a loopback listener of their own (the API port serves
        // them only with a token).
        serve.http.metrics_addr = Some(SocketAddr::new(args.http_addr.ip(), 0));
        let started = match ServeConfig::try_from(serve) {
            Ok(config) => server::start(config).await.map_err(DemoError::Coordinator),
            Err(err) => Err(err.into()),
        };
        let coordinator = match started {
            Ok(coordinator) => coordinator,
            Err(err) => {
                webhook.stop().await;
                return Err(err);
            }
        };
        console.event(format!(
            "coordinator: REST API on http://{}, agent listener on {}",
            coordinator.http_addr,
            coordinator
                .grpc_addr
                .map_or("-".to_owned(), |a| a.to_string()),
        ));

        let mut demo = Demo {
            dir,
            tenants: Vec::new(),
            admin_token: coordinator.state.admin_token.to_string(),
            console,
            coordinator,
            webhook,
            agent: None,
            agent_stop: None,
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            pods: Arc::default(),
        };
        match demo.populate(&args).await {
            Ok(()) => Ok(demo),
            Err(err) => {
                demo.stop().await;
                Err(err)
            }
        }
    }

    /// Tenants, pods, the agent, the banner, then the timeline and the table.
    async fn populate(&mut self, args: &DemoArgs) -> Result<(), DemoError> {
        let console = self.console.clone();
        let tenants = scenario::provision(&self.coordinator.state.service, &console).await?;
        let (pods, shared_ip) = scenario::start_pods().map_err(DemoError::Pods)?;
        let pods = Arc::new(pods);
        self.pods = pods.clone();
        if shared_ip {
            console.event("127.0.0.2 and up cannot be bound here: every pod listens on 127.0.0.1");
        }
        self.tenants = tenants
            .into_iter()
            .map(|(slug, plan)| DemoTenant {
                pods: pods
                    .iter()
                    .filter(|p| p.tenant == slug)
                    .map(|p| (p.name.clone(), p.pod.url()))
                    .collect(),
                slug,
                plan,
            })
            .collect();
        let targets = self.dir.join("targets.yaml");
        std::fs::write(&targets, scenario::targets_yaml(&pods)).map_err(|source| {
            DemoError::Write {
                path: targets.clone(),
                source,
            }
        })?;

        let grpc_addr = self
            .coordinator
            .grpc_addr
            .ok_or_else(|| DemoError::Agent("the coordinator has no agent listener".into()))?;
        let coordinator_url = format!("https://{}", connectable(grpc_addr));
        let tls = self.dir.join("tls");
        self.start_agent(args, &coordinator_url, &tls, &targets)
            .await?;
        console.event(format!(
            "agent {NODE}: connected to {coordinator_url}, probing {} pods every {}",
            pods.len(),
            seconds(args.interval)
        ));

        self.console.line(banner::render(self, args).await);
        self.tasks.push(tokio::spawn(scenario::run(
            pods,
            args.degrade_after,
            args.recover_after,
            console.clone(),
            self.stop.subscribe(),
        )));
        let board = status::StatusBoard {
            // Its own client: the demo sits beside the CLI's REST client,
            // not on top of it.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("the HTTP client configuration is static and valid"),
            base: self.api_url(),
            token: self.admin_token.clone(),
            tenants: self
                .tenants
                .iter()
                .map(|t| (t.slug.clone(), t.plan))
                .collect(),
            console,
        };
        self.tasks.push(tokio::spawn(
            board.run(args.interval, self.stop.subscribe()),
        ));
        Ok(())
    }

    /// The REST API's base URL, `http://addr`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.coordinator.http_addr)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every alert notification, one JSON document per line.
    pub fn webhook_log(&self) -> PathBuf {
        self.dir.join("webhook.log")
    }

    pub fn tenants(&self) -> &[DemoTenant] {
        &self.tenants
    }

    /// The tenant whose pods slow down and recover.
    pub fn degrading(&self) -> &'static str {
        scenario::DEGRADING
    }

    /// Resolves with the agent's error if it stops on its own (it only
    /// stops when told to otherwise); pending forever once stopped.
    pub async fn agent_failure(&mut self) -> DemoError {
        let Some(agent) = self.agent.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = agent.await;
        self.agent = None;
        DemoError::Agent(match outcome {
            Ok(Ok(())) => "it exited".to_owned(),
            Ok(Err(err)) => format!("{:#}", anyhow::Error::from(err)),
            Err(err) => err.to_string(),
        })
    }

    /// Stops the timeline and the table, then the agent (flushing its
    /// results), the coordinator (draining), the webhook receiver and the pods.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(stop) = self.agent_stop.take() {
            let _ = stop.send(());
        }
        if let Some(agent) = self.agent.take() {
            match agent.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => self
                    .console
                    .event(format!("agent: {:#}", anyhow::Error::from(err))),
                Err(err) => self.console.event(format!("agent: {err}")),
            }
        }
        if let Err(err) = self.coordinator.shutdown().await {
            let error = anyhow::Error::from(err);
            self.console.event(format!("coordinator: {error:#}"));
        }
        self.webhook.stop().await;
        drop(std::mem::take(&mut self.pods));
        self.console.event(format!(
            "stopped. The database, certificates and webhook log stay in {}",
            self.dir.display()
        ));
    }

    async fn start_agent(
        &mut self,
        args: &DemoArgs,
        coordinator: &str,
        tls: &Path,
        targets: &Path,
    ) -> Result<(), DemoError> {
        let flags = [
            "knowton-agent".to_owned(),
            format!("--node-name={NODE}"),
            format!("--coordinator={coordinator}"),
            format!("--tls-dir={}", tls.display()),
            format!("--targets={}", targets.display()),
            "--discovery=file".to_owned(),
            format!("--interval={}ms", args.interval.as_millis()),
            format!("--metrics-addr={}", args.agent_metrics_addr),
            "--shutdown-grace=3s".to_owned(),
        ];
        let agent_args = knowton_agent::config::Args::try_parse_from(flags)
            .map_err(|err| DemoError::AgentArgs(err.to_string()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        self.agent_stop = Some(stop);
        let agent = self.agent.insert(tokio::spawn(knowton_agent::run::run(
            agent_args,
            async move {
                let _ = stopped.await;
            },
        )));
        let ingest = self.coordinator.state.ingest.clone();
        let connected = ingest.wait_for_agents(
            tokio::time::Instant::now() + AGENT_CONNECT_TIMEOUT,
            |agents| agents.iter().any(|a| a.node == NODE && a.connected),
        );
        tokio::select! {
            ok = connected => if ok {
                Ok(())
            } else {
                Err(DemoError::AgentTimeout(coordinator.to_owned()))
            },
            outcome = agent => {
                self.agent = None;
                Err(DemoError::Agent(match outcome {
                    Ok(Ok(())) => "it exited".to_owned(),
                    Ok(Err(err)) => format!("{:#}", anyhow::Error::from(err)),
                    Err(err) => err.to_string(),
                }))
            }
        }
    }
}

/// A fresh `knowton-demo-XXXXXXXX` in the system's temporary directory.
fn new_demo_dir() -> PathBuf {
    let suffix = crate::credentials::random_base62(8).to_lowercase();
    std::env::temp_dir().join(format!("knowton-demo-{suffix}"))
}

/// A CA, the server certificate (with `grpc_ip` when it is not a loopback
/// or unspecified address) and the agent's, unless already there.
fn make_certificates(tls: &Path, grpc_ip: IpAddr) -> Result<(), DemoError> {
    let err = |source| DemoError::Certs {
        path: tls.to_owned(),
        source,
    };
    if !tls.join(certs::CA_CERT).exists() {
        let extra: Vec<String> = if grpc_ip.is_loopback() || grpc_ip.is_unspecified() {
            Vec::new()
        } else {
            vec![grpc_ip.to_string()]
        };
        certs::init(tls, &extra, false).map_err(err)?;
    }
    if !tls.join(format!("{NODE}.pem")).exists() {
        certs::agent(tls, NODE).map_err(err)?;
    }
    Ok(())
}

/// The address to connect to for a listener bound on `addr`.
fn connectable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    }
}

/// `5s`, `1.5s`.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
