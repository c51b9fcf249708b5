//! A high-availability installation for tests: several
//! `knowton-coordinator` processes on one PostgreSQL database, one real
//! agent streaming to all of them, a simulated pod per tenant and a
//! webhook receiver that records every delivery. Tests kill, pause, cut
//! off and restart replicas, and count what the receiver got.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use knowton_agent::config::Args;
use knowton_coordinator::certs;
use knowton_coordinator::sim::{Behaviour, SimPod};
use reqwest::StatusCode;
use rustix::process::Signal;
use serde_json::Value;

use crate::agent::{RunningAgent, free_port};
use crate::process::{CoordinatorProcess, get_json, metric, tenant_health};
use crate::proxy::TcpProxy;
use crate::receiver::Receiver;
use crate::{ADMIN_TOKEN, Db, TestDb, eventually, tenant_request};

/// How long a scenario waits for what must happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// What to install.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Coordinator replicas, named `r1`, `r2`…; `r1` starts first and
    /// leads.
    pub replicas: usize,
    /// Tenants `shop-0`, `shop-1`… provisioned through `r1`, each with a
    /// healthy pod of its own.
    pub tenants: usize,
    /// Pods of tenants that are not provisioned (yet): the agent probes
    /// them from the start.
    pub unprovisioned: Vec<String>,
    /// `--leader-lease-seconds`.
    pub lease_seconds: u64,
    /// The replica whose database connections go through a [`TcpProxy`]
    /// the test can cut.
    pub proxied: Option<usize>,
    /// The third octet of the pods' loopback addresses 127.0.N.x, distinct
    /// per test.
    pub subnet: u8,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            replicas: 3,
            tenants: 0,
            unprovisioned: Vec::new(),
            lease_seconds: 2,
            proxied: None,
            subnet: 1,
        }
    }
}

/// One replica's place: its ports stay the same across restarts.
#[derive(Debug)]
struct Slot {
    name: String,
    http: u16,
    grpc: u16,
    database_url: String,
    process: Option<CoordinatorProcess>,
}

/// The running installation; everything stops when it is dropped.
#[derive(Debug)]
pub struct Cluster {
    pub db: TestDb,
    pub hook: Receiver,
    pub http: reqwest::Client,
    /// The agent's `/metrics` port.
    pub agent_metrics: u16,
    /// Between [`Spec::proxied`] and PostgreSQL.
    pub proxy: Option<TcpProxy>,
    tls: PathBuf,
    hook_url: String,
    lease_seconds: u64,
    slots: Vec<Slot>,
    pods: BTreeMap<String, SimPod>,
    agent: Option<RunningAgent>,
}

impl Cluster {
    /// Starts `spec`'s replicas one after the other, provisions its
    /// tenants through `r1`, starts the agent and returns once every
    /// tenant is healthy on every replica.
    pub async fn start(kind: Db, spec: Spec) -> Cluster {
        let db = TestDb::new(kind).await;
        let tls = db.dir.path().join("tls");
        certs::init(&tls, &[], false).unwrap();
        certs::agent(&tls, "node-a").unwrap();
        let hook = Receiver::start().await;
        let hook_url = hook.url("/alertmanager");
        let proxy = match spec.proxied {
            Some(_) => Some(TcpProxy::start(database_addr(&db.url)).await),
            None => None,
        };
        let slots = (0..spec.replicas)
            .map(|i| {
                let database_url = match (&proxy, spec.proxied) {
                    (Some(proxy), Some(p)) if p == i => {
                        let direct = database_addr(&db.url).to_string();
                        db.url.replacen(&direct, &proxy.addr.to_string(), 1)
                    }
                    _ => db.url.clone(),
                };
                Slot {
                    name: format!("r{}", i + 1),
                    http: free_port(),
                    grpc: free_port(),
                    database_url,
                    process: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            db,
            hook,
            http: knowton_coordinator::client::http_client(),
            agent_metrics: free_port(),
            proxy,
            tls,
            hook_url,
            lease_seconds: spec.lease_seconds,
            slots,
            pods: BTreeMap::new(),
            agent: None,
        };
        for i in 0..spec.replicas {
            cluster.restart(i);
        }
        assert_eq!(cluster.leader().await, Some(0), "r1, started first, leads");

        let tenants: Vec<String> = (0..spec.tenants).map(|i| format!("shop-{i}")).collect();
        for slug in &tenants {
            cluster.provision(0, slug).await;
        }
        let mut targets = String::new();
        for (i, slug) in tenants.iter().chain(&spec.unprovisioned).enumerate() {
            let host = u8::try_from(10 + i).expect("fewer than 245 pods");
            let pod = SimPod::start(Ipv4Addr::new(127, 0, spec.subnet, host), 0);
            targets.push_str(&format!(
                "- {{tenant: {slug}, pod: {slug}-web-0, url: '{}'}}\n",
                pod.url()
            ));
            cluster.pods.insert(slug.clone(), pod);
        }
        let targets_file = cluster.db.dir.path().join("targets.yaml");
        std::fs::write(&targets_file, targets).unwrap();
        let mut args = Args {
            targets: Some(targets_file),
            shutdown_grace: Duration::from_secs(1),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], cluster.agent_metrics)),
            ..Args::for_tests("node-a", "127.0.0.1:1".parse().unwrap(), &cluster.tls)
        };
        args.coordinator = cluster
            .slots
            .iter()
            .map(|s| format!("https://127.0.0.1:{}", s.grpc))
            .collect::<Vec<_>>()
            .join(",");
        cluster.agent = Some(RunningAgent::start(args));
        for replica in 0..spec.replicas {
            for slug in &tenants {
                cluster.wait_for_status(replica, slug, "healthy").await;
            }
        }
        cluster
    }

    /// Replicas in the installation, running or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// `r1`, `r2`…
    pub fn name(&self, replica: usize) -> &str {
        &self.slots[replica].name
    }

    /// The REST API of `replica`.
    pub fn base(&self, replica: usize) -> String {
        format!("http://127.0.0.1:{}", self.slots[replica].http)
    }

    /// `replica`'s agents' listener.
    pub fn grpc(&self, replica: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.slots[replica].grpc))
    }

    /// The replicas whose process runs.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).filter(|&i| self.slots[i].process.is_some())
    }

    /// Starts `replica` (again), on its ports; returns once it is ready.
    pub fn restart(&mut self, replica: usize) {
        let lease = self.lease_seconds.to_string();
        let slot = &mut self.slots[replica];
        assert!(slot.process.is_none(), "{} runs already", slot.name);
        // Waiting for the process blocks: other tasks (the agent, readers)
        // move to another worker meanwhile.
        slot.process = Some(tokio::task::block_in_place(|| {
            CoordinatorProcess::serve(
                (self.db.dir.path(), &slot.database_url),
                &self.tls,
                (slot.http, slot.grpc),
                &self.hook_url,
                &[
                    "--replica-id",
                    &slot.name,
                    "--leader-lease-seconds",
                    &lease,
                    "--notify-timeout-seconds",
                    "2",
                    "--health-sweep-seconds",
                    "1",
                    "--shutdown-grace-seconds",
                    "5",
                ],
            )
        }));
    }

    /// SIGKILL.
    pub fn kill(&mut self, replica: usize) {
        let process = self.take(replica);
        tokio::task::block_in_place(|| process.kill());
    }

    /// SIGTERM, and a clean exit.
    pub fn terminate(&mut self, replica: usize) {
        let process = self.take(replica);
        tokio::task::block_in_place(|| process.terminate());
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to `replica`, which keeps its
    /// place.
    pub fn signal(&self, replica: usize, signal: Signal) {
        self.slots[replica]
            .process
            .as_ref()
            .expect("a running replica")
            .signal(signal);
    }

    /// Whether `replica`'s log since it was last started contains `text`.
    pub fn logged(&self, replica: usize, text: &str) -> bool {
        self.slots[replica]
            .process
            .as_ref()
            .is_some_and(|p| p.logged(text))
    }

    fn take(&mut self, replica: usize) -> CoordinatorProcess {
        self.slots[replica]
            .process
            .take()
            .expect("a running replica")
    }

    /// The replica that leads as `asked`'s cluster view says (`None` when
    /// it names none, or an unknown one, or does not answer).
    pub async fn leader_seen_by(&self, asked: usize) -> Option<usize> {
        let view = get_json(&self.http, &self.base(asked), "/api/v1/cluster").await;
        let holder = view["leader"].as_str()?;
        let name = holder.split_once('#').map_or(holder, |(name, _)| name);
        self.slots.iter().position(|s| s.name == name)
    }

    /// The leader, as the first running replica sees it.
    pub async fn leader(&self) -> Option<usize> {
        let asked = self.running().next()?;
        self.leader_seen_by(asked).await
    }

    /// Waits until a replica other than `not` leads, as every running
    /// replica except `not` sees it; returns it.
    pub async fn wait_for_new_leader(&self, not: usize, within: Duration) -> usize {
        eventually(within, "another replica to lead", || async {
            let mut agreed = None;
            for asked in self.running().filter(|&r| r != not) {
                let seen = self.leader_seen_by(asked).await.filter(|&l| l != not)?;
                if agreed.is_some_and(|a| a != seen) {
                    return None;
                }
                agreed = Some(seen);
            }
            agreed
        })
        .await
    }

    /// `POST /api/v1/tenants` of a professional tenant through `replica`.
    pub async fn provision(&self, replica: usize, slug: &str) {
        let created = self
            .http
            .post(format!("{}/api/v1/tenants", self.base(replica)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&tenant_request(slug, "professional"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{slug}");
    }

    /// `tenant`'s health on `replica`: the status and the body.
    pub async fn health(&self, replica: usize, tenant: &str) -> (StatusCode, Value) {
        tenant_health(&self.http, &self.base(replica), tenant).await
    }

    /// Waits until `replica` judges `tenant` `status` (`healthy`,
    /// `critical`…).
    pub async fn wait_for_status(&self, replica: usize, tenant: &str, status: &str) {
        let what = format!("{tenant} {status} on {}", self.name(replica));
        eventually(WAIT, &what, || async {
            let (_, health) = self.health(replica, tenant).await;
            (health["status"] == status).then_some(())
        })
        .await;
    }

    /// One unlabelled series of `replica`'s `/metrics`.
    pub async fn metric(&self, replica: usize, name: &str) -> Option<f64> {
        metric(&self.http, &self.base(replica), name).await
    }

    /// `tenant`'s pod.
    pub fn pod(&self, tenant: &str) -> &SimPod {
        &self.pods[tenant]
    }

    /// Makes every provisioned tenant's pod behave as `behaviour`.
    pub async fn set_every_pod(&self, behaviour: Behaviour) {
        for pod in self.pods.values() {
            pod.set(behaviour).await;
        }
    }

    /// What the webhook receiver accepted, counted.
    pub fn deliveries(&self) -> Deliveries {
        Deliveries::of(&self.hook)
    }

    /// Stops the agent, then every replica.
    pub async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop_within(Duration::from_secs(5)).await;
        }
        for slot in &mut self.slots {
            if let Some(process) = slot.process.take() {
                // A paused replica would never exit.
                process.signal(Signal::CONT);
                tokio::task::block_in_place(|| process.terminate());
            }
        }
    }
}

/// Alert notifications the receiver accepted, counted by idempotency key
/// and by fault (tenant, check, firing or resolved).
#[derive(Debug)]
pub struct Deliveries {
    pub by_key: BTreeMap<String, usize>,
    pub by_fault: BTreeMap<(String, String, String), usize>,
}

impl Deliveries {
    fn of(hook: &Receiver) -> Deliveries {
        let mut by_key = BTreeMap::new();
        let mut by_fault = BTreeMap::new();
        for hit in hook.accepted() {
            let json = hit.json();
            let key = json["idempotencyKey"].as_str().unwrap_or_default();
            *by_key.entry(key.to_owned()).or_default() += 1;
            let labels = &json["commonLabels"];
            let label = |name: &str| labels[name].as_str().unwrap_or_default().to_owned();
            let status = json["status"].as_str().unwrap_or_default().to_owned();
            *by_fault
                .entry((label("tenant"), label("alertname"), status))
                .or_default() += 1;
        }
        Deliveries { by_key, by_fault }
    }

    /// Tenants notified as firing for `check`.
    pub fn firing(&self, check: &str) -> Vec<&str> {
        self.by_fault
            .keys()
            .filter(|(_, c, status)| c == check && status == "firing")
            .map(|(tenant, _, _)| tenant.as_str())
            .collect()
    }

    /// Fails unless every message came once, and no fault was notified
    /// twice in the same state.
    pub fn assert_each_once(&self) {
        assert!(
            self.by_key.values().all(|n| *n == 1),
            "each message once: {:?}",
            self.by_key
        );
        assert!(
            self.by_fault.values().all(|n| *n == 1),
            "each fault notified once: {:?}",
            self.by_fault
        );
    }
}

/// The `host:port` of a `postgres://user@host:port/db?…` URL.
pub fn database_addr(url: &str) -> SocketAddr {
    let authority = url
        .split_once('@')
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap();
    authority
        .parse()
        .expect("the test database at an IP address and port")
}
