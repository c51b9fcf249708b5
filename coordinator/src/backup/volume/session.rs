//! One `knowton-agent volume` process in a volume pod, spoken to through
//! its stdin and stdout (of a `pods/exec`, or any pair of streams in
//! tests). Everything it sends is checked: each frame's size before it
//! is read, the count and bytes of a walk's entries, every path, and the
//! bytes of a read against what was asked.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use knowton_common::volume::{EntryInfo, HEADER, MAX_FRAME, Reply, Request, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::VolumeError;

/// What a session bears at most: a walk's entries and bytes of paths and
/// link targets (the manifest is held whole in memory), and how long the
/// far end may keep the session waiting for a frame, or for it to take
/// one, before it is given up (a pod that falls silent would otherwise
/// hold its tenant's backups until its deadline, hours later).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub entries: usize,
    pub path_bytes: usize,
    pub silence: Duration,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            entries: crate::backup::storage::MAX_ENTRIES,
            path_bytes: 512 << 20,
            silence: Duration::from_secs(120),
        }
    }
}

/// The far end's standard error, the first few kilobytes of it.
pub type Stderr = Arc<Mutex<Vec<u8>>>;

/// The longest standard error kept for a message.
const STDERR_KEPT: usize = 4096;

/// Keeps the first [`STDERR_KEPT`] bytes of `stderr`, reading it to its
/// end so that the process never blocks writing there.
pub fn drain_stderr(mut stderr: impl AsyncRead + Unpin + Send + 'static) -> Stderr {
    let kept: Stderr = Arc::default();
    let into = kept.clone();
    tokio::spawn(async move {
        let mut buf = [0; 1024];
        while let Ok(n @ 1..) = stderr.read(&mut buf).await {
            let mut kept = into.lock().expect("stderr lock");
            let room = STDERR_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
    });
    kept
}

/// A conversation with one volume process.
pub struct Session {
    /// `namespace/name` of the pod, for messages.
    pub(super) pod: String,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Pin<Box<dyn AsyncRead + Send>>,
    stderr: Stderr,
    caps: Caps,
    /// A reply was left part-read: nothing more can be understood.
    broken: bool,
    /// A read's reply is not yet read to its end.
    reading: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("pod", &self.pod).finish()
    }
}

impl Session {
    pub fn new(
        pod: String,
        input: impl AsyncWrite + Send + 'static,
        output: impl AsyncRead + Send + 'static,
        stderr: Stderr,
        caps: Caps,
    ) -> Session {
        Session {
            pod,
            input: Box::pin(input),
            output: Box::pin(output),
            stderr,
            caps,
            broken: false,
            reading: false,
        }
    }

    fn hostile(&self, problem: String) -> VolumeError {
        VolumeError::Refused {
            pod: self.pod.clone(),
            problem,
        }
    }

    fn ended(&self) -> VolumeError {
        let stderr = self.stderr.lock().expect("stderr lock");
        VolumeError::Ended {
            pod: self.pod.clone(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        }
    }

    /// What `io`, given the caps' silence to end in, came to. A session
    /// that timed out or failed is broken: a frame may be half-sent or
    /// half-read.
    fn settle<T>(
        &mut self,
        silent: &'static str,
        io: Result<io::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, VolumeError> {
        match io {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(_)) => {
                self.broken = true;
                Err(self.ended())
            }
            Err(_) => {
                self.broken = true;
                Err(VolumeError::Silent {
                    pod: self.pod.clone(),
                    silent,
                    seconds: self.caps.silence.as_secs(),
                })
            }
        }
    }

    pub(super) async fn send(&mut self, request: &Request) -> Result<(), VolumeError> {
        if self.broken || self.reading {
            return Err(self.hostile("an earlier reply was left part-read".to_owned()));
        }
        let frame = request.encode();
        let input = &mut self.input;
        let sent = tokio::time::timeout(self.caps.silence, async move {
            input.write_all(&frame).await?;
            input.flush().await
        })
        .await;
        self.settle("took no more of a request", sent)
    }

    /// The next reply. A frame over [`MAX_FRAME`] is refused from its
    /// header, before its payload is read.
    pub(super) async fn recv(&mut self) -> Result<Reply, VolumeError> {
        let silence = self.caps.silence;
        let mut head = [0; HEADER];
        let read = tokio::time::timeout(silence, self.output.read_exact(&mut head)).await;
        self.settle("sent no reply", read)?;
        let (tag, len) = header(head).map_err(|e| {
            self.broken = true;
            self.hostile(e.to_string())
        })?;
        debug_assert!(len <= MAX_FRAME);
        let mut payload = vec![0; len];
        let read = tokio::time::timeout(silence, self.output.read_exact(&mut payload)).await;
        self.settle("sent no more of a reply", read)?;
        Reply::decode(tag, &payload).map_err(|e| {
            self.broken = true;
            self.hostile(e.to_string())
        })
    }

    /// A reply that is not the one expected.
    pub(super) fn unexpected(&mut self, request: &str, reply: &Reply) -> VolumeError {
        match reply {
            Reply::Failed(message) => VolumeError::Failed {
                pod: self.pod.clone(),
                message: message.clone(),
            },
            other => {
                self.broken = true;
                self.hostile(format!(
                    "answered {request} with {}",
                    match other {
                        Reply::Entry(_) => "an entry",
                        Reply::WalkEnd { .. } => "the end of a walk",
                        Reply::Data(_) => "file data",
                        Reply::ReadEnd => "the end of a read",
                        Reply::Done => "done",
                        Reply::Failed(_) => "a failure",
                    }
                ))
            }
        }
    }

    /// Every directory, file and link in the volume, parents first.
    pub async fn walk(&mut self) -> Result<Vec<EntryInfo>, VolumeError> {
        self.send(&Request::Walk).await?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        loop {
            match self.recv().await? {
                Reply::Entry(entry) => {
                    if entries.len() >= self.caps.entries {
                        self.broken = true;
                        return Err(self.hostile(format!(
                            "more than {} files and directories",
                            self.caps.entries
                        )));
                    }
                    bytes += entry.path.len() + entry.target.len();
                    if bytes > self.caps.path_bytes {
                        self.broken = true;
                        return Err(self.hostile(format!(
                            "more than {} bytes of paths",
                            self.caps.path_bytes
                        )));
                    }
                    entries.push(entry);
                }
                Reply::WalkEnd { count } if count == entries.len() as u64 => return Ok(entries),
                Reply::WalkEnd { count } => {
                    return Err(self.hostile(format!(
                        "ended a walk of {} entries saying {count}",
                        entries.len()
                    )));
                }
                other => return Err(self.unexpected("a walk", &other)),
            }
        }
    }

    /// The next piece of the file being read: `None` at its end. More
    /// than `left` bytes in all is refused.
    pub(super) async fn next_data(
        &mut self,
        path: &str,
        left: &mut u64,
    ) -> Result<Option<Bytes>, VolumeError> {
        match self.recv().await? {
            Reply::Data(data) if data.len() as u64 <= *left => {
                *left -= data.len() as u64;
                Ok(Some(Bytes::from(data)))
            }
            Reply::Data(_) => {
                self.broken = true;
                Err(self.hostile(format!("sent more of {path} than the bytes asked for")))
            }
            Reply::ReadEnd => {
                self.reading = false;
                Ok(None)
            }
            other => Err(self.unexpected("a read", &other)),
        }
    }

    /// Sends `request` and waits for its [`Reply::Done`].
    pub(super) async fn call(&mut self, request: &Request, what: &str) -> Result<(), VolumeError> {
        self.send(request).await?;
        match self.recv().await? {
            Reply::Done => Ok(()),
            other => Err(self.unexpected(what, &other)),
        }
    }

    /// Sends without waiting for an answer (file content).
    pub(super) async fn push(&mut self, request: &Request) -> Result<(), VolumeError> {
        self.send(request).await
    }
}

/// The bytes of `path` from `session`, at most `limit`, as a stream for a
/// reader; the session is held until the read ends (one dropped before
/// leaves the session unusable: its reply was not read to the end).
pub fn read_stream<'a>(
    session: tokio::sync::MutexGuard<'a, Session>,
    path: Vec<u8>,
    limit: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'a {
    enum State<'a> {
        Start(tokio::sync::MutexGuard<'a, Session>, Vec<u8>),
        Reading(tokio::sync::MutexGuard<'a, Session>, String, u64),
    }
    futures::stream::unfold(Some(State::Start(session, path)), move |state| async move {
        let (mut session, shown, mut left) = match state? {
            State::Start(mut session, path) => {
                let shown = String::from_utf8_lossy(&path).into_owned();
                if let Err(err) = session.send(&Request::Read { path, limit }).await {
                    return Some((Err(io::Error::other(err)), None));
                }
                session.reading = true;
                (session, shown, limit)
            }
            State::Reading(session, shown, left) => (session, shown, left),
        };
        match session.next_data(&shown, &mut left).await {
            Ok(Some(data)) => Some((Ok(data), Some(State::Reading(session, shown, left)))),
            Ok(None) => None,
            Err(err) => Some((Err(io::Error::other(err)), None)),
        }
    })
}

#[cfg(test)]
mod tests;
