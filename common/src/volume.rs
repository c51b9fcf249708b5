//! The protocol between the coordinator and a volume pod (`knowton-agent
//! volume`) on the pod's stdin and stdout: length-prefixed frames, each a
//! request or a reply, encoded and decoded here (no I/O) so that both ends
//! agree, and every frame checked as if it came from an enemy.
//!
//! A frame is a tag byte, a big-endian `u32` length and that many bytes,
//! never more than [`MAX_FRAME`]. Paths are relative, raw bytes (a Linux
//! name need not be UTF-8), each checked by [`check_path`].
//!
//! Reading: [`Request::Walk`] is answered by one [`Reply::Entry`] per
//! directory, regular file and symbolic link, parents before children,
//! then [`Reply::WalkEnd`]; [`Request::Read`] by [`Reply::Data`] frames,
//! at most its `limit` bytes in all, then [`Reply::ReadEnd`]. Writing (a
//! restore): [`Request::Begin`] clears a staging directory inside the
//! volume, [`Request::Mkdir`], [`Request::Symlink`] and [`Request::File`]
//! (followed by [`Request::Content`] frames and [`Request::FileEnd`]) fill
//! it, and [`Request::Commit`] puts it in place of the volume's contents.
//! Every request but `Content` is answered, by [`Reply::Done`] when it has
//! nothing else to say; any request may be answered by [`Reply::Failed`].

/// The tenant's volume claim; its backend mounts it at [`DATA_PATH`].
pub const CLAIM: &str = "tenant-data";
/// Where a tenant's pods find its files.
pub const DATA_PATH: &str = "/data";
/// The component label (`knowton.io/component`) of the short-lived pod that
/// reads or writes the claim for a storage backup or restore: the tenant's
/// network policies deny it all traffic.
pub const POD_COMPONENT: &str = "volume";

/// The largest frame payload either end sends or accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// The largest [`Reply::Data`] or [`Request::Content`] a sender makes.
pub const DATA_FRAME: usize = 256 * 1024;
/// The longest path (or link target) in bytes, as Linux's `PATH_MAX`.
pub const MAX_PATH: usize = 4096;
/// The longest name of one path component, as Linux's `NAME_MAX`.
pub const MAX_NAME: usize = 255;
/// The longest failure message kept.
pub const MAX_MESSAGE: usize = 1024;
/// Bytes before a frame's payload: its tag and length.
pub const HEADER: usize = 5;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Dir => 0,
            Kind::File => 1,
            Kind::Symlink => 2,
        }
    }

    fn from_byte(byte: u8) -> Result<Kind, ProtocolError> {
        match byte {
            0 => Ok(Kind::Dir),
            1 => Ok(Kind::File),
            2 => Ok(Kind::Symlink),
            other => Err(ProtocolError::Invalid(format!("entry kind {other}"))),
        }
    }
}

/// One path the walk found, as `lstat` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    /// A symbolic link's target (empty otherwise), never followed.
    pub target: Vec<u8>,
}

/// From the coordinator to the volume pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Walk,
    /// A regular file's bytes, at most `limit` of them.
    Read {
        path: Vec<u8>,
        limit: u64,
    },
    /// Starts a restore: an empty staging directory.
    Begin,
    Mkdir {
        path: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
    },
    /// A new regular file; its bytes follow.
    File {
        path: Vec<u8>,
        mode: u32,
    },
    Content(Vec<u8>),
    /// The file is complete: it gets its modification time.
    FileEnd {
        mtime_ns: i64,
    },
    /// The staging directory replaces the volume's contents.
    Commit,
}

/// From the volume pod to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Entry(EntryInfo),
    WalkEnd { count: u64 },
    Data(Vec<u8>),
    ReadEnd,
    Done,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a frame of {len} bytes, more than the {max} allowed")]
    TooLarge { len: u64, max: usize },
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    #[error("a {what} frame is cut short")]
    Truncated { what: &'static str },
    #[error("a {what} frame has {extra} bytes too many")]
    Trailing { what: &'static str, extra: usize },
    #[error("path {shown:?} refused: {reason}")]
    BadPath { shown: String, reason: &'static str },
    #[error("invalid {0}")]
    Invalid(String),
}

/// The tag and payload length of the frame whose header is `header`,
/// refused when the payload would be larger than [`MAX_FRAME`].
pub fn header(header: [u8; HEADER]) -> Result<(u8, usize), ProtocolError> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len as usize > MAX_FRAME {
        return Err(ProtocolError::TooLarge {
            len: len.into(),
            max: MAX_FRAME,
        });
    }
    Ok((header[0], len as usize))
}

/// A relative path that stays beneath the root it is joined to: no empty,
/// `.` or `..` component, no leading or doubled `/`, no NUL, no longer
/// than [`MAX_PATH`], no name longer than [`MAX_NAME`].
pub fn check_path(path: &[u8]) -> Result<(), ProtocolError> {
    let refuse = |reason| {
        Err(ProtocolError::BadPath {
            shown: shown(path),
            reason,
        })
    };
    if path.is_empty() {
        return refuse("empty");
    }
    if path.len() > MAX_PATH {
        return refuse("longer than PATH_MAX");
    }
    if path.contains(&0) {
        return refuse("contains NUL");
    }
    for name in path.split(|&b| b == b'/') {
        match name {
            b"" => return refuse("not relative, or an empty component"),
            b"." | b".." => return refuse("a . or .. component"),
            name if name.len() > MAX_NAME => return refuse("a name longer than NAME_MAX"),
            _ => {}
        }
    }
    Ok(())
}

/// A link target as stored: any bytes but NUL, not empty, at most
/// [`MAX_PATH`] (it is never followed, so it may point anywhere).
fn check_target(target: &[u8]) -> Result<(), ProtocolError> {
    if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
        return Err(ProtocolError::Invalid(format!(
            "link target {:?}",
            shown(target)
        )));
    }
    Ok(())
}

/// Bytes as text for a message, cut to 200 characters.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(200).collect()
}

fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads fixed fields off the front of a payload.
struct Fields<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(ProtocolError::Truncated { what: self.what });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, ProtocolError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn mode(&mut self) -> Result<u32, ProtocolError> {
        let mode = self.u32()?;
        if mode > 0o7777 {
            return Err(ProtocolError::Invalid(format!("mode {mode:o}")));
        }
        Ok(mode)
    }

    /// A path prefixed by its `u16` length.
    fn path(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let len = self.u16()? as usize;
        let path = self.take(len)?;
        check_path(path)?;
        Ok(path.to_vec())
    }

    /// Everything left.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn end(self) -> Result<(), ProtocolError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(ProtocolError::Trailing {
                what: self.what,
                extra,
            }),
        }
    }
}

fn with_path(path: &[u8], fields: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.len() + 2 + path.len() + rest.len());
    out.extend_from_slice(fields);
    out.extend_from_slice(&(path.len() as u16).to_be_bytes());
    out.extend_from_slice(path);
    out.extend_from_slice(rest);
    out
}

impl Request {
    /// The whole frame. Paths must have passed [`check_path`].
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Walk => frame(b'W', &[]),
            Request::Read { path, limit } => {
                frame(b'R', &with_path(path, &limit.to_be_bytes(), &[]))
            }
            Request::Begin => frame(b'B', &[]),
            Request::Mkdir { path, mode } => {
                frame(b'D', &with_path(path, &mode.to_be_bytes(), &[]))
            }
            Request::Symlink { path, target } => frame(b'L', &with_path(path, &[], target)),
            Request::File { path, mode } => frame(b'F', &with_path(path, &mode.to_be_bytes(), &[])),
            Request::Content(bytes) => frame(b'C', bytes),
            Request::FileEnd { mtime_ns } => frame(b'E', &mtime_ns.to_be_bytes()),
            Request::Commit => frame(b'K', &[]),
        }
    }

    /// The request in the frame `tag` with `payload`.
    pub fn decode(tag: u8, payload: &[u8]) -> Result<Request, ProtocolError> {
        let mut f = Fields {
            rest: payload,
            what: "request",
        };
        let request = match tag {
            b'W' => Request::Walk,
            b'R' => {
                let limit = f.u64()?;
                Request::Read {
                    path: f.path()?,
                    limit,
                }
            }
            b'B' => Request::Begin,
            b'D' => {
                let mode = f.mode()?;
                Request::Mkdir {
                    path: f.path()?,
                    mode,
                }
            }
            b'L' => {
                let path = f.path()?;
                let target = f.rest().to_vec();
                check_target(&target)?;
                Request::Symlink { path, target }
            }
            b'F' => {
                let mode = f.mode()?;
                Request::File {
                    path: f.path()?,
                    mode,
                }
            }
            b'C' => Request::Content(f.rest().to_vec()),
            b'E' => Request::FileEnd { mtime_ns: f.i64()? },
            b'K' => Request::Commit,
            other => return Err(ProtocolError::UnknownTag(other)),
        };
        f.end()?;
        Ok(request)
    }
}

impl Reply {
    /// The whole frame. Paths must have passed [`check_path`].
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Entry(e) => {
                let mut fields = Vec::with_capacity(45);
                fields.push(e.kind.byte());
                fields.extend_from_slice(&e.mode.to_be_bytes());
                for n in [e.size, e.dev, e.ino] {
                    fields.extend_from_slice(&n.to_be_bytes());
                }
                for n in [e.mtime_ns, e.ctime_ns] {
                    fields.extend_from_slice(&n.to_be_bytes());
                }
                frame(b'e', &with_path(&e.path, &fields, &e.target))
            }
            Reply::WalkEnd { count } => frame(b'w', &count.to_be_bytes()),
            Reply::Data(bytes) => frame(b'd', bytes),
            Reply::ReadEnd => frame(b'r', &[]),
            Reply::Done => frame(b'k', &[]),
            Reply::Failed(message) => {
                let mut end = message.len().min(MAX_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                frame(b'x', &message.as_bytes()[..end])
            }
        }
    }

    /// The reply in the frame `tag` with `payload`.
    pub fn decode(tag: u8, payload: &[u8]) -> Result<Reply, ProtocolError> {
        let mut f = Fields {
            rest: payload,
            what: "reply",
        };
        let reply = match tag {
            b'e' => {
                let kind = Kind::from_byte(f.take(1)?[0])?;
                let mode = f.mode()?;
                let (size, dev, ino) = (f.u64()?, f.u64()?, f.u64()?);
                let (mtime_ns, ctime_ns) = (f.i64()?, f.i64()?);
                let path = f.path()?;
                let target = f.rest().to_vec();
                match kind {
                    Kind::Symlink => check_target(&target)?,
                    Kind::Dir | Kind::File if !target.is_empty() => {
                        return Err(ProtocolError::Invalid(
                            "link target on an entry that is not a link".to_owned(),
                        ));
                    }
                    Kind::Dir | Kind::File => {}
                }
                Reply::Entry(EntryInfo {
                    path,
                    kind,
                    mode,
                    size,
                    mtime_ns,
                    ctime_ns,
                    dev,
                    ino,
                    target,
                })
            }
            b'w' => Reply::WalkEnd { count: f.u64()? },
            b'd' => Reply::Data(f.rest().to_vec()),
            b'r' => Reply::ReadEnd,
            b'k' => Reply::Done,
            b'x' => Reply::Failed(shown(f.rest())),
            other => return Err(ProtocolError::UnknownTag(other)),
        };
        f.end()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests;
