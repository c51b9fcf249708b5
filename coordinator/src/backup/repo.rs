//! The backup repository: sealed, write-once objects in an object store
//! (`file:///…` or `s3://bucket/prefix`).
//!
//! Layout, under the repository's prefix, per tenant (so that purging a
//! tenant is deleting one prefix, and one tenant's data is never a chunk
//! of another's backup):
//!
//! - `tenants/<tenant id>/chunks/<2 hex>/<chunk id>`: content-defined
//!   chunks of database dumps and files, named by their keyed hash;
//! - `tenants/<tenant id>/backups/<kind>/<YYYYMMDDTHHMMSSZ>-<backup id>`:
//!   one manifest per backup, written after every chunk it names, so a
//!   backup is listed only once it is complete.

use std::collections::HashSet;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use uuid::Uuid;

use super::seal::{OpenError, Sealer};
use super::{BackupError, BackupKind};

/// An object store with the backup key.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    sealer: Sealer,
    /// The repository's URL as shown in messages.
    shown: String,
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
    /// The object existed already (a chunk another backup wrote).
    Existed,
}

impl Repository {
    pub fn new(store: Arc<dyn ObjectStore>, sealer: Sealer, shown: String) -> Self {
        Repository {
            store,
            sealer,
            shown,
        }
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
        let len = sealed.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(path), PutPayload::from(sealed), opts)
            .await
        {
            Ok(_) => Ok(Put::Written(len)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Existed),
            Err(source) => Err(self.failed(path, "write", source)),
        }
    }

    /// Seals `plain` and writes it at `path`, replacing what is there (a
    /// chunk rescued from a pending sweep: its content is the same, its
    /// modification time is now).
    pub async fn put_again(&self, path: &str, plain: &[u8]) -> Result<u64, BackupError> {
        let sealed = self.sealer.seal(path, plain);
        let len = sealed.len() as u64;
        self.store
            .put(&Path::from(path), PutPayload::from(sealed))
            .await
            .map_err(|source| self.failed(path, "write", source))?;
        Ok(len)
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
        self.open(path, &sealed)
    }

    fn open(&self, path: &str, sealed: &[u8]) -> Result<Vec<u8>, BackupError> {
        self.sealer
            .open(path, sealed)
            .map_err(|reason| self.unreadable(path, reason))
    }

    /// The chunk `id` of `tenant`, checked against its name.
    pub async fn get_chunk(&self, tenant: Uuid, id: &str) -> Result<Vec<u8>, BackupError> {
        let path = chunk_path(tenant, id);
        let sealed = self.get_raw(&path).await?;
        let sealer = self.sealer.clone();
        let (opened, path) = tokio::task::spawn_blocking(move || {
            let id = path.rsplit('/').next().unwrap_or_default().to_owned();
            (sealer.open_chunk(&path, &id, &sealed), path)
        })
        .await
        .expect("opening does not panic");
        opened.map_err(|reason| self.unreadable(&path, reason))
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

    /// The chunks `tenant` has in the repository.
    pub async fn chunk_ids(&self, tenant: Uuid) -> Result<HashSet<String>, BackupError> {
        Ok(self
            .list(&format!("tenants/{tenant}/chunks"))
            .await?
            .into_iter()
            .filter_map(|o| o.path.rsplit('/').next().map(str::to_owned))
            .collect())
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

/// A future of the chunk `id` that owns what it needs (a future borrowing
/// from a stream's item is not `Send` for every lifetime, which a spawned
/// restore needs).
pub fn fetch(
    repo: &Repository,
    tenant: Uuid,
    id: &str,
) -> impl std::future::Future<Output = Result<Vec<u8>, BackupError>> + Send + use<> {
    let (repo, id) = (repo.clone(), id.to_owned());
    async move { repo.get_chunk(tenant, &id).await }
}

pub fn chunk_path(tenant: Uuid, id: &str) -> String {
    let shard = id.get(..2).unwrap_or("00");
    format!("tenants/{tenant}/chunks/{shard}/{id}")
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
