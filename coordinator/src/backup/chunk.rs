//! Streams cut into content-defined chunks (FastCDC), each written to the
//! repository once: a chunk whose name the tenant already has is not
//! uploaded again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use fastcdc::v2020::AsyncStreamCDC;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::BackupError;
use super::repo::{Put, Repository, chunk_path};

/// Chunk sizes: 256 KiB to 4 MiB, about 1 MiB on average (restic's
/// average too), so a change rewrites about a megabyte around it and a
/// stream in flight holds a few chunks at most.
pub const MIN_SIZE: usize = 256 * 1024;
pub const AVG_SIZE: usize = 1024 * 1024;
pub const MAX_SIZE: usize = 4 * 1024 * 1024;
/// Chunks sealed and uploaded at once per stream.
const IN_FLIGHT: usize = 4;

/// One chunk of a stream, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: String,
    pub len: u64,
}

/// What a backup run did, in bytes and chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// Read from the source.
    pub bytes_read: u64,
    /// Written to the repository (sealed, compressed).
    pub bytes_written: u64,
    pub new_chunks: u64,
    pub reused_chunks: u64,
}

impl Transfer {
    pub fn add(&mut self, other: Transfer) {
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.new_chunks += other.new_chunks;
        self.reused_chunks += other.reused_chunks;
    }
}

/// Writes the chunks of one tenant's streams for one backup run.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    repo: Repository,
    tenant: Uuid,
    /// Chunks the tenant has: listed once at the start of the run, and
    /// every chunk this run writes.
    known: Arc<Mutex<HashSet<String>>>,
    /// Chunks a prune marked unreferenced: written again when used, so
    /// that its sweep leaves them.
    marked: Arc<Mutex<HashSet<String>>>,
    transfer: Arc<Mutex<Transfer>>,
}

impl ChunkWriter {
    pub async fn new(
        repo: Repository,
        tenant: Uuid,
        marked: HashSet<String>,
    ) -> Result<Self, BackupError> {
        let known = repo.chunk_ids(tenant).await?;
        Ok(ChunkWriter {
            repo,
            tenant,
            known: Arc::new(Mutex::new(known)),
            marked: Arc::new(Mutex::new(marked)),
            transfer: Arc::default(),
        })
    }

    /// What this run has transferred so far.
    pub fn transfer(&self) -> Transfer {
        *self.transfer.lock().expect("transfer lock")
    }

    /// Cuts `source` into chunks and writes those the tenant lacks;
    /// returns the chunks in order.
    pub async fn write(
        &self,
        source: impl AsyncRead + Unpin,
    ) -> Result<Vec<ChunkRef>, BackupError> {
        let mut chunker = AsyncStreamCDC::new(source, MIN_SIZE, AVG_SIZE, MAX_SIZE);
        chunker
            .as_stream()
            .map_err(|e| BackupError::Read(std::io::Error::other(e)))
            .map_ok(|chunk| self.put(chunk.data))
            .try_buffered(IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Writes one chunk unless the tenant has it.
    pub async fn put(&self, data: Vec<u8>) -> Result<ChunkRef, BackupError> {
        let sealer = self.repo.sealer().clone();
        let (id, data) = tokio::task::spawn_blocking(move || (sealer.chunk_id(&data), data))
            .await
            .expect("hashing does not panic");
        let len = data.len() as u64;
        let seen = !self.known.lock().expect("known lock").insert(id.clone());
        let rescue = seen && self.marked.lock().expect("marked lock").remove(&id);
        let put = if rescue {
            let path = chunk_path(self.tenant, &id);
            Put::Written(self.repo.put_again(&path, &data).await?)
        } else if seen {
            Put::Existed
        } else {
            match self
                .repo
                .put_new(&chunk_path(self.tenant, &id), &data)
                .await
            {
                Ok(put) => put,
                Err(err) => {
                    self.known.lock().expect("known lock").remove(&id);
                    return Err(err);
                }
            }
        };
        let mut transfer = self.transfer.lock().expect("transfer lock");
        transfer.bytes_read += len;
        match put {
            Put::Written(bytes) => {
                transfer.bytes_written += bytes;
                transfer.new_chunks += 1;
            }
            Put::Existed => transfer.reused_chunks += 1,
        }
        Ok(ChunkRef { id, len })
    }
}
