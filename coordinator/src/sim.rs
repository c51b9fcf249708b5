//! The simulation shared by `demo`, the tests and the benchmarks (not used
//! by the coordinator itself): simulated tenant pods, real HTTP/1.1 servers
//! on loopback addresses whose behaviour is switched at runtime, counting
//! what they are asked.
//!
//! Each pod serves `GET /health` (`ok`), `GET /api/health` (JSON with a
//! `database` boolean) and `GET /metrics` (Prometheus text) with keep-alive.
//! The server is written on tokio alone so that any crate's tests, and the
//! `demo` command, can use it.
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so every pod
//! can have an address of its own (127.0.0.2, 127.0.0.3, …).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How a simulated pod answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Every endpoint answers normally.
    Healthy,
    /// Answers normally after this delay.
    Slow(Duration),
    /// Answers normally after a random delay up to this one, drawn anew
    /// for each request: a healthy pod whose answers jitter.
    Jitter(Duration),
    /// Every endpoint answers this status (e.g. 503) with a short text body.
    Status(u16),
    /// Not listening: connections are refused.
    Refuse,
    /// 200 with an HTML error page on every endpoint (neither JSON nor
    /// Prometheus text), as a misrouted ingress would.
    Garbage,
    /// Up, but `/api/health` reports `"database": false`.
    DatabaseDown,
    /// Healthy, but closes a connection without answering when a second
    /// request arrives on it: a keep-alive timeout that expires just as the
    /// client reuses the connection.
    ClosesReused,
}

/// What `/metrics` exposes.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMetrics {
    /// `http_requests_total` per status code; `None` leaves the metric out.
    pub requests: Option<BTreeMap<u16, f64>>,
    /// The `knowton_tenant_users` gauge; `None` leaves it out.
    pub users: Option<f64>,
}

impl Default for SimMetrics {
    fn default() -> Self {
        SimMetrics {
            requests: Some(BTreeMap::from([(200, 100.0), (503, 0.0)])),
            users: Some(12.0),
        }
    }
}

/// A simulated pod; stops serving when dropped.
#[derive(Debug)]
pub struct SimPod {
    addr: SocketAddr,
    shared: Arc<PodState>,
    server: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct PodState {
    state: Mutex<Answers>,
    /// Bumped by [`SimPod::crash`]: every connection is reset and the
    /// listener closed.
    crash: watch::Sender<u64>,
}

impl Default for PodState {
    fn default() -> Self {
        PodState {
            state: Mutex::default(),
            crash: watch::Sender::new(0),
        }
    }
}

#[derive(Debug)]
struct Answers {
    behaviour: Behaviour,
    metrics: SimMetrics,
    /// Served verbatim on `/metrics` instead of `metrics` when set.
    metrics_text: Option<String>,
    requests: HashMap<String, u64>,
    connections: u64,
    /// Idle connections are closed (a clean FIN) after this long without a
    /// request: a server's keep-alive timeout.
    idle_timeout: Option<Duration>,
}

impl Default for Answers {
    fn default() -> Self {
        Answers {
            behaviour: Behaviour::Healthy,
            metrics: SimMetrics::default(),
            metrics_text: None,
            requests: HashMap::new(),
            connections: 0,
            idle_timeout: None,
        }
    }
}

impl PodState {
    fn lock(&self) -> MutexGuard<'_, Answers> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SimPod {
    /// A healthy pod listening on `ip:port` (port 0: any free port). Must be
    /// called inside a tokio runtime; panics if the address cannot be bound.
    pub fn start(ip: Ipv4Addr, port: u16) -> SimPod {
        let addr = SocketAddr::from((ip, port));
        Self::try_start(ip, port)
            .unwrap_or_else(|err| panic!("bind simulated pod on {addr}: {err}"))
    }

    /// [`Self::start`], returning the error when `ip:port` cannot be bound
    /// (e.g. 127.0.0.2 where only 127.0.0.1 is a loopback address).
    pub fn try_start(ip: Ipv4Addr, port: u16) -> std::io::Result<SimPod> {
        let shared = Arc::new(PodState::default());
        let listener = try_bind(SocketAddr::from((ip, port)))?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(SimPod {
            addr,
            shared,
            server: Mutex::new(Some(server)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The pod's base URL, `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches behaviour. `Refuse` returns once the pod no longer listens
    /// (and has closed its open connections); any other behaviour listens
    /// again on the same address.
    pub async fn set(&self, behaviour: Behaviour) {
        self.shared.lock().behaviour = behaviour;
        if behaviour == Behaviour::Refuse {
            let server = self.server_slot().take();
            if let Some(server) = server {
                server.abort();
                // Resolves once the task, and with it the listener, is dropped.
                let _ = server.await;
            }
        } else {
            let mut slot = self.server_slot();
            if slot.is_none() {
                let listener = bind(self.addr);
                *slot = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
            }
        }
    }

    /// The process dies: every open connection is reset (`SO_LINGER` 0,
    /// so the client sees an RST, not a FIN) and the listener closes, so
    /// new connections are refused until [`Self::set`] to a behaviour that
    /// listens. Returns once all of that is done.
    pub async fn crash(&self) {
        self.shared.lock().behaviour = Behaviour::Refuse;
        let server = self.server_slot().take();
        if let Some(server) = server {
            self.shared.crash.send_modify(|n| *n += 1);
            // The accept loop resets its connections and returns.
            let _ = server.await;
        }
    }

    /// Closes connections idle for `timeout` (`None`: never), as a
    /// server's keep-alive timeout does: a clean close, not a failure.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.shared.lock().idle_timeout = timeout;
    }

    pub fn behaviour(&self) -> Behaviour {
        self.shared.lock().behaviour
    }

    /// Changes what `/metrics` exposes.
    pub fn update_metrics(&self, change: impl FnOnce(&mut SimMetrics)) {
        change(&mut self.shared.lock().metrics);
    }

    /// Advances `http_requests_total{code}` by `n` (adding the series, and
    /// the metric, if absent).
    pub fn count_requests(&self, code: u16, n: f64) {
        self.update_metrics(|m| *m.requests.get_or_insert_default().entry(code).or_default() += n);
    }

    /// Serves exactly `text` on `/metrics` (`None`: back to the generated text).
    pub fn set_metrics_text(&self, text: Option<String>) {
        self.shared.lock().metrics_text = text;
    }

    /// Requests received for `path` (query strings ignored), whatever the answer.
    pub fn requests(&self, path: &str) -> u64 {
        self.shared.lock().requests.get(path).copied().unwrap_or(0)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        let server = self.server_slot().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    fn server_slot(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SimPod {
    fn drop(&mut self) {
        if let Some(server) = self.server_slot().take() {
            server.abort();
        }
    }
}

/// Binds with `SO_REUSEADDR`, so a pod can listen again on its address
/// while its old connections linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> TcpListener {
    try_bind(addr).unwrap_or_else(|err| panic!("bind simulated pod on {addr}: {err}"))
}

fn try_bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Accepts connections until aborted; aborting also drops (and so aborts)
/// every connection task. On a crash, resets every connection and returns.
async fn accept_loop(listener: TcpListener, shared: Arc<PodState>) {
    let mut connections = JoinSet::new();
    let mut crash = shared.crash.subscribe();
    loop {
        tokio::select! {
            _ = crash.changed() => {
                drop(listener);
                while connections.join_next().await.is_some() {}
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.lock().connections += 1;
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream, shared.clone(), crash.clone()));
                }
                // Out of descriptors or the like: back off a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One request's head, as far as the simulator cares.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    content_length: usize,
    close: bool,
}

/// Serves requests on one connection until the client closes it, or
/// resets it when the pod crashes.
async fn serve(mut stream: TcpStream, shared: Arc<PodState>, mut crash: watch::Receiver<u64>) {
    let crashed = {
        let serving = serve_requests(&mut stream, &shared);
        tokio::pin!(serving);
        tokio::select! {
            () = &mut serving => false,
            _ = crash.changed() => true,
        }
    };
    if crashed {
        // Dropped with SO_LINGER 0: the kernel sends an RST.
        let _ = stream.set_zero_linger();
    }
}

async fn serve_requests(stream: &mut TcpStream, shared: &PodState) {
    let mut buf = Vec::with_capacity(1024);
    let mut served = 0_u64;
    loop {
        let idle_timeout = shared.lock().idle_timeout;
        let head = match idle_timeout {
            Some(idle) if buf.is_empty() => {
                match tokio::time::timeout(idle, read_head(stream, &mut buf)).await {
                    Ok(head) => head,
                    // Idle too long: a clean close.
                    Err(_) => return,
                }
            }
            _ => read_head(stream, &mut buf).await,
        };
        let Some(head) = head else {
            return;
        };
        served += 1;
        while buf.len() < head.content_length {
            if read_more(stream, &mut buf).await.is_none() {
                return;
            }
        }
        buf.drain(..head.content_length);
        let (behaviour, reply) = {
            let mut state = shared.lock();
            *state.requests.entry(head.path.clone()).or_default() += 1;
            (state.behaviour, answer(&state, &head))
        };
        if behaviour == Behaviour::ClosesReused && served > 1 {
            return;
        }
        match behaviour {
            Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
            Behaviour::Jitter(most) => tokio::time::sleep(jitter(most)).await,
            _ => {}
        }
        if stream.write_all(&reply).await.is_err() || head.close {
            return;
        }
    }
}

/// A random delay in `0..=most` (std only: a fresh `RandomState` is
/// randomly keyed).
fn jitter(most: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = u64::try_from(most.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % nanos.saturating_add(1))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Head> {
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        read_more(stream, buf).await?;
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut head = Head {
        method,
        path,
        content_length: 0,
        close: request_line.next() == Some("HTTP/1.0"),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Some(head)
}

const HEALTHY_JSON: &str =
    r#"{"status":"ok","database":true,"version":"2.14.0","uptimeSeconds":86400}"#;
const DEGRADED_JSON: &str = concat!(
    r#"{"status":"degraded","database":false,"version":"2.14.0","uptimeSeconds":86400,"#,
    r#""errors":["database: connect ECONNREFUSED 10.96.14.3:5432"]}"#
);
const GARBAGE: &str = "<html><head><title>502 Bad Gateway</title></head>\n\
                       <body><center><h1>502 Bad Gateway</h1></center></body></html>\n";

/// The bytes of the response to `head` in the current state.
fn answer(state: &Answers, head: &Head) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json; charset=utf-8";
    const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
    if head.method != "GET" {
        return response(405, TEXT, "method not allowed\n");
    }
    let known = matches!(head.path.as_str(), "/health" | "/api/health" | "/metrics");
    if !known {
        return response(404, TEXT, "not found\n");
    }
    match state.behaviour {
        Behaviour::Status(code) => response(code, TEXT, &format!("{} {}\n", code, reason(code))),
        Behaviour::Garbage => response(200, "text/html", GARBAGE),
        behaviour => match head.path.as_str() {
            "/health" => response(200, TEXT, "ok"),
            "/api/health" if behaviour == Behaviour::DatabaseDown => {
                response(200, JSON, DEGRADED_JSON)
            }
            "/api/health" => response(200, JSON, HEALTHY_JSON),
            _ => match &state.metrics_text {
                Some(text) => response(200, PROMETHEUS, text),
                None => response(200, PROMETHEUS, &render(&state.metrics)),
            },
        },
    }
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// The text a Node.js backend with prom-client would expose.
fn render(metrics: &SimMetrics) -> String {
    let mut text = String::from(
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total 42.5\n",
    );
    if let Some(requests) = &metrics.requests {
        text.push_str(
            "# HELP http_requests_total Total number of HTTP requests.\n\
             # TYPE http_requests_total counter\n",
        );
        for (code, n) in requests {
            text.push_str(&format!(
                "http_requests_total{{method=\"GET\",code=\"{code}\",route=\"/api/courses\"}} {n}\n"
            ));
        }
    }
    if let Some(users) = metrics.users {
        text.push_str(&format!(
            "# HELP knowton_tenant_users Registered users of the tenant.\n\
             # TYPE knowton_tenant_users gauge\n\
             knowton_tenant_users {users}\n"
        ));
    }
    text.push_str("nodejs_eventloop_lag_seconds 0.0012\n");
    text
}
