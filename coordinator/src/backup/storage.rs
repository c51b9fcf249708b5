//! A tenant's files: backed up incrementally (a file unchanged since the
//! previous backup, by size, modification and change time, device and
//! inode, is not read again; a changed one is chunked by content, and only
//! the chunks the tenant lacks are uploaded), restored exactly (modes,
//! sizes, modification times, symbolic links, empty directories, and
//! nothing that was not in the backup).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{StreamExt, TryStreamExt};
use knowton_common::volume::{EntryInfo, Kind};
use tokio::io::{AsyncRead, AsyncWriteExt};
use uuid::Uuid;

use super::BackupError;
use super::chunk::{ChunkRef, ChunkWriter};
use super::manifest::{Entry, Node};
use super::repo::{Chunks, Repository};
use super::seal::Sealer;
use super::volume::VolumePod;

/// The most paths a backup holds: a tenant's count of files is bounded by
/// nothing its plan sells (empty files take no bytes), and a manifest is
/// held whole in memory.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Files read and chunked at once.
const FILES_AT_ONCE: usize = 4;
/// Chunks fetched ahead of the one being written, per file.
const PREFETCH: usize = 4;
/// Files restored at once.
const RESTORE_FILES: usize = 16;

/// What the walk found at one path, before any file is read: as `lstat`
/// saw it, here or in a volume pod.
struct Found {
    relative: PathBuf,
    kind: Kind,
    /// Permission bits.
    mode: u32,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    dev: u64,
    ino: u64,
    target: Option<PathBuf>,
}

/// Where a backup's entries and bytes come from: a directory on this host
/// (without a cluster), or a tenant's volume through its volume pod.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Local(&'a Path),
    Volume(&'a VolumePod),
}

impl Source<'_> {
    async fn walk(&self) -> Result<Vec<Found>, BackupError> {
        match *self {
            Source::Local(root) => {
                let root = root.to_owned();
                tokio::task::spawn_blocking(move || walk(&root))
                    .await
                    .expect("walking does not panic")
            }
            Source::Volume(pod) => {
                let entries = pod.session().lock().await.walk().await?;
                Ok(entries.into_iter().map(Found::from).collect())
            }
        }
    }

    /// The bytes of the regular file `found`.
    async fn open(
        &self,
        found: &Found,
    ) -> Result<Box<dyn AsyncRead + Unpin + Send + '_>, BackupError> {
        match *self {
            Source::Local(root) => Ok(Box::new(open_beneath(root, &found.relative)?)),
            Source::Volume(pod) => {
                let path = found.relative.as_os_str().as_bytes().to_vec();
                Ok(Box::new(pod.read(path, found.size).await))
            }
        }
    }
}

impl From<EntryInfo> for Found {
    fn from(e: EntryInfo) -> Found {
        Found {
            relative: PathBuf::from(OsStr::from_bytes(&e.path)),
            kind: e.kind,
            mode: e.mode,
            size: e.size,
            mtime_ns: e.mtime_ns,
            ctime_ns: e.ctime_ns,
            dev: e.dev,
            ino: e.ino,
            target: (e.kind == Kind::Symlink).then(|| PathBuf::from(OsStr::from_bytes(&e.target))),
        }
    }
}

/// Backs up the tree `source` holds; `previous` is the last backup's
/// entries, whose chunks an unchanged file reuses.
pub async fn back_up(
    source: Source<'_>,
    writer: &ChunkWriter,
    previous: &[Entry],
) -> Result<Vec<Entry>, BackupError> {
    let found = source.walk().await?;
    let before: HashMap<(&str, Option<&str>), &Entry> = previous
        .iter()
        .map(|e| ((e.path.as_str(), e.raw_path.as_deref()), e))
        .collect();
    futures::stream::iter(found)
        .map(|found| {
            let before = &before;
            async move {
                let (path, raw_path) = encode(found.relative.as_os_str());
                let mode = found.mode & 0o7777;
                let node = if found.kind == Kind::Dir {
                    Node::Dir
                } else if let Some(target) = &found.target {
                    let (target, raw_target) = encode(target.as_os_str());
                    Node::Symlink { target, raw_target }
                } else {
                    let seen = (found.dev, found.ino, found.ctime_ns);
                    let (size, mtime_ns) = (found.size, found.mtime_ns);
                    let unchanged =
                        before
                            .get(&(path.as_str(), raw_path.as_deref()))
                            .and_then(|e| match &e.node {
                                Node::File {
                                    size: s,
                                    mtime_ns: m,
                                    chunks,
                                    seen: Some(was),
                                } if (*s, *m, *was) == (size, mtime_ns, seen) => {
                                    Some(chunks.clone())
                                }
                                _ => None,
                            });
                    let chunks = match unchanged {
                        Some(chunks) => chunks,
                        None => writer.write(source.open(&found).await?).await?,
                    };
                    let size = chunks.iter().map(|c| c.len).sum();
                    Node::File {
                        size,
                        mtime_ns,
                        chunks,
                        seen: Some(seen),
                    }
                };
                Ok::<_, BackupError>(Entry {
                    path,
                    raw_path,
                    mode,
                    node,
                })
            }
        })
        .buffered(FILES_AT_ONCE)
        .try_collect()
        .await
}

/// The regular file at `relative` under `root`, opened without following
/// any symbolic link on the way and without leaving `root`: the tenant
/// may swap a file or a directory for a link between the walk and the
/// read, and must not get the coordinator's files into its backup.
pub fn open_beneath(root: &Path, relative: &Path) -> Result<tokio::fs::File, BackupError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
    let dir = std::fs::File::open(root).map_err(BackupError::Read)?;
    let fd = openat2(
        &dir,
        relative,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| BackupError::Read(e.into()))?;
    let file = std::fs::File::from(fd);
    if !file.metadata().map_err(BackupError::Read)?.is_file() {
        return Err(BackupError::Read(std::io::Error::other(format!(
            "{} is no longer a regular file",
            relative.display()
        ))));
    }
    Ok(tokio::fs::File::from_std(file))
}

/// Every directory, regular file and symbolic link under `root`,
/// parents before children, in name order; other kinds (sockets, pipes,
/// devices) are left out. Symbolic links are not followed.
fn walk(root: &Path) -> Result<Vec<Found>, BackupError> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let mut children: Vec<_> = std::fs::read_dir(root.join(&dir))
            .map_err(BackupError::Read)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(BackupError::Read)?;
        children.sort();
        let mut subdirs = Vec::new();
        for name in children {
            let relative = dir.join(&name);
            let full = root.join(&relative);
            let meta = std::fs::symlink_metadata(&full).map_err(BackupError::Read)?;
            let kind = meta.file_type();
            let target = if kind.is_symlink() {
                Some(std::fs::read_link(&full).map_err(BackupError::Read)?)
            } else {
                None
            };
            if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
                tracing::debug!(path = %full.display(), "not a file, directory or link: not backed up");
                continue;
            }
            if kind.is_dir() {
                subdirs.push(relative.clone());
            }
            if out.len() >= MAX_ENTRIES {
                return Err(BackupError::Corrupt(format!(
                    "more than {MAX_ENTRIES} files and directories: not backed up"
                )));
            }
            out.push(Found {
                relative,
                kind: if kind.is_dir() {
                    Kind::Dir
                } else if kind.is_symlink() {
                    Kind::Symlink
                } else {
                    Kind::File
                },
                mode: meta.mode() & 0o7777,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                ctime_ns: ctime_ns(&meta),
                dev: meta.dev(),
                ino: meta.ino(),
                target,
            });
        }
        // Depth first, in name order.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Restores `entries` into `target`, which must not exist: everything is
/// written beside it first, [`RESTORE_FILES`] files at once, each synced
/// once written (so the syncs overlap the other files' work, and flush
/// only what the restore wrote), every directory synced, and moved into
/// place last, so a restore that fails leaves `target` as it was
/// (absent), and one that returns is on disk. Bytes written are added to
/// `progress` as they go.
pub async fn restore(
    repo: &Repository,
    tenant: Uuid,
    entries: &[Entry],
    target: &Path,
    progress: &AtomicU64,
) -> Result<u64, BackupError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(".knowton-restore-{}", Uuid::new_v4().simple()));
    let source = repo.chunks(tenant).await?;
    let written = write_tree(&source, entries, &staging, progress).await;
    let written = match written {
        Ok(bytes) => bytes,
        Err(err) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(err);
        }
    };
    tokio::fs::rename(&staging, target)
        .await
        .map_err(|e| BackupError::Write {
            path: target.to_owned(),
            source: e,
        })?;
    let parent = parent.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&parent)?.sync_all())
        .await
        .expect("syncing does not panic")
        .map_err(|e| BackupError::Write {
            path: target.to_owned(),
            source: e,
        })?;
    Ok(written)
}

async fn write_tree(
    source: &Chunks,
    entries: &[Entry],
    root: &Path,
    progress: &AtomicU64,
) -> Result<u64, BackupError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Write { path, source }
    };
    tokio::fs::create_dir(root).await.map_err(write_err(root))?;
    tokio::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(write_err(root))?;
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in entries {
        let path = root.join(relative(entry)?);
        match &entry.node {
            Node::Dir => {
                tokio::fs::create_dir(&path)
                    .await
                    .map_err(write_err(&path))?;
                dirs.push((path, entry.mode));
            }
            Node::Symlink { target, raw_target } => {
                let target = decode(target, raw_target.as_deref())?;
                tokio::fs::symlink(&target, &path)
                    .await
                    .map_err(write_err(&path))?;
            }
            Node::File {
                mtime_ns, chunks, ..
            } => files.push((path, entry.mode, *mtime_ns, chunks.clone())),
        }
    }
    let written: u64 = futures::stream::iter(files)
        .map(|(path, mode, mtime_ns, chunks)| async move {
            write_file(source, &chunks, (mode, mtime_ns), &path, progress).await
        })
        .buffer_unordered(RESTORE_FILES)
        .try_fold(0, |sum, written| async move {
            Ok::<_, BackupError>(sum + written)
        })
        .await?;
    // Last, deepest first: a read-only directory is filled before it is
    // made read-only.
    for (path, mode) in dirs.iter().rev() {
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
            .await
            .map_err(write_err(path))?;
    }
    futures::stream::iter(
        dirs.into_iter()
            .map(|(path, _)| path)
            .chain([root.to_owned()]),
    )
    .map(|dir| async move {
        let synced = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
                .await
                .expect("syncing does not panic")
        };
        synced.map_err(write_err(&dir))
    })
    .buffer_unordered(RESTORE_FILES)
    .try_collect::<()>()
    .await?;
    Ok(written)
}

/// Writes the file at `path` from its chunks, with its mode and
/// modification time, and syncs it.
async fn write_file(
    source: &Chunks,
    chunks: &[ChunkRef],
    (mode, mtime_ns): (u32, i64),
    path: &Path,
    progress: &AtomicU64,
) -> Result<u64, BackupError> {
    let write_err = |source| BackupError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(write_err)?;
    let mut written = 0;
    let mut fetched =
        futures::stream::iter(chunks.iter().map(|c| c.id.clone()).collect::<Vec<_>>())
            .map(|id| source.fetch(&id))
            .buffered(PREFETCH);
    while let Some(data) = fetched.try_next().await? {
        file.write_all(&data).await.map_err(write_err)?;
        written += data.len() as u64;
        progress.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    let file = file.into_std().await;
    tokio::task::spawn_blocking(move || {
        file.set_modified(system_time(mtime_ns))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()
    })
    .await
    .expect("syncing does not panic")
    .map_err(write_err)?;
    Ok(written)
}

/// Compares the tree restored under `root` with `entries`: every entry's
/// kind and mode, every file's size, modification time and content (each
/// piece against its chunk's keyed hash), every link's target, and no
/// path that is not in the backup. Returns the differences, each naming
/// the path. Blocking.
pub fn compare(root: &Path, entries: &[Entry], sealer: &Sealer) -> Vec<String> {
    use std::io::Read;
    let mut problems = Vec::new();
    let mut expected = std::collections::HashSet::with_capacity(entries.len());
    for entry in entries {
        let rel = match relative(entry) {
            Ok(rel) => rel,
            Err(err) => {
                problems.push(err.to_string());
                continue;
            }
        };
        let path = root.join(&rel);
        let shown = rel.display();
        expected.insert(rel.clone());
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) => {
                problems.push(format!("{shown}: not restored ({err})"));
                continue;
            }
        };
        let kind = meta.file_type();
        if !kind.is_symlink() && meta.mode() & 0o7777 != entry.mode {
            problems.push(format!(
                "{shown}: mode {:o}, the backup says {:o}",
                meta.mode() & 0o7777,
                entry.mode
            ));
        }
        match &entry.node {
            Node::Dir if !kind.is_dir() => problems.push(format!("{shown}: not a directory")),
            Node::Dir => {}
            Node::Symlink { target, raw_target } => {
                let wanted = decode(target, raw_target.as_deref()).ok();
                if std::fs::read_link(&path).ok() != wanted {
                    problems.push(format!(
                        "{shown}: the link's target differs from the backup"
                    ));
                }
            }
            Node::File { .. } if !kind.is_file() => {
                problems.push(format!("{shown}: not a file"));
            }
            Node::File {
                size,
                mtime_ns: mtime,
                chunks,
                ..
            } => {
                if meta.len() != *size {
                    problems.push(format!(
                        "{shown}: {} bytes, the backup says {size}",
                        meta.len()
                    ));
                    continue;
                }
                if mtime_ns(&meta) != *mtime {
                    problems.push(format!(
                        "{shown}: modification time differs from the backup"
                    ));
                }
                let mut file = match std::fs::File::open(&path) {
                    Ok(file) => file,
                    Err(err) => {
                        problems.push(format!("{shown}: unreadable ({err})"));
                        continue;
                    }
                };
                let mut piece = Vec::new();
                for (i, chunk) in chunks.iter().enumerate() {
                    piece.clear();
                    let read = (&mut file).take(chunk.len).read_to_end(&mut piece);
                    if read.is_err() || piece.len() as u64 != chunk.len {
                        problems.push(format!("{shown}: piece {i} unreadable"));
                        break;
                    }
                    if sealer.chunk_id(&piece) != chunk.id {
                        problems.push(format!(
                            "{shown}: bytes {}.. differ from the backup's chunk {}",
                            chunks[..i].iter().map(|c| c.len).sum::<u64>(),
                            chunk.id
                        ));
                        break;
                    }
                }
            }
        }
    }
    match walk(root) {
        Ok(found) => problems.extend(
            found
                .into_iter()
                .filter(|f| !expected.contains(&f.relative))
                .map(|f| format!("{}: restored but not in the backup", f.relative.display())),
        ),
        Err(err) => problems.push(format!("failed to list the restored files: {err}")),
    }
    problems
}

/// The entry's path, refused if it could leave the restore's root.
fn relative(entry: &Entry) -> Result<PathBuf, BackupError> {
    let path = decode(&entry.path, entry.raw_path.as_deref())?;
    let normal = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !normal {
        return Err(BackupError::Corrupt(format!(
            "storage entry {:?} is not a relative path",
            path
        )));
    }
    Ok(path)
}

fn encode(path: &OsStr) -> (String, Option<String>) {
    match path.to_str() {
        Some(text) => (text.to_owned(), None),
        None => (String::new(), Some(B64.encode(path.as_bytes()))),
    }
}

fn decode(text: &str, raw: Option<&str>) -> Result<PathBuf, BackupError> {
    match raw {
        None => Ok(PathBuf::from(text)),
        Some(raw) => B64
            .decode(raw)
            .map(|bytes| PathBuf::from(OsStr::from_bytes(&bytes)))
            .map_err(|_| BackupError::Corrupt(format!("raw path {raw:?} is not base64"))),
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

fn system_time(ns: i64) -> std::time::SystemTime {
    let since = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + since
    } else {
        std::time::UNIX_EPOCH - since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link swapped in for a file or a directory after the walk does not
    /// take the read outside the tenant's directory.
    #[test]
    fn a_file_is_read_only_from_inside_the_root_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("tenant"), dir.path().join("secret"));
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("key"), "coordinator secret").unwrap();
        std::fs::write(root.join("docs/a.txt"), "tenant data").unwrap();
        std::os::unix::fs::symlink(outside.join("key"), root.join("file-link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir-link")).unwrap();

        assert!(open_beneath(&root, Path::new("docs/a.txt")).is_ok());
        for path in ["file-link", "dir-link/key", "../secret/key", "docs"] {
            assert!(open_beneath(&root, Path::new(path)).is_err(), "{path}");
        }
    }
}
