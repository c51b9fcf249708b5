//! A real HTTP receiver for webhook and Slack notifications: an axum
//! server on a loopback port, plain or over TLS with its own CA, that
//! records every request (arrival time, headers, body) and every TCP
//! connection, and answers as the test scripts it (a status, a
//! `Retry-After`, a delay, an endless body), then 200 by default.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// `Retry-After` as the receiver sends it.
#[derive(Debug, Clone, Copy)]
pub enum RetryAfter {
    Seconds(u64),
    /// An HTTP-date this far after the request arrived.
    DateIn(Duration),
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<RetryAfter>,
    /// How long to wait before answering.
    pub delay: Duration,
    /// Whether the body never ends (see [`Self::endless`]).
    pub endless: bool,
}

/// What an endless body sends per chunk, and how many chunks before a
/// pause of [`ENDLESS_PAUSE`] (about 25 MiB/s: a reader that keeps
/// reading holds more memory every second, without a test that fails
/// taking the machine's memory with it).
const ENDLESS_CHUNK: usize = 64 * 1024;
const ENDLESS_CHUNKS_PER_PAUSE: u64 = 4;
const ENDLESS_PAUSE: Duration = Duration::from_millis(10);

impl Answer {
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            endless: false,
        }
    }

    /// The body never ends: chunks of `x` until the client goes away
    /// (see [`Receiver::streamed`]).
    pub fn endless(mut self) -> Self {
        self.endless = true;
        self
    }

    pub fn retry_after(mut self, retry_after: RetryAfter) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as it arrived, and what it was answered.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub wall: SystemTime,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
    /// The `Retry-After` wall-clock time it was answered with, if any.
    pub retry_at: Option<SystemTime>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
struct Inner {
    script: VecDeque<Answer>,
    default: Answer,
    hits: Vec<Hit>,
}

/// What the receiver saw below HTTP: connections and endless bodies.
#[derive(Debug, Default)]
struct Counters {
    /// TCP connections accepted (before any TLS handshake).
    connections: AtomicUsize,
    /// Bytes of endless bodies handed to the connection.
    streamed: AtomicU64,
    /// Endless bodies the client stopped reading (connection closed).
    abandoned: AtomicUsize,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    counters: Arc<Counters>,
}

/// A CA and a certificate for `localhost` and `127.0.0.1` it signed: what
/// an https receiver serves, and what a coordinator must trust
/// (`--notify-ca-file`) to reach it.
pub struct ReceiverTls {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for ReceiverTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiverTls(..)")
    }
}

impl ReceiverTls {
    pub fn generate() -> Self {
        use knowton_coordinator::certs::{CertificateAuthority, Validity};
        let ca = CertificateAuthority::generate("webhook receiver test CA").unwrap();
        let issued = ca
            .issue_server(
                &["localhost".to_owned(), "127.0.0.1".to_owned()],
                Validity::days(2),
            )
            .unwrap();
        ReceiverTls {
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }

    /// Writes the CA certificate to `dir/receiver-ca.pem` and returns its path.
    pub fn write_ca(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("receiver-ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    fn acceptor(&self) -> TlsAcceptor {
        knowton_coordinator::certs::install_crypto_provider();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    scheme: &'static str,
    inner: Arc<Mutex<Inner>>,
    counters: Arc<Counters>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Answers 200 to everything until scripted otherwise.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// [`Self::start`] on a given address (a receiver that comes up late).
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::serve(addr, None).await
    }

    /// [`Self::start`] over https with `tls`'s certificate (for
    /// `localhost` and `127.0.0.1`).
    pub async fn start_tls(tls: &ReceiverTls) -> Self {
        Self::serve(SocketAddr::from(([127, 0, 0, 1], 0)), Some(tls.acceptor())).await
    }

    async fn serve(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: VecDeque::new(),
            default: Answer::status(200),
            hits: Vec::new(),
        }));
        let counters = Arc::new(Counters::default());
        let app = axum::Router::new().fallback(record).with_state(Shared {
            inner: inner.clone(),
            counters: counters.clone(),
        });
        let tcp = TcpListener::bind(addr).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = Counting {
            tcp,
            tls,
            counters: counters.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            addr,
            scheme,
            inner,
            counters,
            _stop: stop,
        }
    }

    /// `http(s)://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// The URL with `host` (a name that resolves to 127.0.0.1) for the address.
    pub fn url_via(&self, host: &str, path: &str) -> String {
        format!("{}://{host}:{}{path}", self.scheme, self.addr.port())
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Bytes of endless bodies sent so far, and how many of those bodies
    /// the client abandoned (closed the connection on).
    pub fn streamed(&self) -> (u64, usize) {
        (
            self.counters.streamed.load(Ordering::SeqCst),
            self.counters.abandoned.load(Ordering::SeqCst),
        )
    }

    /// Answers the next requests with `answers`, in order, then the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// What to answer once the script is used up.
    pub fn answer_by_default(&self, answer: Answer) {
        self.inner.lock().unwrap().default = answer;
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(Hit::accepted).collect()
    }
}

/// Any stream a connection runs over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Accepts TCP connections, counting them, and completes the TLS
/// handshake when serving https (a failed one is dropped).
struct Counting {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    counters: Arc<Counters>,
}

impl axum::serve::Listener for Counting {
    type Io = Box<dyn Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                continue;
            };
            self.counters.connections.fetch_add(1, Ordering::SeqCst);
            let Some(tls) = &self.tls else {
                return (Box::new(stream), peer);
            };
            let handshake = tokio::time::timeout(Duration::from_secs(10), tls.accept(stream));
            if let Ok(Ok(stream)) = handshake.await {
                return (Box::new(stream), peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An endless body: chunks until the connection takes no more, counted.
fn endless_body(counters: Arc<Counters>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'x'; ENDLESS_CHUNK]);
        let mut sent = 0u64;
        // Until the body is dropped: the connection closed.
        while tx.send(Ok(chunk.clone())).await.is_ok() {
            counters
                .streamed
                .fetch_add(ENDLESS_CHUNK as u64, Ordering::SeqCst);
            sent += 1;
            if sent.is_multiple_of(ENDLESS_CHUNKS_PER_PAUSE) {
                tokio::time::sleep(ENDLESS_PAUSE).await;
            }
        }
        counters.abandoned.fetch_add(1, Ordering::SeqCst);
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn record(
    State(Shared { inner, counters }): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (at, wall) = (Instant::now(), SystemTime::now());
    let answer = {
        let mut inner = inner.lock().unwrap();
        inner
            .script
            .pop_front()
            .unwrap_or_else(|| inner.default.clone())
    };
    let retry_header = answer.retry_after.map(|r| match r {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::DateIn(d) => httpdate::fmt_http_date(wall + d),
    });
    // What the header says (an HTTP-date has whole seconds).
    let retry_at = answer
        .retry_after
        .zip(retry_header.as_deref())
        .map(|(r, h)| match r {
            RetryAfter::Seconds(s) => wall + Duration::from_secs(s),
            RetryAfter::DateIn(_) => httpdate::parse_http_date(h).unwrap(),
        });
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    inner.lock().unwrap().hits.push(Hit {
        at,
        wall,
        path: uri.path().to_owned(),
        headers,
        body,
        status: answer.status,
        retry_at,
    });
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut response = if answer.endless {
        (status, endless_body(counters)).into_response()
    } else {
        (status, format!("scripted {}", answer.status)).into_response()
    };
    if let Some(value) = retry_header {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    response
}
