//! `knowton-agent volume`: the far end of a tenant's storage backup or
//! restore, run by the coordinator (through `pods/exec`) in a short-lived
//! pod that mounts the tenant's claim. It answers the requests of
//! [`knowton_common::volume`] on stdin and stdout, one at a time.
//!
//! No path is ever resolved through a symbolic link: every directory and
//! file is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from the root, links are read with `readlinkat` and never followed, so
//! a tenant swapping a directory for a link during a walk cannot lead the
//! walk, a read or a write outside the volume.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use knowton_common::volume::{
    DATA_FRAME, EntryInfo, HEADER, Kind, ProtocolError, Reply, Request, header,
};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Where a restore is written before it replaces the volume's contents;
/// never walked (a restore that stopped part-way is not backed up).
pub const STAGING: &str = ".knowton-restore-staging";
/// The staging directory once complete: from then on the restore is
/// decided, and a swap cut short (the pod killed, its node lost) is
/// carried through by the next session that opens the volume for writing
/// ([`finish_swap`]). Its first step moves the former contents aside.
pub const READY: &str = ".knowton-restore-ready";
/// The ready directory once the former contents are all aside: its
/// entries move into the root.
pub const MOVING: &str = ".knowton-restore-moving";
/// The volume's former contents, moved aside by a restore and removed
/// once the restored files are in place.
pub const REPLACED: &str = ".knowton-restore-replaced";

/// Whether `name`, at the volume's root, is one of a restore's own.
fn reserved(name: &[u8]) -> bool {
    [STAGING, READY, MOVING, REPLACED]
        .iter()
        .any(|r| r.as_bytes() == name)
}

/// `knowton-agent volume`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "knowton-agent volume", version)]
pub struct VolumeArgs {
    /// The volume's mount point.
    #[arg(long, env = "KNOWTON_VOLUME_ROOT")]
    pub root: PathBuf,
    /// Refuse every write (backups: the claim is mounted read-only too).
    #[arg(long, env = "KNOWTON_VOLUME_READ_ONLY")]
    pub read_only: bool,
    /// Serve nothing: wait for SIGTERM (the volume pod's main process,
    /// while the coordinator runs the server through `pods/exec`).
    #[arg(long)]
    pub idle: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("failed to open the volume root {}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read a request")]
    Input(#[source] io::Error),
    #[error("failed to send a reply")]
    Output(#[source] io::Error),
    #[error("refused a request")]
    Protocol(#[from] ProtocolError),
}

/// Serves requests from `input` until it ends, replies to `output`.
pub fn serve(
    args: &VolumeArgs,
    mut input: impl Read,
    output: impl Write,
) -> Result<(), VolumeError> {
    let root = open_dir(&args.root).map_err(|source| VolumeError::Root {
        path: args.root.clone(),
        source,
    })?;
    let mut out = io::BufWriter::with_capacity(DATA_FRAME + 64, output);
    let mut restore: Option<Restore> = None;
    while let Some(request) = next_request(&mut input)? {
        let reply = match request {
            Request::Walk => walk(&root, &mut out)?,
            Request::Read { path, limit } => read(&root, &path, limit, &mut out)?,
            Request::Begin if args.read_only => refused(),
            Request::Begin => match Restore::begin(&root) {
                Ok(started) => {
                    restore = Some(started);
                    Reply::Done
                }
                Err(err) => failed("start the restore", &err),
            },
            write => match (&mut restore, write) {
                (None, _) => Reply::Failed("no restore begun".to_owned()),
                (Some(r), Request::Content(bytes)) => {
                    r.content(&bytes);
                    continue;
                }
                (Some(r), Request::Commit) => {
                    let reply = r.commit(&root);
                    restore = None;
                    reply
                }
                (Some(r), write) => r.apply(write),
            },
        };
        send(&mut out, &reply)?;
        out.flush().map_err(VolumeError::Output)?;
    }
    if restore.is_some() {
        let _ = remove_staging(&root);
    }
    Ok(())
}

fn refused() -> Reply {
    Reply::Failed("the volume is open read-only".to_owned())
}

fn failed(what: &str, err: &io::Error) -> Reply {
    Reply::Failed(format!("failed to {what}: {err}"))
}

/// The next request, or `None` at the end of input between frames.
fn next_request(input: &mut impl Read) -> Result<Option<Request>, VolumeError> {
    let mut head = [0; HEADER];
    let mut got = 0;
    while got < HEADER {
        match input.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(VolumeError::Input(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(VolumeError::Input(err)),
        }
    }
    let (tag, len) = header(head)?;
    let mut payload = vec![0; len];
    input.read_exact(&mut payload).map_err(VolumeError::Input)?;
    Ok(Some(Request::decode(tag, &payload)?))
}

fn send(out: &mut impl Write, reply: &Reply) -> Result<(), VolumeError> {
    out.write_all(&reply.encode()).map_err(VolumeError::Output)
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `relative` under `root`, through no link and never leaving it.
fn open_beneath(root: &OwnedFd, relative: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        root,
        OsStr::from_bytes(relative),
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// A directory under `root` (`""`: the root itself).
fn dir_beneath(root: &OwnedFd, relative: &[u8]) -> io::Result<OwnedFd> {
    let relative: &[u8] = if relative.is_empty() { b"." } else { relative };
    open_beneath(root, relative, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// The names in `dir` but `.` and `..`, in byte order.
fn names(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

/// Every directory, regular file and symbolic link, parents before
/// children, depth first in name order (as the coordinator's own walk of
/// a local directory); other kinds are left out. A path that vanishes
/// while walked is left out too.
fn walk(root: &OwnedFd, out: &mut impl Write) -> Result<Reply, VolumeError> {
    let mut count = 0u64;
    let mut pending = vec![Vec::new()];
    while let Some(dir) = pending.pop() {
        let listed = dir_beneath(root, &dir).and_then(|fd| Ok((names(&fd)?, fd)));
        let (names, fd) = match listed {
            Ok(listed) => listed,
            Err(err) => return Ok(failed(&format!("list {}", shown(&dir)), &err)),
        };
        let mut subdirs = Vec::new();
        for name in names {
            if dir.is_empty() && reserved(&name) {
                continue;
            }
            let path = join(&dir, &name);
            let entry = match entry(&fd, &name, path) {
                Ok(Some(entry)) => entry,
                Ok(None) => continue,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Ok(failed(&format!("read {}", shown(&join(&dir, &name))), &err));
                }
            };
            if entry.kind == Kind::Dir {
                subdirs.push(entry.path.clone());
            }
            send(out, &Reply::Entry(entry))?;
            count += 1;
        }
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(Reply::WalkEnd { count })
}

/// `name` in `dir` as `lstat` sees it; `None` for what is not backed up.
fn entry(dir: &OwnedFd, name: &[u8], path: Vec<u8>) -> io::Result<Option<EntryInfo>> {
    let name = OsStr::from_bytes(name);
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let kind = match FileType::from_raw_mode(stat.st_mode as _) {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        FileType::Symlink => Kind::Symlink,
        _ => return Ok(None),
    };
    let target = match kind {
        Kind::Symlink => rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes(),
        Kind::Dir | Kind::File => Vec::new(),
    };
    let ns = |secs: i64, nsec: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsec);
    Ok(Some(EntryInfo {
        path,
        kind,
        mode: stat.st_mode as u32 & 0o7777,
        size: stat.st_size as u64,
        mtime_ns: ns(stat.st_mtime as i64, stat.st_mtime_nsec as i64),
        ctime_ns: ns(stat.st_ctime as i64, stat.st_ctime_nsec as i64),
        dev: stat.st_dev as u64,
        ino: stat.st_ino as u64,
        target,
    }))
}

/// The regular file at `path`, at most `limit` bytes of it.
fn read(
    root: &OwnedFd,
    path: &[u8],
    limit: u64,
    out: &mut impl Write,
) -> Result<Reply, VolumeError> {
    let opened = open_beneath(root, path, OFlags::RDONLY).and_then(|fd| {
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode as _) != FileType::RegularFile {
            return Err(io::Error::other("no longer a regular file"));
        }
        Ok(std::fs::File::from(fd))
    });
    let file = match opened {
        Ok(file) => file,
        Err(err) => return Ok(failed(&format!("open {}", shown(path)), &err)),
    };
    let mut file = file.take(limit);
    let mut buf = vec![0; DATA_FRAME];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(Reply::ReadEnd),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Ok(failed(&format!("read {}", shown(path)), &err)),
        };
        send(out, &Reply::Data(buf[..n].to_vec()))?;
    }
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A restore being written into the staging directory.
struct Restore {
    staging: OwnedFd,
    /// Directories and their modes, set last (deepest first) so that a
    /// read-only directory is filled before it is made read-only.
    dirs: Vec<(Vec<u8>, u32)>,
    /// The file being written, and the first failure writing it.
    file: Option<(std::fs::File, Vec<u8>, u32, Option<io::Error>)>,
}

impl Restore {
    fn begin(root: &OwnedFd) -> io::Result<Restore> {
        finish_swap(root)?;
        remove_staging(root)?;
        rustix::fs::mkdirat(root, STAGING, Mode::from_raw_mode(0o700))?;
        Ok(Restore {
            staging: dir_beneath(root, STAGING.as_bytes())?,
            dirs: Vec::new(),
            file: None,
        })
    }

    /// The directory that holds `path` in the staging directory, and
    /// `path`'s last name.
    fn parent<'p>(&self, path: &'p [u8]) -> io::Result<(OwnedFd, &'p OsStr)> {
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(at) => (&path[..at], &path[at + 1..]),
            None => (&b""[..], path),
        };
        Ok((dir_beneath(&self.staging, dir)?, OsStr::from_bytes(name)))
    }

    fn apply(&mut self, request: Request) -> Reply {
        let done = match request {
            Request::Mkdir { path, mode } => self
                .parent(&path)
                .and_then(|(dir, name)| {
                    Ok(rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))?)
                })
                .map(|()| self.dirs.push((path.clone(), mode)))
                .map_err(|e| (format!("create directory {}", shown(&path)), e)),
            Request::Symlink { path, target } => self
                .parent(&path)
                .and_then(|(dir, name)| {
                    Ok(rustix::fs::symlinkat(
                        OsStr::from_bytes(&target),
                        &dir,
                        name,
                    )?)
                })
                .map_err(|e| (format!("create link {}", shown(&path)), e)),
            Request::File { path, mode } => self
                .parent(&path)
                .and_then(|(dir, name)| {
                    let fd = rustix::fs::openat(
                        &dir,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )?;
                    Ok(std::fs::File::from(fd))
                })
                .map(|file| self.file = Some((file, path.clone(), mode, None)))
                .map_err(|e| (format!("create {}", shown(&path)), e)),
            Request::FileEnd { mtime_ns } => match self.file.take() {
                None => return Reply::Failed("no file begun".to_owned()),
                Some((file, path, mode, failure)) => finish(file, mode, mtime_ns, failure)
                    .map_err(|e| (format!("write {}", shown(&path)), e)),
            },
            other => return Reply::Failed(format!("unexpected request {other:?}")),
        };
        match done {
            Ok(()) => Reply::Done,
            Err((what, err)) => failed(&what, &err),
        }
    }

    fn content(&mut self, bytes: &[u8]) {
        if let Some((file, _, _, failure @ None)) = &mut self.file
            && let Err(err) = file.write_all(bytes)
        {
            *failure = Some(err);
        }
    }

    /// Sets the directories' modes, then replaces everything in `root`
    /// (but the staging directory) by what the staging directory holds.
    fn commit(&mut self, root: &OwnedFd) -> Reply {
        for (path, mode) in self.dirs.iter().rev() {
            let set = dir_beneath(&self.staging, path)
                .and_then(|fd| Ok(rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode))?));
            if let Err(err) = set {
                return failed(&format!("set the mode of {}", shown(path)), &err);
            }
        }
        let swapped = (|| -> io::Result<()> {
            rustix::fs::fsync(&self.staging)?;
            rustix::fs::renameat(root, STAGING, root, READY)?;
            rustix::fs::fsync(root)?;
            finish_swap(root)
        })();
        match swapped {
            Ok(()) => Reply::Done,
            Err(err) => failed("put the restored files in place", &err),
        }
    }
}

fn finish(
    file: std::fs::File,
    mode: u32,
    mtime_ns: i64,
    failure: Option<io::Error>,
) -> io::Result<()> {
    if let Some(err) = failure {
        return Err(err);
    }
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        },
    };
    rustix::fs::futimens(&file, &times)?;
    file.sync_all()
}

/// Carries through a restore's swap that was decided (its files all
/// staged) but cut short, from wherever it stopped; then removes the
/// former contents. Every step is a rename within the volume, so the
/// swap itself is quick and any crash leaves a state this resumes from.
fn finish_swap(root: &OwnedFd) -> io::Result<()> {
    if present(root, READY)? {
        match rustix::fs::mkdirat(root, REPLACED, Mode::from_raw_mode(0o700)) {
            Err(rustix::io::Errno::EXIST) | Ok(()) => {}
            Err(err) => return Err(err.into()),
        }
        let replaced = dir_beneath(root, REPLACED.as_bytes())?;
        for name in names(root)? {
            if !reserved(&name) {
                let name = OsStr::from_bytes(&name);
                rustix::fs::renameat(root, name, &replaced, name)?;
            }
        }
        rustix::fs::fsync(&replaced)?;
        rustix::fs::renameat(root, READY, root, MOVING)?;
        rustix::fs::fsync(root)?;
    }
    if present(root, MOVING)? {
        let moving = dir_beneath(root, MOVING.as_bytes())?;
        for name in names(&moving)? {
            let name = OsStr::from_bytes(&name);
            rustix::fs::renameat(&moving, name, root, name)?;
        }
        rustix::fs::unlinkat(root, MOVING, AtFlags::REMOVEDIR)?;
        rustix::fs::fsync(root)?;
    }
    match remove_beneath(root, REPLACED.as_bytes()) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether the directory `name` is in `dir`. Anything else of that name
/// (a file the tenant made, a link) is not a restore's, and is removed.
fn present(dir: &OwnedFd, name: &str) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode as _) == FileType::Directory => Ok(true),
        Ok(_) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(false)
        }
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Removes the staging directory of an earlier restore, if any.
fn remove_staging(root: &OwnedFd) -> io::Result<()> {
    match remove_beneath(root, STAGING.as_bytes()) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes `name` in `dir` and, for a directory, everything in it (made
/// writable first), following no link.
fn remove_beneath(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let os = OsStr::from_bytes(name);
    let stat = rustix::fs::statat(dir, os, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode as _) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(dir, os, AtFlags::empty())?);
    }
    let sub = open_beneath(dir, name, OFlags::RDONLY | OFlags::DIRECTORY)?;
    rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700))?;
    for child in names(&sub)? {
        remove_beneath(&sub, &child)?;
    }
    Ok(rustix::fs::unlinkat(dir, os, AtFlags::REMOVEDIR)?)
}

#[cfg(test)]
mod tests;
