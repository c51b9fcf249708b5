//! Packs: a backup run's new chunks, many to an object (a tenant's small
//! files would otherwise be as many objects, each a request and its own
//! overhead), each chunk sealed on its own so that a restore reads just
//! its bytes; and the index that says where each chunk is.
//!
//! - A pack is `KNP1` ‖ sealed chunk ‖ sealed chunk ‖ …, written once
//!   under a random name at `tenants/<tenant>/packs/<kind>/<2 hex>/<id>`.
//!   A chunk's associated data is its tenant and its name, so a chunk
//!   moved to another tenant's pack, or swapped with another, does not
//!   open as this one. Data packs hold the files' and dumps' chunks; meta
//!   packs the chunks of storage backups' listings (read to list and plan
//!   restores: kept apart, as restic keeps its tree packs apart).
//! - An index object (`tenants/<tenant>/index/<id>`, sealed) lists packs
//!   and the chunks in each (name, offset, length). A run writes one after
//!   every few packs and after its last, all before its manifest; a prune
//!   replaces them all by one.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const MAGIC: &[u8; 4] = b"KNP1";
/// A pack is written once it holds at least this much (restic's default
/// too): a gigabyte is some 64 objects.
pub const PACK_SIZE: usize = 16 << 20;

/// What a pack holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackKind {
    /// Chunks of files and dumps.
    Data,
    /// Chunks of storage backups' listings.
    Meta,
}

impl PackKind {
    pub const ALL: [PackKind; 2] = [PackKind::Data, PackKind::Meta];

    pub fn as_str(self) -> &'static str {
        match self {
            PackKind::Data => "data",
            PackKind::Meta => "meta",
        }
    }
}

/// One index object's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
}

/// A pack and the chunks in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    pub kind: PackKind,
    pub id: String,
    pub chunks: Vec<Placed>,
}

/// Where in its pack a chunk is: `[name, offset, length]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed(pub String, pub u64, pub u32);

/// Where a chunk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub kind: PackKind,
    pub pack: Arc<str>,
    pub offset: u64,
    pub length: u32,
}

/// A tenant's index: every index object, merged.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// The index objects read, by path.
    pub objects: Vec<String>,
    /// Every pack they list.
    pub packs: Vec<IndexedPack>,
    chunks: HashMap<String, Location>,
}

impl Index {
    pub fn add(&mut self, path: String, file: IndexFile) {
        self.objects.push(path);
        for pack in file.packs {
            let id: Arc<str> = Arc::from(pack.id.as_str());
            for Placed(chunk, offset, length) in &pack.chunks {
                self.chunks.insert(
                    chunk.clone(),
                    Location {
                        kind: pack.kind,
                        pack: id.clone(),
                        offset: *offset,
                        length: *length,
                    },
                );
            }
            self.packs.push(pack);
        }
    }

    /// Where chunk `id` is, if any pack holds it.
    pub fn locate(&self, id: &str) -> Option<&Location> {
        self.chunks.get(id)
    }

    /// Every chunk some pack holds.
    pub fn chunk_ids(&self) -> impl Iterator<Item = &String> {
        self.chunks.keys()
    }
}

/// The associated data of chunk `id` of `tenant`.
pub fn chunk_aad(tenant: Uuid, id: &str) -> String {
    format!("tenants/{tenant}/chunks/{id}")
}

pub fn pack_prefix(tenant: Uuid) -> String {
    format!("tenants/{tenant}/packs")
}

pub fn pack_path(tenant: Uuid, kind: PackKind, id: &str) -> String {
    let shard = id.get(..2).unwrap_or("00");
    format!("{}/{}/{shard}/{id}", pack_prefix(tenant), kind.as_str())
}

/// The pack's kind and id from its path, if it is one.
pub fn parse_pack_path(path: &str) -> Option<(PackKind, &str)> {
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    let _shard = parts.next()?;
    let kind = match parts.next()? {
        "data" => PackKind::Data,
        "meta" => PackKind::Meta,
        _ => return None,
    };
    Some((kind, id))
}

pub fn index_prefix(tenant: Uuid) -> String {
    format!("tenants/{tenant}/index")
}
