//! The HTTP listeners (REST API, metrics): a connection limit, header-read,
//! idle and request timeouts, and a graceful drain.
//!
//! Each connection is served by hyper's HTTP/1.1 connection driver (HTTP/2
//! is not served, so there are no streams to limit) and watched through the
//! phase it is in:
//!
//! | phase  | from                                  | closed after            |
//! |--------|---------------------------------------|-------------------------|
//! | fresh  | accept                                | `header_read_timeout`   |
//! | head   | first byte of a request head          | `header_read_timeout`   |
//! | busy   | head parsed, until its response ends  | (request timeout route) |
//! | idle   | a response ended (keep-alive)         | `idle_timeout`          |
//!
//! so a client that trickles a request head (slowloris) or holds a
//! connection open without a request is cut, whatever it sends. The request
//! timeout is a layer of the router ([`crate::api`]), where the route is
//! known: long-running routes keep their own bound.
//!
//! Beyond `max_connections` open connections, a new connection is accepted
//! and closed at once (and counted): the client learns at once that this
//! replica is full instead of waiting in the kernel's backlog, and the
//! listener keeps draining the backlog so that the held connections'
//! timeouts, not the backlog, decide when service resumes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::HttpMetrics;
pub use crate::metrics::{MIN_TOKEN_LEN, MetricsToken, MetricsTokenError, MetricsTokenSource};

/// The most a request head may take, in bytes (hyper's read buffer per
/// connection: bounds the memory of `max_connections` slow clients).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Flags of the HTTP listeners.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Seconds a client has to send a complete request head, counted from
    /// the connection's accept or from the first byte of a later request on
    /// a kept-alive connection.
    #[arg(
        long,
        env = "KNOWTON_HTTP_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub http_header_read_timeout_seconds: u64,

    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, env = "KNOWTON_HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub http_idle_timeout_seconds: u64,

    /// Seconds a request may take, body included, before it is answered 503
    /// `request_timeout`. Routes that wait by design keep their own, longer
    /// bound (check-all: 150 s, cleanup: 900 s).
    #[arg(
        long,
        env = "KNOWTON_HTTP_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub http_request_timeout_seconds: u64,

    /// Most open connections per listener; a connection beyond it is
    /// accepted and closed at once.
    #[arg(long, env = "KNOWTON_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,

    /// Address of a listener that serves only `GET /metrics` (for
    /// Prometheus; keep it off the tenants' network). Unset: no such listener.
    #[arg(long, env = "KNOWTON_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Bearer token required to read `/metrics` (16+ characters). With a
    /// token, `/metrics` is also served on the API port to whoever presents
    /// it; without one, only on --metrics-addr.
    #[arg(long, env = "KNOWTON_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// File holding the metrics bearer token (a mounted Secret).
    #[arg(
        long,
        env = "KNOWTON_METRICS_TOKEN_FILE",
        conflicts_with = "metrics_token"
    )]
    pub metrics_token_file: Option<PathBuf>,
}

impl Default for HttpArgs {
    fn default() -> Self {
        HttpArgs {
            http_header_read_timeout_seconds: 10,
            http_idle_timeout_seconds: 60,
            http_request_timeout_seconds: 30,
            http_max_connections: 1024,
            metrics_addr: None,
            metrics_token: None,
            metrics_token_file: None,
        }
    }
}

/// Limits of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Validated HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub limits: ConnectionLimits,
    pub request_timeout: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics_token: Option<MetricsTokenSource>,
}

impl HttpArgs {
    pub fn validate(&self, errors: &mut Vec<String>) -> HttpSettings {
        for (flag, value, max) in [
            (
                "--http-header-read-timeout-seconds",
                self.http_header_read_timeout_seconds,
                3600,
            ),
            (
                "--http-idle-timeout-seconds",
                self.http_idle_timeout_seconds,
                3600,
            ),
            (
                "--http-request-timeout-seconds",
                self.http_request_timeout_seconds,
                3600,
            ),
        ] {
            if !(1..=max).contains(&value) {
                errors.push(format!("{flag} must be between 1 and {max}"));
            }
        }
        if !(1..=1_000_000).contains(&self.http_max_connections) {
            errors.push("--http-max-connections must be between 1 and 1000000".to_owned());
        }
        let metrics_token = match (&self.metrics_token, &self.metrics_token_file) {
            (Some(token), _) => {
                if token.trim().len() < MIN_TOKEN_LEN {
                    errors.push(format!(
                        "--metrics-token / KNOWTON_METRICS_TOKEN must be at least {MIN_TOKEN_LEN} characters"
                    ));
                }
                Some(MetricsTokenSource::Inline(token.trim().to_owned()))
            }
            (None, Some(file)) => Some(MetricsTokenSource::File(file.clone())),
            (None, None) => None,
        };
        let secs = |s: u64| Duration::from_secs(s.max(1));
        HttpSettings {
            limits: ConnectionLimits {
                header_read_timeout: secs(self.http_header_read_timeout_seconds),
                idle_timeout: secs(self.http_idle_timeout_seconds),
                max_connections: self.http_max_connections.max(1),
            },
            request_timeout: secs(self.http_request_timeout_seconds),
            metrics_addr: self.metrics_addr,
            metrics_token,
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting,
/// asks every connection to finish its request in flight and close, and
/// returns once all have closed. Dropping the future closes them all.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<HttpMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: pause instead of
                // spinning; the connections' timeouts free some.
                tracing::warn!(error = %err, "failed to accept an HTTP connection");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics
                .connections_closed
                .with_label_values(&["over_limit"])
                .inc();
            tracing::debug!(%peer, "connection limit reached: closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            metrics.connections_open.inc();
            if let Some(reason) = serve_connection(stream, app, limits, stop).await {
                metrics
                    .connections_closed
                    .with_label_values(&[reason])
                    .inc();
                tracing::debug!(%peer, reason, "closed an HTTP connection");
            }
            metrics.connections_open.dec();
            drop(permit);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// What a connection is doing, for its timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted, no request yet.
    Fresh(Instant),
    /// Part of a request head has arrived.
    Head(Instant),
    /// Requests in flight (their responses not yet written).
    Busy(usize),
    /// Kept alive between requests.
    Idle(Instant),
}

#[derive(Debug)]
struct Watch {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Watch {
    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = f(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_bytes(&self) {
        let phase = self.phase();
        if matches!(phase, Phase::Idle(_)) {
            self.update(|p| match p {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                other => other,
            });
        }
    }

    fn request_started(&self) {
        self.update(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
    }

    fn response_ended(&self) {
        self.update(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }

    /// When the connection is to be closed, and why; none while busy.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, &'static str)> {
        match self.phase() {
            Phase::Fresh(at) | Phase::Head(at) => {
                Some((at + limits.header_read_timeout, "header_timeout"))
            }
            Phase::Idle(at) => Some((at + limits.idle_timeout, "idle_timeout")),
            Phase::Busy(_) => None,
        }
    }
}

/// Ends a request's busy phase when dropped: with its response body,
/// once hyper has written it (or given up).
struct ResponseGuard(Arc<Watch>);

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        self.0.response_ended();
    }
}

/// Serves one connection; returns why it was cut, if it was.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> Option<&'static str> {
    let watch = Arc::new(Watch {
        phase: Mutex::new(Phase::Fresh(Instant::now())),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        watch: watch.clone(),
    });
    let service = {
        let watch = watch.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            watch.request_started();
            let guard = ResponseGuard(watch.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &guard;
                        frame
                    }))
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let changed = watch.changed.notified();
        let deadline = watch.deadline(&limits);
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "HTTP connection ended with an error");
                }
                return None;
            }
            _ = changed => {}
            _ = sleep => {
                // Still due (no bytes or request arrived meanwhile): cut.
                if let Some((at, reason)) = watch.deadline(&limits)
                    && at <= Instant::now()
                {
                    return Some(reason);
                }
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A TCP stream that reports arriving bytes to its connection's [`Watch`].
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_bytes();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
