//! One pod's HTTP/1.1 keep-alive connection, and the timings of each request sent on it.
//!
//! A deliberately small client: the agent sends only `GET`s to plain-HTTP
//! pods and keeps one idle connection per pod between rounds, so an idle
//! connection must cost no more than its socket. A general client keeps a
//! driver task and read/write buffers per connection (tens of KiB each:
//! most of the agent's memory at 1,000 pods); here a connection is a bare
//! `TcpStream`, and buffers exist only while a request is in flight.
//! Responses are parsed with `httparse`; bodies are framed by
//! `Content-Length`, chunked encoding, or the end of the connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;
use knowton_proto::agent::v1::Failure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod chunked;
mod response;

pub use response::read_response;
use response::{Progress, READ_SIZE, ResponseReader};

const USER_AGENT: &str = concat!("knowton-agent/", env!("CARGO_PKG_VERSION"));

/// Where a pod's backend listens, taken from its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host:port` as connected to and sent in the `Host` header.
    authority: String,
    /// The host without brackets: the pod's IP when the URL names one.
    pub(crate) host: String,
    /// Path prefix of the base URL, without a trailing slash.
    base_path: String,
}

impl Endpoint {
    /// Parses a plain `http://host[:port][/prefix]` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, Failed> {
        let uri: Uri = url
            .parse()
            .map_err(|err| Failed::other(format!("invalid pod url {url:?}: {err}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(Failed::other(format!(
                    "https is not supported yet (pod url {url})"
                )));
            }
            _ => return Err(Failed::other(format!("pod url {url:?} is not http://"))),
        }
        let Some(host) = uri.host() else {
            return Err(Failed::other(format!("pod url {url:?} has no host")));
        };
        let port = uri.port_u16().unwrap_or(80);
        Ok(Endpoint {
            authority: format!("{host}:{port}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    pub(crate) failure: Failure,
    pub(crate) detail: String,
    /// The connection could not be made (as opposed to a request failing on it).
    pub(crate) connecting: bool,
}

impl Failed {
    fn other(detail: String) -> Self {
        Failed {
            failure: Failure::Other,
            detail,
            connecting: true,
        }
    }
}

/// A response: status and the whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// One request's result, with its timings in microseconds.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// Time spent connecting for this request; 0 when the connection was reused.
    pub(crate) connect_us: u64,
    /// From sending the request to the response head.
    pub(crate) first_byte_us: u64,
    /// From sending the request to the end of the body (or the failure).
    pub(crate) latency_us: u64,
    /// The response head arrived.
    pub(crate) responded: bool,
    pub(crate) result: Result<Response, Failed>,
}

/// An open connection to a pod, idle between requests.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Opened by a re-check after the pod closed an idle connection, and
    /// not used by a probe since.
    quiet: bool,
}

/// How the pod ended an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// A FIN, or something unasked (a `408` before closing, say): what a
    /// server's keep-alive timeout does.
    Clean,
    /// An RST or a read error: what a dying process's kernel may do.
    Reset,
}

impl Conn {
    /// Whether the connection can carry another request: the pod has not
    /// closed it, and has sent nothing unasked.
    pub(crate) fn usable(&self) -> bool {
        let mut probe = [0_u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    pub(crate) fn quiet(&self) -> bool {
        self.quiet
    }

    /// Resolves when the pod closes this idle connection (or sends on it),
    /// saying how; costs no buffer while waiting.
    pub(crate) async fn closed(&self) -> Closed {
        loop {
            if self.stream.readable().await.is_err() {
                return Closed::Reset;
            }
            let mut probe = [0_u8; 1];
            match self.stream.try_read(&mut probe) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Closed::Reset,
                Ok(_) => return Closed::Clean,
            }
        }
    }
}

/// Sends GET requests to one pod, reusing one connection while it stays
/// usable (and across probes: see [`Client::into_idle`]).
#[derive(Debug)]
pub(crate) struct Client<'a> {
    endpoint: &'a Endpoint,
    /// Bounds each request, connecting included.
    timeout: Duration,
    conn: Option<Conn>,
    /// A request was left half done (its future dropped): the connection
    /// may still get its answer, so it is not kept.
    busy: bool,
}

impl<'a> Client<'a> {
    /// A client that starts on `idle`, a connection kept from an earlier probe.
    pub(crate) fn new(endpoint: &'a Endpoint, timeout: Duration, idle: Option<Conn>) -> Self {
        Client {
            endpoint,
            timeout,
            conn: idle.filter(Conn::usable),
            busy: false,
        }
    }

    /// The connection, if it can serve the next probe.
    pub(crate) fn into_idle(mut self) -> Option<Conn> {
        if self.busy {
            return None;
        }
        self.conn.take().filter(Conn::usable)
    }

    /// [`Self::into_idle`] for a re-check's connection: see [`Conn::quiet`].
    pub(crate) fn into_quiet_idle(self) -> Option<Conn> {
        self.into_idle().map(|mut conn| {
            conn.quiet = true;
            conn
        })
    }

    /// `GET <base><path>`, on a new connection when `fresh` (or when there is
    /// no usable one). Bodies longer than `limit` bytes are a bad body.
    ///
    /// A request that fails on a reused connection before any response
    /// arrived (the pod closed the idle connection as the request left) is
    /// sent again at once on a new connection, within the same deadline: a
    /// stale connection is not the pod's failure.
    pub(crate) async fn get(&mut self, path: &str, fresh: bool, limit: usize) -> Attempt {
        let deadline = Instant::now() + self.timeout;
        let mut fresh = fresh;
        loop {
            let reused = !fresh && self.conn.is_some();
            let attempt = self.attempt(path, fresh, limit, deadline).await;
            match &attempt.result {
                Err(failed)
                    if reused
                        && !attempt.responded
                        && failed.failure != Failure::Timeout
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(authority = %self.endpoint.authority, detail = %failed.detail, "reused connection was closed; retrying on a new one");
                    fresh = true;
                }
                _ => return attempt,
            }
        }
    }

    async fn attempt(
        &mut self,
        path: &str,
        fresh: bool,
        limit: usize,
        deadline: Instant,
    ) -> Attempt {
        let started = Instant::now();
        let mut attempt = Attempt {
            connect_us: 0,
            first_byte_us: 0,
            latency_us: 0,
            responded: false,
            result: Err(Failed::other(String::new())),
        };
        if fresh || self.conn.is_none() {
            self.conn = None;
            let connected = tokio::time::timeout_at(deadline, self.connect()).await;
            attempt.connect_us = micros(started.elapsed());
            match connected {
                Ok(Ok(conn)) => self.conn = Some(conn),
                Ok(Err(failed)) => {
                    attempt.result = Err(failed);
                    return attempt;
                }
                Err(_) => {
                    attempt.result = Err(Failed {
                        failure: Failure::Timeout,
                        detail: format!(
                            "connect to {} timed out after {:?}",
                            self.endpoint.authority, self.timeout
                        ),
                        connecting: true,
                    });
                    return attempt;
                }
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.quiet = false;
        let sent = Instant::now();
        let mut first_byte = None;
        let exchange = request(
            &mut conn.stream,
            self.endpoint,
            path,
            limit,
            &mut first_byte,
        );
        self.busy = true;
        let result = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failed {
                failure: Failure::Timeout,
                detail: format!("GET {path} timed out after {:?}", self.timeout),
                connecting: false,
            }),
        };
        self.busy = false;
        attempt.latency_us = micros(sent.elapsed());
        attempt.responded = first_byte.is_some();
        attempt.first_byte_us = first_byte.map_or(0, |at: Instant| micros(at - sent));
        attempt.result = match result {
            Ok((response, reusable)) => {
                if !reusable {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(failed) => {
                // A request cut short leaves the connection unusable.
                self.conn = None;
                Err(failed)
            }
        };
        attempt
    }

    async fn connect(&self) -> Result<Conn, Failed> {
        let authority = &self.endpoint.authority;
        let addr: SocketAddr = tokio::net::lookup_host(authority)
            .await
            .map_err(|err| Failed {
                failure: Failure::Dns,
                detail: format!("resolve {authority}: {err}"),
                connecting: true,
            })?
            .next()
            .ok_or_else(|| Failed {
                failure: Failure::Dns,
                detail: format!("resolve {authority}: no address"),
                connecting: true,
            })?;
        let stream = TcpStream::connect(addr).await.map_err(|err| Failed {
            failure: match err.kind() {
                std::io::ErrorKind::ConnectionRefused => Failure::Refused,
                std::io::ErrorKind::TimedOut => Failure::Timeout,
                _ => Failure::Other,
            },
            detail: format!("connect to {addr}: {err}"),
            connecting: true,
        })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            quiet: false,
        })
    }
}

/// Sends one request and reads the whole response; `first_byte` records
/// when the response head arrived. Returns the response and whether the
/// connection can carry another request.
async fn request(
    stream: &mut TcpStream,
    endpoint: &Endpoint,
    path: &str,
    limit: usize,
    first_byte: &mut Option<Instant>,
) -> Result<(Response, bool), Failed> {
    let failed = |failure: Failure, what: String| Failed {
        failure,
        detail: format!("GET {path}: {what}"),
        connecting: false,
    };
    let io = |what: &str, err: std::io::Error| failed(Failure::Other, format!("{what}: {err}"));
    let req = format!(
        "GET {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n",
        endpoint.base_path, endpoint.authority
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|err| io("sending the request", err))?;

    let mut reader = ResponseReader::new(limit);
    loop {
        let room = reader.room();
        let read = read_more(stream, &mut reader.buf, room)
            .await
            .map_err(|err| {
                let what = if reader.has_head() {
                    "reading the body"
                } else {
                    "reading the response"
                };
                io(what, err)
            })?;
        let progress = reader
            .advance(read == 0)
            .map_err(|bad| failed(bad.failure, bad.what))?;
        if first_byte.is_none() && reader.has_head() {
            *first_byte = Some(Instant::now());
        }
        if let Progress::Done(response, reusable) = progress {
            return Ok((response, reusable));
        }
    }
}

/// Reads what is available into `buf` (reading at most up to `cap` bytes
/// in all); 0 means the pod closed the connection.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let room = cap.saturating_sub(buf.len()).clamp(1, READ_SIZE);
    buf.reserve(room);
    let mut limited = (&mut *stream).take(room as u64);
    limited.read_buf(buf).await
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
