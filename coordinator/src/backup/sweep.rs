//! What a prune's sweep removes, decided without I/O: from the tenant's
//! index, its packs as listed, the chunks kept backups reference and the
//! previous marks ([`super::Backups::prune`] reads and writes).
//!
//! An index entry goes when its chunk was marked unreferenced by the
//! previous prune (at least the grace period ago), is still
//! unreferenced, and its pack predates that mark; a pack goes when none
//! of its entries stay. A pack some kept backup uses stays whole, its
//! unreferenced chunks dropped from the index (a backup that wants one of
//! them again writes it anew). A pack no index lists (a run that stopped
//! before writing its index, or one still running) is marked in turn,
//! and goes at the next prune if it is still not listed then.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::pack::{self, IndexFile, IndexedPack};

/// What the previous prune marked, with when.
#[derive(Debug, Default)]
pub struct Marked<'a> {
    pub chunks: HashMap<&'a str, DateTime<Utc>>,
    /// By path.
    pub packs: HashMap<&'a str, DateTime<Utc>>,
}

/// The sweep's decision.
#[derive(Debug, Default, PartialEq)]
pub struct Sweep {
    /// The index to write in place of every index object read.
    pub index: IndexFile,
    /// Packs to delete, by path, once that index is written.
    pub delete: Vec<String>,
    /// Chunks no kept backup references, left for now: the next mark.
    pub unreferenced_chunks: Vec<String>,
    /// Packs no index lists, left for now: the next mark.
    pub unindexed_packs: Vec<String>,
    /// Index entries dropped.
    pub dropped: usize,
    /// Chunks no pack holds any more (a chunk written again since its
    /// mark is in a newer pack too).
    pub deleted_chunks: usize,
}

/// Decides the sweep of `tenant`'s `packs` (from the index), given every
/// pack `listed` in the repository (path and modification time) and the
/// chunks `referenced` by the backups kept.
pub fn sweep(
    tenant: Uuid,
    packs: &[IndexedPack],
    listed: &HashMap<String, DateTime<Utc>>,
    referenced: &HashSet<String>,
    marked: &Marked<'_>,
) -> Sweep {
    let mut out = Sweep::default();
    let mut indexed = HashSet::new();
    let mut dropped = HashSet::new();
    for pack in packs {
        let path = pack::pack_path(tenant, pack.kind, &pack.id);
        let Some(&modified) = listed.get(&path) else {
            // Missing: kept in the index, for verification to name.
            out.index.packs.push(pack.clone());
            continue;
        };
        indexed.insert(path.clone());
        let mut kept = Vec::with_capacity(pack.chunks.len());
        for placed in &pack.chunks {
            let id = placed.0.as_str();
            if referenced.contains(id) {
                kept.push(placed.clone());
            } else if marked.chunks.get(id).is_some_and(|&at| modified < at) {
                out.dropped += 1;
                dropped.insert(id);
            } else {
                out.unreferenced_chunks.push(id.to_owned());
                kept.push(placed.clone());
            }
        }
        if kept.is_empty() {
            out.delete.push(path);
        } else {
            out.index.packs.push(IndexedPack {
                kind: pack.kind,
                id: pack.id.clone(),
                chunks: kept,
            });
        }
    }
    let mut unindexed: Vec<(&String, &DateTime<Utc>)> = listed
        .iter()
        .filter(|(path, _)| !indexed.contains(*path))
        .collect();
    unindexed.sort();
    for (path, &modified) in unindexed {
        if marked
            .packs
            .get(path.as_str())
            .is_some_and(|&at| modified < at)
        {
            out.delete.push(path.clone());
        } else {
            out.unindexed_packs.push(path.clone());
        }
    }
    out.unreferenced_chunks.sort();
    out.unreferenced_chunks.dedup();
    let kept: HashSet<&str> = out
        .index
        .packs
        .iter()
        .flat_map(|p| p.chunks.iter().map(|c| c.0.as_str()))
        .collect();
    out.deleted_chunks = dropped.difference(&kept).count();
    out
}

#[cfg(test)]
mod tests;
