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
}

impl Conn {
    /// Whether the connection can carry another request: the pod has not
    /// closed it, and has sent nothing unasked.
    fn usable(&self) -> bool {
        let mut probe = [0_u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock
        )
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
}

impl<'a> Client<'a> {
    /// A client that starts on `idle`, a connection kept from an earlier probe.
    pub(crate) fn new(endpoint: &'a Endpoint, timeout: Duration, idle: Option<Conn>) -> Self {
        Client {
            endpoint,
            timeout,
            conn: idle.filter(Conn::usable),
        }
    }

    /// The connection, if it can serve the next probe.
    pub(crate) fn into_idle(mut self) -> Option<Conn> {
        self.conn.take().filter(Conn::usable)
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
        let sent = Instant::now();
        let mut first_byte = None;
        let exchange = request(
            &mut conn.stream,
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
        Ok(Conn { stream })
    }
}

/// Largest response head read.
const HEAD_LIMIT: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 64;

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// Read until the pod closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// Bytes of the head, to drop from the buffer.
    len: usize,
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

    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let head = loop {
        if read_more(stream, &mut buf, HEAD_LIMIT)
            .await
            .map_err(|err| io("reading the response", err))?
            == 0
        {
            return Err(failed(
                Failure::Other,
                "connection closed before a response".to_owned(),
            ));
        }
        match parse_head(&buf) {
            Ok(Some(head)) if (100..200).contains(&head.status) => {
                // An interim response: the real one follows.
                buf.drain(..head.len);
            }
            Ok(Some(head)) => break head,
            Ok(None) if buf.len() >= HEAD_LIMIT => {
                return Err(failed(
                    Failure::BadBody,
                    format!("response head larger than {HEAD_LIMIT} bytes"),
                ));
            }
            Ok(None) => {}
            Err(err) => {
                return Err(failed(
                    Failure::BadBody,
                    format!("malformed response: {err}"),
                ));
            }
        }
    };
    *first_byte = Some(Instant::now());
    buf.drain(..head.len);
    let too_large = || failed(Failure::BadBody, format!("body larger than {limit} bytes"));
    let body = match head.framing {
        Framing::Length(len) => {
            if len > limit {
                return Err(too_large());
            }
            while buf.len() < len {
                if read_more(stream, &mut buf, len)
                    .await
                    .map_err(|err| io("reading the body", err))?
                    == 0
                {
                    return Err(failed(
                        Failure::Other,
                        "connection closed mid-body".to_owned(),
                    ));
                }
            }
            if buf.len() > len {
                // Bytes the pod sent unasked: do not reuse the connection.
                buf.truncate(len);
                return Ok((
                    Response {
                        status: head.status,
                        body: buf.into(),
                    },
                    false,
                ));
            }
            buf
        }
        Framing::Close => {
            loop {
                if buf.len() > limit {
                    return Err(too_large());
                }
                if read_more(stream, &mut buf, limit + 1)
                    .await
                    .map_err(|err| io("reading the body", err))?
                    == 0
                {
                    break;
                }
            }
            return Ok((
                Response {
                    status: head.status,
                    body: buf.into(),
                },
                false,
            ));
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                match dechunk(&buf[at..], &mut body, limit) {
                    Ok(Dechunk::Done(used)) => {
                        at += used;
                        break;
                    }
                    Ok(Dechunk::More(used)) => at += used,
                    Err(Dechunked::TooLarge) => return Err(too_large()),
                    Err(Dechunked::Malformed(what)) => {
                        return Err(failed(
                            Failure::BadBody,
                            format!("bad chunked body: {what}"),
                        ));
                    }
                }
                buf.drain(..at);
                at = 0;
                if read_more(stream, &mut buf, limit + HEAD_LIMIT)
                    .await
                    .map_err(|err| io("reading the body", err))?
                    == 0
                {
                    return Err(failed(
                        Failure::Other,
                        "connection closed mid-body".to_owned(),
                    ));
                }
            }
            let clean = at == buf.len();
            return Ok((
                Response {
                    status: head.status,
                    body: body.into(),
                },
                head.keep_alive && clean,
            ));
        }
    };
    Ok((
        Response {
            status: head.status,
            body: Bytes::from(body),
        },
        head.keep_alive,
    ))
}

/// Reads what is available into `buf` (reading at most up to `cap` bytes
/// in all); 0 means the pod closed the connection.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let room = cap.saturating_sub(buf.len()).clamp(1, 16 * 1024);
    buf.reserve(room);
    let mut limited = (&mut *stream).take(room as u64);
    limited.read_buf(buf).await
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let (mut length, mut chunked) = (None, false);
    for h in response.headers.iter() {
        let value =
            std::str::from_utf8(h.value).map_err(|_| format!("header {} is not text", h.name))?;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".to_owned());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(format!("unsupported Transfer-Encoding {value:?}"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok(Some(Head {
        status,
        framing,
        keep_alive,
        len,
    }))
}

/// Progress through a chunked body.
#[derive(Debug, PartialEq, Eq)]
enum Dechunk {
    /// The body ended; this many bytes of the input were its end.
    Done(usize),
    /// This many bytes were consumed; more input is needed.
    More(usize),
}

#[derive(Debug, PartialEq, Eq)]
enum Dechunked {
    TooLarge,
    Malformed(&'static str),
}

/// Decodes whole chunks from `input` into `body`.
fn dechunk(input: &[u8], body: &mut Vec<u8>, limit: usize) -> Result<Dechunk, Dechunked> {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            if rest.len() > 1024 {
                return Err(Dechunked::Malformed("chunk size line too long"));
            }
            return Ok(Dechunk::More(at));
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| Dechunked::Malformed("chunk size is not text"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| Dechunked::Malformed("chunk size is not hexadecimal"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let trailers = &rest[line_end + 2..];
            let mut t = 0;
            loop {
                let Some(end) = trailers[t..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(Dechunk::More(at));
                };
                if end == 0 {
                    return Ok(Dechunk::Done(at + line_end + 2 + t + 2));
                }
                t += end + 2;
            }
        }
        if body.len() + size > limit {
            return Err(Dechunked::TooLarge);
        }
        let data = line_end + 2;
        if rest.len() < data + size + 2 {
            return Ok(Dechunk::More(at));
        }
        if &rest[data + size..data + size + 2] != b"\r\n" {
            return Err(Dechunked::Malformed("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&rest[data..data + size]);
        at += data + size + 2;
    }
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
    fn response_heads_give_status_framing_and_reuse() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nbody");
        assert_eq!(
            (h.status, h.framing, h.keep_alive, h.len),
            (200, Framing::Length(12), true, 39)
        );
        let h = head(
            "HTTP/1.1 503 Unavailable\r\ntransfer-encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (503, Framing::Chunked, false)
        );
        let h = head("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
                .unwrap()
                .is_none()
        );
        for bad in [
            "<html>502</html>\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut body = Vec::new();
        assert_eq!(
            dechunk(input, &mut body, 100),
            Ok(Dechunk::Done(input.len()))
        );
        assert_eq!(body, b"hello, world");
        // Cut anywhere, it asks for more and never consumes a partial chunk.
        for cut in 0..input.len() {
            let mut body = Vec::new();
            match dechunk(&input[..cut], &mut body, 100).unwrap() {
                Dechunk::More(used) => {
                    let mut rest = body.clone();
                    assert_eq!(
                        dechunk(&input[used..], &mut rest, 100),
                        Ok(Dechunk::Done(input.len() - used))
                    );
                    assert_eq!(rest, b"hello, world", "cut at {cut}");
                }
                Dechunk::Done(_) => panic!("done at {cut} of {}", input.len()),
            }
        }
        let mut body = Vec::new();
        assert_eq!(dechunk(input, &mut body, 8), Err(Dechunked::TooLarge));
        assert!(matches!(
            dechunk(b"zz\r\n", &mut Vec::new(), 100),
            Err(Dechunked::Malformed(_))
        ));
        assert!(matches!(
            dechunk(b"2\r\nabXY", &mut Vec::new(), 100),
            Err(Dechunked::Malformed(_))
        ));
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
