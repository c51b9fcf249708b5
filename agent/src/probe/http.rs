//! One pod's HTTP/1.1 keep-alive connection, and the timings of each request sent on it.

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use knowton_proto::agent::v1::Failure;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    pub(crate) result: Result<Response, Failed>,
}

/// A connection whose driver task ends when the connection is dropped.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Sends GET requests to one pod, reusing one connection while it stays usable.
#[derive(Debug)]
pub(crate) struct Client<'a> {
    endpoint: &'a Endpoint,
    /// Bounds each request, connecting included.
    timeout: Duration,
    conn: Option<Conn>,
}

impl<'a> Client<'a> {
    pub(crate) fn new(endpoint: &'a Endpoint, timeout: Duration) -> Self {
        Client {
            endpoint,
            timeout,
            conn: None,
        }
    }

    /// `GET <base><path>`, on a new connection when `fresh` (or when there is
    /// no usable one). Bodies longer than `limit` bytes are a bad body.
    pub(crate) async fn get(&mut self, path: &str, fresh: bool, limit: usize) -> Attempt {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut attempt = Attempt {
            connect_us: 0,
            first_byte_us: 0,
            latency_us: 0,
            result: Err(Failed::other(String::new())),
        };
        if fresh || self.conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
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
        let sent = Instant::now();
        let mut first_byte = None;
        let exchange = request(
            &mut conn.sender,
            self.endpoint,
            path,
            limit,
            &mut first_byte,
        );
        let result = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failed {
                failure: Failure::Timeout,
                detail: format!("GET {path} timed out after {:?}", self.timeout),
                connecting: false,
            }),
        };
        attempt.latency_us = micros(sent.elapsed());
        attempt.first_byte_us = first_byte.map_or(0, |at: Instant| micros(at - sent));
        if result.is_err() {
            // A request cut short leaves the connection unusable.
            self.conn = None;
        }
        attempt.result = result;
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
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| Failed::other(format!("http handshake with {addr}: {}", chain(&err))))?;
        let driver = tokio::spawn(async move {
            // Errors surface on the request that was in flight.
            let _ = connection.await;
        });
        Ok(Conn { sender, driver })
    }
}

/// Sends one request and reads the whole response; `first_byte` records
/// when the response head arrived.
async fn request(
    sender: &mut SendRequest<Empty<Bytes>>,
    endpoint: &Endpoint,
    path: &str,
    limit: usize,
    first_byte: &mut Option<Instant>,
) -> Result<Response, Failed> {
    let failed = |what: &str, err: &hyper::Error| Failed {
        failure: Failure::Other,
        detail: format!("GET {path}: {what}: {}", chain(err)),
        connecting: false,
    };
    let req = Request::get(format!("{}{path}", endpoint.base_path))
        .header(header::HOST, &endpoint.authority)
        .header(header::USER_AGENT, USER_AGENT)
        .body(Empty::new())
        .map_err(|err| Failed::other(format!("GET {path}: {err}")))?;
    sender
        .ready()
        .await
        .map_err(|err| failed("connection closed", &err))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|err| failed("no response", &err))?;
    *first_byte = Some(Instant::now());
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| failed("reading the body", &err))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Failed {
                    failure: Failure::BadBody,
                    detail: format!("GET {path}: body larger than {limit} bytes"),
                    connecting: false,
                });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Response {
        status,
        body: buf.into(),
    })
}

/// An error and its sources, joined with `: `.
fn chain(err: &hyper::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_http_urls() {
        let e = Endpoint::parse("http://10.0.3.7:3000").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.host.as_str()),
            ("10.0.3.7:3000", "10.0.3.7")
        );
        assert_eq!(e.base_path, "");
        let e = Endpoint::parse("http://[fd00::7]:3000/app/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.host.as_str()),
            ("[fd00::7]:3000", "fd00::7")
        );
        assert_eq!(e.base_path, "/app");
        assert_eq!(Endpoint::parse("http://pod").unwrap().authority, "pod:80");
    }

    #[test]
    fn https_and_nonsense_are_reported_not_panicked_on() {
        let err = Endpoint::parse("https://10.0.3.7:3000").unwrap_err();
        assert_eq!(err.failure, Failure::Other);
        assert!(
            err.detail.contains("https is not supported"),
            "{}",
            err.detail
        );
        assert_eq!(
            Endpoint::parse("not a url").unwrap_err().failure,
            Failure::Other
        );
        assert_eq!(
            Endpoint::parse("ftp://x").unwrap_err().failure,
            Failure::Other
        );
    }
}
