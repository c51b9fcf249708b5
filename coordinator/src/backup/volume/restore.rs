//! A storage backup written back into a tenant's volume through its
//! volume pod: into a staging directory inside the volume, which replaces
//! the volume's contents only once every entry is written. The tenant's
//! pods are stopped first (by the restore flow), so nothing writes
//! meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{StreamExt, TryStreamExt};
use knowton_common::volume::{DATA_FRAME, Request, check_path};
use uuid::Uuid;

use super::VolumePod;
use crate::backup::BackupError;
use crate::backup::manifest::{Entry, Node};
use crate::backup::repo::Repository;

/// Chunks fetched ahead of the one being sent.
const PREFETCH: usize = 4;

/// Writes `entries` (of tenant `tenant`'s backup) into the volume of
/// `pod`; returns the bytes of file content written, also added to
/// `progress` as they go.
pub async fn restore(
    repo: &Repository,
    tenant: Uuid,
    entries: &[Entry],
    pod: &VolumePod,
    progress: &AtomicU64,
) -> Result<u64, BackupError> {
    let source = repo.chunks(tenant).await?;
    let mut session = pod.session().lock().await;
    session
        .call(&Request::Begin, "the start of a restore")
        .await?;
    let mut written = 0;
    for entry in entries {
        let path = bytes_of(&entry.path, entry.raw_path.as_deref())?;
        check_path(&path).map_err(|e| BackupError::Corrupt(format!("storage entry: {e}")))?;
        match &entry.node {
            Node::Dir => {
                let mkdir = Request::Mkdir {
                    path,
                    mode: entry.mode,
                };
                session.call(&mkdir, "a directory").await?;
            }
            Node::Symlink { target, raw_target } => {
                let target = bytes_of(target, raw_target.as_deref())?;
                session
                    .call(&Request::Symlink { path, target }, "a link")
                    .await?;
            }
            Node::File {
                mtime_ns, chunks, ..
            } => {
                let file = Request::File {
                    path,
                    mode: entry.mode,
                };
                session.call(&file, "a file").await?;
                let mut fetched =
                    futures::stream::iter(chunks.iter().map(|c| c.id.clone()).collect::<Vec<_>>())
                        .map(|id| source.fetch(&id))
                        .buffered(PREFETCH);
                while let Some(data) = fetched.try_next().await? {
                    for piece in data.chunks(DATA_FRAME) {
                        session.push(&Request::Content(piece.to_vec())).await?;
                    }
                    written += data.len() as u64;
                    progress.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                let end = Request::FileEnd {
                    mtime_ns: *mtime_ns,
                };
                session.call(&end, "the end of a file").await?;
            }
        }
    }
    session
        .call(&Request::Commit, "the commit of a restore")
        .await?;
    Ok(written)
}

/// A path or link target as bytes: its text, or its raw form (base64).
fn bytes_of(text: &str, raw: Option<&str>) -> Result<Vec<u8>, BackupError> {
    match raw {
        None => Ok(text.as_bytes().to_vec()),
        Some(raw) => B64
            .decode(raw)
            .map_err(|_| BackupError::Corrupt(format!("raw path {raw:?} is not base64"))),
    }
}
