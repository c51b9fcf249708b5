//! The slugs of active tenants, kept current by the tenant lifecycle, so
//! that the agent ingest path can drop results for unknown tenants without a
//! database round trip.

use std::collections::HashSet;
use std::sync::RwLock;

use crate::store::{Store, StoreError};

#[derive(Debug, Default)]
pub struct TenantDirectory {
    active: RwLock<HashSet<String>>,
}

impl TenantDirectory {
    /// Reads every active tenant's slug from the store.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let active = store.active_slugs().await?.into_iter().collect();
        Ok(TenantDirectory {
            active: RwLock::new(active),
        })
    }

    pub fn contains(&self, slug: &str) -> bool {
        self.read().contains(slug)
    }

    /// Calls `f` with a view of the active slugs (one lock for a whole batch).
    pub fn with<R>(&self, f: impl FnOnce(&HashSet<String>) -> R) -> R {
        f(&self.read())
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&self, slug: &str) {
        self.active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slug.to_owned());
    }

    pub(crate) fn remove(&self, slug: &str) {
        self.active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(slug);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<String>> {
        self.active.read().unwrap_or_else(|e| e.into_inner())
    }
}
