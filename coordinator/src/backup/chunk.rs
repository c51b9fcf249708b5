//! Streams cut into content-defined chunks (FastCDC), each written to the
//! repository once: a chunk the tenant already has is not uploaded
//! again. New chunks are sealed one by one and gathered into packs
//! ([`super::pack`]); [`ChunkWriter::finish`] writes the last packs and
//! the index that names them, before the run's manifest.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use fastcdc::v2020::AsyncStreamCDC;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::{JoinError, JoinSet};
use uuid::Uuid;

use super::BackupError;
use super::pack::{self, IndexFile, IndexedPack, PackKind, Placed};
use super::repo::Repository;
use super::seal::OVERHEAD;

/// Chunk sizes: 256 KiB to 4 MiB, about 1 MiB on average (restic's
/// average too), so a change rewrites about a megabyte around it and a
/// stream in flight holds a few chunks at most.
pub const MIN_SIZE: usize = 256 * 1024;
pub const AVG_SIZE: usize = 1024 * 1024;
pub const MAX_SIZE: usize = 4 * 1024 * 1024;
/// Chunks sealed and uploaded at once per stream.
const IN_FLIGHT: usize = 4;
/// Packs written before an index object names them: a run that stops
/// part-way leaves at most this many packs that the next run cannot
/// reuse (pruning removes them).
const INDEX_EVERY: usize = 16;
/// Full packs being written at once, while the next fills: the source is
/// read and sealed on while the repository writes (and, on a file
/// repository, syncs), as restic's packer workers do. Each holds a pack
/// in memory, up to [`pack::PACK_SIZE`] and a chunk.
const PACKS_AT_ONCE: usize = 2;

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
    /// Written to the repository (packs, index and manifest, as stored).
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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    repo: Repository,
    tenant: Uuid,
    /// Chunks the tenant has: those the index lists at the start of the
    /// run, less those a prune marked unreferenced (written again when
    /// used, into a new pack, so that its sweep may take the old one),
    /// and every chunk this run writes.
    known: Mutex<HashSet<String>>,
    /// The pack being filled, per kind.
    open: [Mutex<Open>; 2],
    /// Full packs being written: each ends with the pack as indexed and
    /// the bytes written. Dropped with the writer, which aborts them (a
    /// run given up writes no more).
    uploads: tokio::sync::Mutex<JoinSet<Result<(IndexedPack, u64), BackupError>>>,
    /// Packs written that no index object names yet.
    unindexed: Mutex<Vec<IndexedPack>>,
    transfer: Mutex<Transfer>,
}

#[derive(Debug, Default)]
struct Open {
    bytes: Vec<u8>,
    chunks: Vec<Placed>,
}

impl ChunkWriter {
    pub async fn new(
        repo: Repository,
        tenant: Uuid,
        marked: HashSet<String>,
    ) -> Result<Self, BackupError> {
        let index = repo.index(tenant).await?;
        let known = index
            .chunk_ids()
            .filter(|id| !marked.contains(*id))
            .cloned()
            .collect();
        Ok(ChunkWriter {
            inner: Arc::new(Inner {
                repo,
                tenant,
                known: Mutex::new(known),
                open: Default::default(),
                uploads: Default::default(),
                unindexed: Mutex::default(),
                transfer: Mutex::default(),
            }),
        })
    }

    /// What this run has transferred so far.
    pub fn transfer(&self) -> Transfer {
        *self.inner.transfer.lock().expect("transfer lock")
    }

    /// Cuts `source` into chunks and writes those the tenant lacks;
    /// returns the chunks in order.
    pub async fn write(
        &self,
        mut source: impl AsyncRead + Unpin,
    ) -> Result<Vec<ChunkRef>, BackupError> {
        // A stream no longer than [`MIN_SIZE`] is one chunk (FastCDC cuts
        // nothing shorter): read whole, it skips the chunker, which zeroes
        // a buffer of [`MAX_SIZE`] per stream (most files are small).
        let mut head = Vec::with_capacity(MIN_SIZE + 1);
        (&mut source)
            .take(MIN_SIZE as u64 + 1)
            .read_to_end(&mut head)
            .await
            .map_err(BackupError::Read)?;
        if head.len() <= MIN_SIZE {
            return Ok(if head.is_empty() {
                Vec::new()
            } else {
                vec![self.put(head).await?]
            });
        }
        let source = std::io::Cursor::new(head).chain(source);
        let mut chunker = AsyncStreamCDC::new(source, MIN_SIZE, AVG_SIZE, MAX_SIZE);
        chunker
            .as_stream()
            .map_err(|e| BackupError::Read(std::io::Error::other(e)))
            .map_ok(|chunk| self.put(chunk.data))
            .try_buffered(IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Writes the pieces of a storage backup's listing
    /// ([`super::listing`]) into meta packs; returns them as chunks, in
    /// order.
    pub async fn write_listing(&self, pieces: Vec<Vec<u8>>) -> Result<Vec<ChunkRef>, BackupError> {
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            out.push(self.put_kind(PackKind::Meta, piece).await?);
        }
        Ok(out)
    }

    /// Writes one chunk of data unless the tenant has it.
    pub async fn put(&self, data: Vec<u8>) -> Result<ChunkRef, BackupError> {
        self.put_kind(PackKind::Data, data).await
    }

    async fn put_kind(&self, kind: PackKind, data: Vec<u8>) -> Result<ChunkRef, BackupError> {
        let inner = self.inner.clone();
        let (id, len, sealed) = tokio::task::spawn_blocking(move || {
            let sealer = inner.repo.sealer();
            let id = sealer.chunk_id(&data);
            let new = inner.known.lock().expect("known lock").insert(id.clone());
            let sealed = new.then(|| {
                let mut out = Vec::with_capacity(data.len() + OVERHEAD);
                sealer.seal_into(
                    &mut out,
                    pack::chunk_aad(inner.tenant, &id).as_bytes(),
                    &data,
                );
                out
            });
            (id, data.len() as u64, sealed)
        })
        .await
        .expect("sealing does not panic");
        if kind == PackKind::Data {
            let mut transfer = self.inner.transfer.lock().expect("transfer lock");
            transfer.bytes_read += len;
            if sealed.is_some() {
                transfer.new_chunks += 1;
            } else {
                transfer.reused_chunks += 1;
            }
        }
        if let Some(sealed) = sealed {
            let full = {
                let mut open = self.inner.open[kind as usize].lock().expect("pack lock");
                if open.bytes.is_empty() {
                    if kind == PackKind::Data {
                        // Filled at once, not grown (listings are small).
                        let most = self.inner.repo.pack_size().min(pack::PACK_SIZE);
                        open.bytes
                            .reserve(most + MAX_SIZE + OVERHEAD + pack::MAGIC.len());
                    }
                    open.bytes.extend_from_slice(pack::MAGIC);
                }
                let offset = open.bytes.len() as u64;
                open.bytes.extend_from_slice(&sealed);
                open.chunks
                    .push(Placed(id.clone(), offset, sealed.len() as u32));
                (open.bytes.len() >= self.inner.repo.pack_size())
                    .then(|| std::mem::take(&mut *open))
            };
            if let Some(full) = full {
                self.upload(kind, full).await?;
            }
        }
        Ok(ChunkRef { id, len })
    }

    /// Starts writing a full pack, once fewer than [`PACKS_AT_ONCE`] are
    /// being written; records those that have landed.
    async fn upload(&self, kind: PackKind, pack: Open) -> Result<(), BackupError> {
        let mut uploads = self.inner.uploads.lock().await;
        while let Some(done) = uploads.try_join_next() {
            self.landed(done).await?;
        }
        while uploads.len() >= PACKS_AT_ONCE {
            let done = uploads.join_next().await.expect("the set is not empty");
            self.landed(done).await?;
        }
        let (repo, tenant) = (self.inner.repo.clone(), self.inner.tenant);
        uploads.spawn(async move {
            let (id, written) = repo.put_pack(tenant, kind, pack.bytes).await?;
            let indexed = IndexedPack {
                kind,
                id,
                chunks: pack.chunks,
            };
            Ok((indexed, written))
        });
        Ok(())
    }

    /// Records a pack that has landed, and writes the index once enough
    /// packs wait for one: an index names only packs that exist.
    async fn landed(
        &self,
        done: Result<Result<(IndexedPack, u64), BackupError>, JoinError>,
    ) -> Result<(), BackupError> {
        let (pack, written) = match done {
            Ok(landed) => landed?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                return Err(BackupError::Corrupt(
                    "a pack's write was cancelled (the coordinator is stopping)".into(),
                ));
            }
        };
        self.inner
            .transfer
            .lock()
            .expect("transfer lock")
            .bytes_written += written;
        let due = {
            let mut unindexed = self.inner.unindexed.lock().expect("index lock");
            unindexed.push(pack);
            (unindexed.len() >= INDEX_EVERY).then(|| std::mem::take(&mut *unindexed))
        };
        if let Some(packs) = due {
            self.write_index(packs).await?;
        }
        Ok(())
    }

    async fn write_index(&self, packs: Vec<IndexedPack>) -> Result<(), BackupError> {
        let written = self
            .inner
            .repo
            .put_index(self.inner.tenant, &IndexFile { packs })
            .await?;
        self.inner
            .transfer
            .lock()
            .expect("transfer lock")
            .bytes_written += written;
        Ok(())
    }

    /// Writes the packs still being filled and the index of every pack
    /// not yet in one: after this, every chunk the run returned is in the
    /// repository and its index. Call it once every write has returned,
    /// before the manifest.
    pub async fn finish(&self) -> Result<(), BackupError> {
        for kind in PackKind::ALL {
            let open =
                std::mem::take(&mut *self.inner.open[kind as usize].lock().expect("pack lock"));
            if !open.chunks.is_empty() {
                self.upload(kind, open).await?;
            }
        }
        let mut uploads = self.inner.uploads.lock().await;
        while let Some(done) = uploads.join_next().await {
            self.landed(done).await?;
        }
        drop(uploads);
        let packs = std::mem::take(&mut *self.inner.unindexed.lock().expect("index lock"));
        if !packs.is_empty() {
            self.write_index(packs).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    use super::*;
    use crate::backup::seal::Sealer;
    use crate::secrets::SecretBox;

    /// A repository in memory whose pack writes wait at a gate the test
    /// opens; each write notes how many passes the test had given when it
    /// began.
    #[derive(Debug)]
    struct Gated {
        inner: InMemory,
        gate: tokio::sync::Semaphore,
        passes: AtomicUsize,
        began: tokio::sync::watch::Sender<Vec<usize>>,
    }

    impl Gated {
        fn new() -> Self {
            Gated {
                inner: InMemory::new(),
                gate: tokio::sync::Semaphore::new(0),
                passes: AtomicUsize::new(0),
                began: tokio::sync::watch::Sender::new(Vec::new()),
            }
        }

        fn pass(&self, writes: usize) {
            self.passes.fetch_add(writes, Ordering::SeqCst);
            self.gate.add_permits(writes);
        }

        fn began(&self) -> Vec<usize> {
            self.began.borrow().clone()
        }
    }

    impl std::fmt::Display for Gated {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("gated")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Gated {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            if location.as_ref().contains("/packs/") {
                let passes = self.passes.load(Ordering::SeqCst);
                self.began.send_modify(|began| began.push(passes));
                self.gate.acquire().await.unwrap().forget();
            }
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .unwrap_or_else(|_| panic!("{what} did not end"))
    }

    /// Full packs are written while the next one fills (a chunk put
    /// returns before its pack has landed), at most [`PACKS_AT_ONCE`] at a
    /// time (the next full pack waits for one to land), and `finish`
    /// waits for all of them and indexes exactly those. Time is paused: it
    /// moves on only once every task, sealing included, waits.
    #[tokio::test(start_paused = true)]
    async fn packs_are_written_beside_the_reading_two_at_a_time_and_all_indexed() {
        let store = Arc::new(Gated::new());
        let sealer = Sealer::new(&SecretBox::from_key(&[3; 32]));
        // Every chunk fills a pack.
        let repo = Repository::new(store.clone(), sealer, "gated".into()).with_pack_size(1);
        let tenant = Uuid::now_v7();
        let writer = ChunkWriter::new(repo.clone(), tenant, HashSet::new())
            .await
            .unwrap();

        for chunk in 0..PACKS_AT_ONCE as u8 {
            within("a put while packs wait", writer.put(vec![chunk; 100]))
                .await
                .unwrap();
        }
        let waiting = tokio::spawn({
            let writer = writer.clone();
            async move { writer.put(vec![9; 100]).await }
        });
        let mut began = store.began.subscribe();
        let third = tokio::time::timeout(
            Duration::from_secs(5),
            began.wait_for(|b| b.len() > PACKS_AT_ONCE),
        )
        .await;
        assert!(
            third.is_err(),
            "a third pack began while two were being written: {:?}",
            store.began()
        );
        assert!(!waiting.is_finished());
        store.pass(1);
        within("the third put", waiting).await.unwrap().unwrap();
        store.pass(PACKS_AT_ONCE);
        within("finish", writer.finish()).await.unwrap();

        assert_eq!(
            store.began(),
            [0, 0, 1],
            "the third pack began only once one of the first two had landed"
        );
        let index = repo.index(tenant).await.unwrap();
        assert_eq!(index.packs.len(), 3);
        assert_eq!(index.chunk_ids().count(), 3);
        let transfer = writer.transfer();
        assert_eq!((transfer.new_chunks, transfer.bytes_read), (3, 300));
        assert!(transfer.bytes_written > 300, "{transfer:?}");
    }
}
