//! What a backup holds, written (sealed) after everything it names.
//!
//! A storage backup's entries are stored apart from its manifest, as a
//! listing in chunks ([`super::listing`]): a backup that changed a few
//! files writes a few pieces of listing, not all of it again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BackupKind;
use super::chunk::{ChunkRef, Transfer};
use crate::store::ConfigSettings;

/// Bumped when a manifest's meaning changes. 2: chunks in packs, a
/// storage backup's entries in listing chunks. Only this format is read.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub id: Uuid,
    pub tenant: Uuid,
    pub slug: String,
    pub kind: BackupKind,
    pub started_at: DateTime<Utc>,
    /// The moment the backup shows the tenant's data as it was.
    pub taken_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub transfer: Transfer,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Content {
    /// `pg_dump --format=custom` of the tenant's database, in chunks.
    Database {
        /// The dump's bytes, in order.
        chunks: Vec<ChunkRef>,
        /// Every table as the dump saw it (same snapshot).
        tables: Vec<TableCheck>,
        /// More tables than a manifest lists: the rest are not checked.
        tables_truncated: bool,
        /// `pg_dump --version`.
        dumped_by: String,
    },
    /// The tenant's files.
    Storage {
        /// In memory only: the stored manifest leaves them out, they are
        /// in `listing`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        entries: Vec<Entry>,
        /// The entries as JSON, in chunks, in order.
        #[serde(default)]
        listing: Vec<ChunkRef>,
    },
    /// One configuration version of the tenant, as it was committed (the
    /// manifest holds it whole: no chunks).
    Configuration {
        version: i64,
        actor: String,
        change: String,
        /// Plan, domain, features, branding, thresholds and the redacted
        /// notification channels, as the history shows them.
        snapshot: serde_json::Value,
        /// The thresholds and the notification channels, their secrets
        /// still sealed; absent for a version recorded before
        /// configuration backups.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<Box<ConfigSettings>>,
    },
}

impl Content {
    /// Every chunk the backup needs: its data's, and its listing's.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        let listing: &[ChunkRef] = match self {
            Content::Storage { listing, .. } => listing,
            _ => &[],
        };
        self.data_chunks().chain(listing)
    }

    /// The chunks of the database's dump or of the files, in order.
    pub fn data_chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        let (dump, files): (&[ChunkRef], &[Entry]) = match self {
            Content::Database { chunks, .. } => (chunks, &[]),
            Content::Storage { entries, .. } => (&[], entries),
            Content::Configuration { .. } => (&[], &[]),
        };
        dump.iter().chain(files.iter().flat_map(|e| match &e.node {
            Node::File { chunks, .. } => chunks.as_slice(),
            _ => &[],
        }))
    }

    /// The bytes the backup restores.
    pub fn size(&self) -> u64 {
        self.data_chunks().map(|c| c.len).sum()
    }

    /// The configuration version a configuration backup holds.
    pub fn config_version(&self) -> Option<i64> {
        match self {
            Content::Configuration { version, .. } => Some(*version),
            _ => None,
        }
    }
}

/// A table's rows as the dump saw them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableCheck {
    /// `schema.table`, quoted as PostgreSQL quotes identifiers.
    pub table: String,
    pub rows: i64,
    /// The sum of every row's 64-bit text hash, as a decimal: independent
    /// of row order, so a restored table is compared without sorting.
    pub checksum: String,
}

/// One path of a tenant's storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Relative to the storage root, `/`-separated; its bytes, when they
    /// are not UTF-8, in `rawPath` instead (base64).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub node: Node,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Node {
    Dir,
    File {
        size: u64,
        /// Modification time, nanoseconds since the epoch.
        mtime_ns: i64,
        chunks: Vec<ChunkRef>,
        /// (device, inode, change time in ns) when read: an unchanged
        /// file's chunks are taken from the previous backup unread.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen: Option<(u64, u64, i64)>,
    },
    Symlink {
        /// The link's target, as `path` (or base64 in `rawTarget`).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_target: Option<String>,
    },
}
