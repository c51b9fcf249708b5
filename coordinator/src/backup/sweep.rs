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
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::pack::{self, IndexFile, IndexedPack};
use super::retention::Retention;
use super::{BackupError, BackupKind, Backups, PruneReport, repo};

/// Chunks a prune found unreferenced, and packs no index listed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Mark {
    marked_at: DateTime<Utc>,
    pub(super) chunks: Vec<String>,
    /// By path.
    #[serde(default)]
    packs: Vec<String>,
}

impl Backups {
    /// Deletes the backups of `tenant` that `policy` does not keep, then
    /// the chunks no kept backup references, by mark and sweep: a prune
    /// marks the chunks nothing references (and the packs no index lists),
    /// and the first prune at least `grace` later drops from the index
    /// those still unreferenced whose pack predates the mark, deleting a
    /// pack once nothing in it stays ([`sweep`]). A backup reusing a
    /// marked chunk writes it again into a new pack, so a backup shorter
    /// than `grace` never loses a chunk it named, even while a prune runs.
    pub async fn prune(
        &self,
        tenant: Uuid,
        policy: Retention,
        grace: std::time::Duration,
    ) -> Result<PruneReport, BackupError> {
        let now = Utc::now();
        let mut report = PruneReport::default();
        for &kind in BackupKind::ALL {
            let manifests = self.manifests(tenant, kind).await?;
            let taken: Vec<_> = manifests.iter().map(|m| m.taken_at).collect();
            let keeps = match kind {
                BackupKind::Configuration => policy.keeps_versions(&taken, now),
                BackupKind::Database | BackupKind::Storage => policy.keeps(&taken),
            };
            for (manifest, keep) in manifests.iter().zip(keeps) {
                if keep {
                    report.kept += 1;
                } else {
                    let path = repo::manifest_path(tenant, kind, manifest.taken_at, manifest.id);
                    self.repo.delete(&path).await?;
                    report.deleted_backups += 1;
                }
            }
        }
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let previous = self.marks(tenant).await?;
        if previous
            .iter()
            .any(|(_, mark)| mark.marked_at > now - grace)
        {
            // The last mark is not old enough to sweep: a backup started
            // before it may still name its chunks.
            return Ok(report);
        }
        // Listed after the deletions: a backup completed meanwhile counts.
        // The index is read after them, and the packs listed after the
        // index: a pack is never listed before the index that names it.
        let mut referenced = HashSet::new();
        for &kind in BackupKind::ALL {
            for manifest in self.manifests(tenant, kind).await? {
                referenced.extend(manifest.content.chunks().map(|c| c.id.clone()));
            }
        }
        let index = self.repo.index(tenant).await?;
        let listed: HashMap<String, DateTime<Utc>> = self
            .repo
            .list(&pack::pack_prefix(tenant))
            .await?
            .into_iter()
            .filter(|o| pack::parse_pack_path(&o.path).is_some())
            .map(|o| (o.path, o.modified))
            .collect();
        let mut marked = Marked::default();
        for (_, mark) in &previous {
            for id in &mark.chunks {
                marked.chunks.insert(id.as_str(), mark.marked_at);
            }
            for path in &mark.packs {
                marked.packs.insert(path.as_str(), mark.marked_at);
            }
        }
        let sweep = sweep(tenant, &index.packs, &listed, &referenced, &marked);
        // Rewritten when entries go, and to merge a run's index objects
        // into one (each backup reads them all when it starts).
        let rewrite = sweep.dropped > 0 || index.objects.len() > 1;
        if rewrite {
            // The new index first: no moment without the entries kept.
            if !sweep.index.packs.is_empty() {
                self.repo.put_index(tenant, &sweep.index).await?;
            }
            for path in &index.objects {
                self.repo.delete(path).await?;
            }
        }
        for path in &sweep.delete {
            self.repo.delete(path).await?;
        }
        report.deleted_chunks = sweep.deleted_chunks;
        report.marked_chunks = sweep.unreferenced_chunks.len();
        if !sweep.unreferenced_chunks.is_empty() || !sweep.unindexed_packs.is_empty() {
            let mark = Mark {
                marked_at: Utc::now(),
                chunks: sweep.unreferenced_chunks,
                packs: sweep.unindexed_packs,
            };
            let path = format!(
                "{}/{}-{}",
                repo::marks_prefix(tenant),
                mark.marked_at.format("%Y%m%dT%H%M%S%.fZ"),
                Uuid::new_v4().simple()
            );
            let body = serde_json::to_vec(&mark).expect("a mark serialises");
            self.repo.put_new(&path, &body).await?;
        }
        for (path, _) in previous {
            self.repo.delete(&path).await?;
        }
        Ok(report)
    }

    /// `tenant`'s pending marks, by path.
    pub(super) async fn marks(&self, tenant: Uuid) -> Result<Vec<(String, Mark)>, BackupError> {
        let mut out = Vec::new();
        for object in self.repo.list(&repo::marks_prefix(tenant)).await? {
            let body = self.repo.get(&object.path).await?;
            let mark = serde_json::from_slice(&body).map_err(|e| {
                BackupError::Corrupt(format!("mark {} does not parse: {e}", object.path))
            })?;
            out.push((object.path, mark));
        }
        Ok(out)
    }
}

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
