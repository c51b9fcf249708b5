//! The slugs of active tenants, kept current by the tenant lifecycle (and
//! its re-reads of what other replicas changed), so that the agent ingest
//! path can drop results for unknown tenants without a database round trip.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::store::{Store, StoreError};

#[derive(Debug, Default)]
pub struct TenantDirectory {
    active: RwLock<Slugs>,
}

#[derive(Debug, Default)]
struct Slugs {
    active: HashSet<String>,
    /// Counts the inserts and removals.
    version: u64,
    /// The version of each slug's latest insert or removal since the last
    /// full re-read: newer than a re-read's snapshot, it wins over it.
    touched: HashMap<String, u64>,
}

/// When a full re-read of the store began, for
/// [`TenantDirectory::replace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot(u64);

impl TenantDirectory {
    /// Reads every active tenant's slug from the store.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let active = store.active_slugs().await?.into_iter().collect();
        Ok(TenantDirectory {
            active: RwLock::new(Slugs {
                active,
                ..Slugs::default()
            }),
        })
    }

    pub fn contains(&self, slug: &str) -> bool {
        self.read().active.contains(slug)
    }

    /// Calls `f` with a view of the active slugs (one lock for a whole batch).
    pub fn with<R>(&self, f: impl FnOnce(&HashSet<String>) -> R) -> R {
        f(&self.read().active)
    }

    pub fn len(&self) -> usize {
        self.read().active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&self, slug: &str) {
        let mut slugs = self.write();
        slugs.active.insert(slug.to_owned());
        slugs.touch(slug);
    }

    pub(crate) fn remove(&self, slug: &str) {
        let mut slugs = self.write();
        slugs.active.remove(slug);
        slugs.touch(slug);
    }

    /// Taken before a full re-read of the store.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.read().version)
    }

    /// Becomes `active`, read from the store after `snapshot`, except for
    /// the slugs inserted or removed since (their change is newer than what
    /// was read); returns the slugs that are no longer active.
    pub(crate) fn replace(&self, active: Vec<String>, snapshot: Snapshot) -> Vec<String> {
        let mut slugs = self.write();
        let Slugs {
            active: current,
            touched,
            ..
        } = &mut *slugs;
        let newer = |slug: &str| touched.get(slug).is_some_and(|v| *v > snapshot.0);
        let mut next: HashSet<String> = active.into_iter().filter(|s| !newer(s)).collect();
        next.extend(current.iter().filter(|s| newer(s)).cloned());
        let gone = current.difference(&next).cloned().collect();
        *current = next;
        touched.retain(|_, v| *v > snapshot.0);
        gone
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slugs> {
        self.active.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Slugs> {
        self.active.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slugs {
    fn touch(&mut self, slug: &str) {
        self.version += 1;
        self.touched.insert(slug.to_owned(), self.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slugs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_re_read_does_not_undo_what_changed_while_it_read() {
        let directory = TenantDirectory::default();
        directory.insert("old");
        directory.insert("gone");
        let snapshot = directory.snapshot();
        // While the store is read (it still has `gone`, not yet `new`):
        // `new` is provisioned here, `gone` deprovisioned.
        directory.insert("new");
        directory.remove("gone");
        let removed = directory.replace(slugs(&["old", "gone", "other"]), snapshot);
        assert!(removed.is_empty(), "{removed:?}");
        let mut active = directory.with(|a| a.iter().cloned().collect::<Vec<_>>());
        active.sort();
        assert_eq!(active, slugs(&["new", "old", "other"]));

        // The next re-read, after both changes, is the store's alone.
        let snapshot = directory.snapshot();
        let mut removed = directory.replace(slugs(&["old"]), snapshot);
        removed.sort();
        assert_eq!(removed, slugs(&["new", "other"]));
        assert_eq!(directory.len(), 1);
    }
}
