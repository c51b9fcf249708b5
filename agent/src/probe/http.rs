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

/// Most bytes taken from the socket in one read.
const READ_SIZE: usize = 16 * 1024;

/// Reads one response out of the bytes a connection delivers, without
/// doing any I/O itself (so every byte sequence and every way of splitting
/// it into reads can be tested): the caller appends at most [`Self::room`]
/// bytes in all to `buf`, then calls [`Self::advance`].
#[derive(Debug)]
pub(crate) struct ResponseReader {
    /// Bytes read and not yet consumed.
    pub(crate) buf: Vec<u8>,
    limit: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    Head,
    Length(Head, usize),
    Close(Head),
    /// The body decoded so far.
    Chunked(Head, Vec<u8>),
}

/// How far a response is read.
#[derive(Debug)]
pub(crate) enum Progress {
    More,
    /// The response, and whether the connection can carry another request.
    Done(Response, bool),
}

/// Why a response cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    pub(crate) failure: Failure,
    pub(crate) what: String,
}

impl Unreadable {
    fn new(failure: Failure, what: impl Into<String>) -> Self {
        Unreadable {
            failure,
            what: what.into(),
        }
    }
}

impl ResponseReader {
    /// A reader of a response whose body may hold at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        ResponseReader {
            buf: Vec::with_capacity(1024),
            limit,
            state: State::Head,
        }
    }

    /// Whether the response head has arrived.
    pub(crate) fn has_head(&self) -> bool {
        !matches!(self.state, State::Head)
    }

    /// The most bytes `buf` may hold before the next [`Self::advance`].
    pub(crate) fn room(&self) -> usize {
        match &self.state {
            State::Head => HEAD_LIMIT,
            State::Length(_, len) => *len,
            State::Close(_) => self.limit.saturating_add(1),
            State::Chunked(..) => self.limit.saturating_add(HEAD_LIMIT),
        }
    }

    /// Consumes what `buf` holds; `closed` when the last read found the
    /// connection closed.
    pub(crate) fn advance(&mut self, closed: bool) -> Result<Progress, Unreadable> {
        let too_large = |limit: usize| {
            Unreadable::new(Failure::BadBody, format!("body larger than {limit} bytes"))
        };
        let mid_body = || Unreadable::new(Failure::Other, "connection closed mid-body");
        loop {
            match &mut self.state {
                State::Head => {
                    let head = match parse_head(&self.buf) {
                        Ok(Some(head)) => head,
                        Ok(None) if closed => {
                            return Err(Unreadable::new(
                                Failure::Other,
                                "connection closed before a response",
                            ));
                        }
                        Ok(None) if self.buf.len() >= HEAD_LIMIT => {
                            return Err(Unreadable::new(
                                Failure::BadBody,
                                format!("response head larger than {HEAD_LIMIT} bytes"),
                            ));
                        }
                        Ok(None) => return Ok(Progress::More),
                        Err(err) => {
                            return Err(Unreadable::new(
                                Failure::BadBody,
                                format!("malformed response: {err}"),
                            ));
                        }
                    };
                    self.buf.drain(..head.len);
                    // An interim response: the real one follows.
                    if (100..200).contains(&head.status) {
                        continue;
                    }
                    self.state = match head.framing {
                        Framing::Length(len) if len > self.limit => {
                            return Err(too_large(self.limit));
                        }
                        Framing::Length(len) => State::Length(head, len),
                        Framing::Close => State::Close(head),
                        Framing::Chunked => State::Chunked(head, Vec::new()),
                    };
                }
                State::Length(head, len) => {
                    let len = *len;
                    if self.buf.len() >= len {
                        // Bytes the pod sent unasked: do not reuse the connection.
                        let reusable = head.keep_alive && self.buf.len() == len;
                        self.buf.truncate(len);
                        let body = std::mem::take(&mut self.buf);
                        return Ok(Progress::Done(head.response(body), reusable));
                    }
                    if closed {
                        return Err(mid_body());
                    }
                    return Ok(Progress::More);
                }
                State::Close(head) => {
                    if self.buf.len() > self.limit {
                        return Err(too_large(self.limit));
                    }
                    if closed {
                        let body = std::mem::take(&mut self.buf);
                        return Ok(Progress::Done(head.response(body), false));
                    }
                    return Ok(Progress::More);
                }
                State::Chunked(head, body) => {
                    return match dechunk(&self.buf, body, self.limit) {
                        Ok(Dechunk::Done(used)) => {
                            let clean = used == self.buf.len();
                            let body = std::mem::take(body);
                            Ok(Progress::Done(
                                head.response(body),
                                head.keep_alive && clean,
                            ))
                        }
                        Ok(Dechunk::More(used)) => {
                            self.buf.drain(..used);
                            if closed {
                                Err(mid_body())
                            } else if self.buf.len() >= self.limit.saturating_add(HEAD_LIMIT) {
                                Err(Unreadable::new(
                                    Failure::BadBody,
                                    "bad chunked body: trailers too long",
                                ))
                            } else {
                                Ok(Progress::More)
                            }
                        }
                        Err(Dechunked::TooLarge) => Err(too_large(self.limit)),
                        Err(Dechunked::Malformed(what)) => Err(Unreadable::new(
                            Failure::BadBody,
                            format!("bad chunked body: {what}"),
                        )),
                    };
                }
            }
        }
    }
}

impl Head {
    fn response(&self, body: Vec<u8>) -> Response {
        Response {
            status: self.status,
            body: Bytes::from(body),
        }
    }
}

/// Reads a response delivered as `reads` (each cut further where the
/// reader has less room, as the socket reads are), then the connection
/// closing; returns the status, the body and whether the connection could
/// be reused, or what is wrong. For the fuzz targets and property tests.
pub fn read_response<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> Result<(u16, Bytes, bool), String> {
    let mut reader = ResponseReader::new(limit);
    let done = |progress| match progress {
        Progress::Done(response, reusable) => Some((response.status, response.body, reusable)),
        Progress::More => None,
    };
    for mut read in reads {
        while !read.is_empty() {
            let room = reader
                .room()
                .saturating_sub(reader.buf.len())
                .clamp(1, READ_SIZE);
            let (now, later) = read.split_at(room.min(read.len()));
            reader.buf.extend_from_slice(now);
            read = later;
            if let Some(done) = done(reader.advance(false).map_err(|e| e.what)?) {
                return Ok(done);
            }
        }
    }
    done(reader.advance(true).map_err(|e| e.what)?)
        .ok_or_else(|| "more input expected after the connection closed".to_owned())
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

/// Longest chunk size line (size and extensions).
const CHUNK_LINE_LIMIT: usize = 1024;

/// Decodes whole chunks from `input` into `body`. Every size and offset
/// comes from the pod, so all arithmetic on them is checked.
fn dechunk(input: &[u8], body: &mut Vec<u8>, limit: usize) -> Result<Dechunk, Dechunked> {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        let Some(line_end) = find_crlf(rest, CHUNK_LINE_LIMIT) else {
            if rest.len() > CHUNK_LINE_LIMIT {
                return Err(Dechunked::Malformed("chunk size line too long"));
            }
            return Ok(Dechunk::More(at));
        };
        let size = chunk_size(&rest[..line_end])?;
        let data = line_end + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let trailers = &rest[data..];
            let mut t = 0;
            loop {
                let Some(end) = find_crlf(&trailers[t..], HEAD_LIMIT) else {
                    if trailers.len() > HEAD_LIMIT {
                        return Err(Dechunked::Malformed("trailers too long"));
                    }
                    return Ok(Dechunk::More(at));
                };
                if end == 0 {
                    return Ok(Dechunk::Done(at + data + t + 2));
                }
                t += end + 2;
                if t > HEAD_LIMIT {
                    return Err(Dechunked::Malformed("trailers too long"));
                }
            }
        }
        if body
            .len()
            .checked_add(size)
            .is_none_or(|total| total > limit)
        {
            return Err(Dechunked::TooLarge);
        }
        let end = data
            .checked_add(size)
            .and_then(|n| n.checked_add(2))
            .ok_or(Dechunked::TooLarge)?;
        if rest.len() < end {
            return Ok(Dechunk::More(at));
        }
        if &rest[end - 2..end] != b"\r\n" {
            return Err(Dechunked::Malformed("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&rest[data..end - 2]);
        at += end;
    }
}

/// Where the first CRLF in the first `within` bytes of `bytes` starts.
fn find_crlf(bytes: &[u8], within: usize) -> Option<usize> {
    let window = &bytes[..bytes.len().min(within.saturating_add(2))];
    window.windows(2).position(|w| w == b"\r\n")
}

/// The size on a chunk size line: hexadecimal digits only (no sign, no
/// space inside), optionally followed by `;extensions`.
fn chunk_size(line: &[u8]) -> Result<usize, Dechunked> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = hex.trim_ascii();
    if hex.is_empty() || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(Dechunked::Malformed("chunk size is not hexadecimal"));
    }
    let mut size: usize = 0;
    for &digit in hex {
        let value = (digit as char).to_digit(16).unwrap_or(0) as usize;
        size = size
            .checked_mul(16)
            .and_then(|n| n.checked_add(value))
            .ok_or(Dechunked::TooLarge)?;
    }
    Ok(size)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
