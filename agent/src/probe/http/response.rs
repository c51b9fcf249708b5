//! Reading one HTTP/1.1 response out of the bytes a connection delivers:
//! the head with `httparse`, then a body framed by `Content-Length`,
//! chunked encoding or the end of the connection.

use bytes::Bytes;
use knowton_proto::agent::v1::Failure;

use super::Response;
use super::chunked::{Dechunk, Dechunked, dechunk};

/// Largest response head read.
pub(super) const HEAD_LIMIT: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 64;

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(usize),
    Chunked,
    /// Read until the pod closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
    /// Bytes of the head, to drop from the buffer.
    pub(super) len: usize,
}

/// Most bytes taken from the socket in one read.
pub(super) const READ_SIZE: usize = 16 * 1024;

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

pub(super) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
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
