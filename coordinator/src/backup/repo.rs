//! The backup repository: sealed, write-once objects in an object store
//! (`file:///…` or `s3://bucket/prefix`).
//!
//! Layout, under the repository's prefix, per tenant (so that purging a
//! tenant is deleting one prefix, and one tenant's data is never a chunk
//! of another's backup):
//!
//! - `tenants/<tenant id>/packs/<data|meta>/<2 hex>/<pack id>`: packs of
//!   content-defined chunks of database dumps, files and listings, each
//!   chunk named by its keyed hash ([`super::pack`]);
//! - `tenants/<tenant id>/index/<id>`: which pack holds which chunk;
//! - `tenants/<tenant id>/backups/<kind>/<YYYYMMDDTHHMMSSZ>-<backup id>`:
//!   one manifest per backup, written after every pack and index entry it
//!   needs, so a backup is listed only once it is complete;
//! - `tenants/<tenant id>/marks/…`: what a prune found unreferenced.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use uuid::Uuid;

use super::pack::{self, Index, IndexFile, Location, PackKind};
use super::seal::{OpenError, Sealer};
use super::{BackupError, BackupKind};

/// Index objects read at once.
const INDEX_READS: usize = 8;

/// An object store with the backup key.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    sealer: Sealer,
    /// The repository's URL as shown in messages.
    shown: String,
    /// A pack is written once it holds this much.
    pack_size: usize,
}

/// One object as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Relative to the repository.
    pub path: String,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// What a write-once put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Written: this many bytes went to the store.
    Written(u64),
    /// The object existed already.
    Existed,
}

impl Repository {
    pub fn new(store: Arc<dyn ObjectStore>, sealer: Sealer, shown: String) -> Self {
        Repository {
            store,
            sealer,
            shown,
            pack_size: pack::PACK_SIZE,
        }
    }

    /// The same repository, writing packs once they hold `bytes` (tests
    /// use small packs to have several).
    pub fn with_pack_size(mut self, bytes: usize) -> Self {
        self.pack_size = bytes.max(1);
        self
    }

    pub fn pack_size(&self) -> usize {
        self.pack_size
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Seals `plain` and writes it at `path` unless an object is there.
    pub async fn put_new(&self, path: &str, plain: &[u8]) -> Result<Put, BackupError> {
        let sealed = {
            let (sealer, path, plain) = (self.sealer.clone(), path.to_owned(), plain.to_vec());
            tokio::task::spawn_blocking(move || sealer.seal(&path, &plain))
                .await
                .expect("sealing does not panic")
        };
        self.create(path, sealed).await
    }

    /// Writes `bytes` at `path` unless an object is there.
    async fn create(&self, path: &str, bytes: Vec<u8>) -> Result<Put, BackupError> {
        let len = bytes.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(path), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Put::Written(len)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Existed),
            Err(source) => Err(self.failed(path, "write", source)),
        }
    }

    /// Writes a pack of `tenant` (its chunks sealed already) under a new
    /// name; returns the name and the bytes written.
    pub async fn put_pack(
        &self,
        tenant: Uuid,
        kind: PackKind,
        bytes: Vec<u8>,
    ) -> Result<(String, u64), BackupError> {
        let id = Uuid::new_v4().simple().to_string();
        let path = pack::pack_path(tenant, kind, &id);
        match self.create(&path, bytes).await? {
            Put::Written(len) => Ok((id, len)),
            Put::Existed => Err(BackupError::Corrupt(format!("pack {path} exists already"))),
        }
    }

    /// Writes an index object of `tenant`; returns the bytes written.
    pub async fn put_index(&self, tenant: Uuid, index: &IndexFile) -> Result<u64, BackupError> {
        let path = format!("{}/{}", pack::index_prefix(tenant), Uuid::now_v7().simple());
        let body = serde_json::to_vec(index).expect("an index serialises");
        match self.put_new(&path, &body).await? {
            Put::Written(len) => Ok(len),
            Put::Existed => Err(BackupError::Corrupt(format!("index {path} exists already"))),
        }
    }

    /// `tenant`'s index: every index object, merged.
    pub async fn index(&self, tenant: Uuid) -> Result<Index, BackupError> {
        let mut listed = self.list(&pack::index_prefix(tenant)).await?;
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        let files: Vec<(String, IndexFile)> = futures::stream::iter(listed)
            .map(|object| async move {
                let body = self.get(&object.path).await?;
                let file = serde_json::from_slice(&body).map_err(|e| {
                    BackupError::Corrupt(format!("index {} does not parse: {e}", object.path))
                })?;
                Ok::<_, BackupError>((object.path, file))
            })
            .buffered(INDEX_READS)
            .try_collect()
            .await?;
        let mut index = Index::default();
        for (path, file) in files {
            index.add(path, file);
        }
        Ok(index)
    }

    /// A reader of `tenant`'s chunks, by its index as it is now.
    pub async fn chunks(&self, tenant: Uuid) -> Result<Chunks, BackupError> {
        Ok(Chunks {
            repo: self.clone(),
            tenant,
            index: Arc::new(self.index(tenant).await?),
        })
    }

    /// The raw bytes at `path`, as stored.
    pub async fn get_raw(&self, path: &str) -> Result<Vec<u8>, BackupError> {
        let read = async {
            self.store
                .get(&Path::from(path))
                .await?
                .bytes()
                .await
                .map(|b| b.to_vec())
        };
        read.await
            .map_err(|source| self.failed(path, "read", source))
    }

    /// The plaintext of the object at `path`.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, BackupError> {
        let sealed = self.get_raw(path).await?;
        self.sealer
            .open(path, &sealed)
            .map_err(|reason| self.unreadable(path, reason))
    }

    /// The chunk `id` of `tenant` at `at`, checked against its name.
    pub async fn read_chunk(
        &self,
        tenant: Uuid,
        id: &str,
        at: &Location,
    ) -> Result<Vec<u8>, BackupError> {
        let pack = pack::pack_path(tenant, at.kind, &at.pack);
        let shown = format!("{pack} (chunk {id})");
        let range = at.offset..at.offset + u64::from(at.length);
        let sealed = self
            .store
            .get_range(&Path::from(pack.as_str()), range)
            .await
            .map_err(|source| self.failed(&shown, "read", source))?;
        let (sealer, id) = (self.sealer.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || {
            sealer.open_chunk(pack::chunk_aad(tenant, &id).as_bytes(), &id, &sealed)
        })
        .await
        .expect("opening does not panic")
        .map_err(|reason| self.unreadable(&shown, reason))
    }

    /// The objects under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, BackupError> {
        self.store
            .list(Some(&Path::from(prefix)))
            .map_ok(|meta| Listed {
                path: meta.location.to_string(),
                size: meta.size,
                modified: meta.last_modified,
            })
            .try_collect()
            .await
            .map_err(|source| self.failed(prefix, "list", source))
    }

    /// The chunks `tenant`'s index lists.
    pub async fn chunk_ids(&self, tenant: Uuid) -> Result<HashSet<String>, BackupError> {
        Ok(self.index(tenant).await?.chunk_ids().cloned().collect())
    }

    pub async fn delete(&self, path: &str) -> Result<(), BackupError> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.failed(path, "delete", source)),
        }
    }

    fn failed(&self, path: &str, step: &'static str, source: object_store::Error) -> BackupError {
        BackupError::Repository {
            repository: self.shown.clone(),
            path: path.to_owned(),
            step,
            source: Box::new(source),
        }
    }

    fn unreadable(&self, path: &str, reason: OpenError) -> BackupError {
        BackupError::Unreadable {
            path: path.to_owned(),
            reason,
        }
    }
}

/// Reads a tenant's chunks by name, through its index.
#[derive(Debug, Clone)]
pub struct Chunks {
    repo: Repository,
    tenant: Uuid,
    index: Arc<Index>,
}

impl Chunks {
    /// Where chunk `id` is, if any pack holds it.
    pub fn locate(&self, id: &str) -> Option<&Location> {
        self.index.locate(id)
    }

    /// The chunk `id`, checked against its name.
    pub async fn get(&self, id: &str) -> Result<Vec<u8>, BackupError> {
        let at = self.index.locate(id).ok_or_else(|| {
            BackupError::Corrupt(format!(
                "chunk {id} is in no pack that {} lists",
                pack::index_prefix(self.tenant)
            ))
        })?;
        self.repo.read_chunk(self.tenant, id, at).await
    }

    /// A future of the chunk `id` that owns what it needs (a future
    /// borrowing from a stream's item is not `Send` for every lifetime,
    /// which a spawned restore needs).
    pub fn fetch(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, BackupError>> + Send + use<> {
        let (chunks, id) = (self.clone(), id.to_owned());
        async move { chunks.get(&id).await }
    }
}

/// Where `tenant`'s marks of unreferenced chunks are.
pub fn marks_prefix(tenant: Uuid) -> String {
    format!("tenants/{tenant}/marks")
}

/// Where the manifests of `tenant`'s backups of `kind` are.
pub fn manifests_prefix(tenant: Uuid, kind: BackupKind) -> String {
    format!("tenants/{tenant}/backups/{kind}")
}

/// The manifest of backup `id` taken at `taken_at`.
pub fn manifest_path(
    tenant: Uuid,
    kind: BackupKind,
    taken_at: chrono::DateTime<chrono::Utc>,
    id: Uuid,
) -> String {
    format!(
        "{}/{}-{id}",
        manifests_prefix(tenant, kind),
        taken_at.format("%Y%m%dT%H%M%SZ")
    )
}
