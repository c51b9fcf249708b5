//! The fake API server's objects: any resource, as JSON, under one
//! cluster-wide resourceVersion, with the log of changes that watches and
//! paged lists resume from until it is compacted.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use super::resources::{PODS, RESOURCES, ResourceId, ResourceType};

/// (namespace, name); the namespace is "" for cluster-scoped objects.
pub type ObjectKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub resource: ResourceId,
    pub key: ObjectKey,
    pub kind: ChangeType,
    /// The object after the change (for a deletion, its last state at the
    /// deletion's resourceVersion).
    pub object: Value,
    /// The object before the change.
    pub previous: Option<Value>,
}

/// What [`Store::changes_since`] gives a watch resuming.
#[derive(Debug)]
pub struct Resumed {
    /// The retained changes after the requested version, in order.
    pub backlog: Vec<Arc<Change>>,
    /// The changes to come.
    pub receiver: broadcast::Receiver<Arc<Change>>,
}

/// The requested resourceVersion is older than the retained history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<ResourceId, BTreeMap<ObjectKey, Value>>,
    /// Changes after `oldest`, in order.
    log: VecDeque<Arc<Change>>,
    /// The oldest resourceVersion a watch or a paged list can resume from.
    oldest: u64,
    changes: broadcast::Sender<Arc<Change>>,
    /// While true, a deleted namespace stays Terminating.
    pub hold_namespace_deletion: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            oldest: 1,
            changes: broadcast::channel(4096).0,
            hold_namespace_deletion: false,
        }
    }
}

impl Store {
    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Stores `object` under `key` as it is, at a new resourceVersion
    /// (set in its metadata), and tells the watches; the stored object.
    pub fn commit(&mut self, ty: &ResourceType, key: ObjectKey, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let previous = self
            .objects
            .entry(ty.id())
            .or_default()
            .insert(key.clone(), object.clone());
        let kind = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(ty, key, kind, object.clone(), previous);
        object
    }

    /// Deletes an object at once (no grace period); its last state, at the
    /// deletion's resourceVersion.
    pub fn delete(&mut self, ty: &ResourceType, key: &ObjectKey) -> Option<Value> {
        let previous = self.objects.get_mut(&ty.id())?.remove(key)?;
        self.rv += 1;
        let mut last = previous.clone();
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(
            ty,
            key.clone(),
            ChangeType::Deleted,
            last.clone(),
            Some(previous),
        );
        Some(last)
    }

    fn record(
        &mut self,
        ty: &ResourceType,
        key: ObjectKey,
        kind: ChangeType,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            resource: ty.id(),
            key,
            kind,
            object,
            previous,
        });
        self.log.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    pub fn get(&self, ty: &ResourceType, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(&ty.id())?.get(key)
    }

    /// The keys of the objects of `ty` in `namespace`.
    pub fn keys_in(&self, ty: &ResourceType, namespace: &str) -> Vec<ObjectKey> {
        self.objects
            .get(&ty.id())
            .into_iter()
            .flat_map(|objects| objects.keys())
            .filter(|(ns, _)| ns == namespace)
            .cloned()
            .collect()
    }

    /// Forgets the history: watches and paged lists can resume only from
    /// the current resourceVersion on.
    pub fn compact(&mut self) {
        self.log.clear();
        self.oldest = self.rv;
    }

    /// The objects of `ty` (in `namespace`, or all; after the key `after`
    /// when a paged list resumes) as they were at resourceVersion `rv`, in
    /// (namespace, name) order, rebuilt by undoing the later changes.
    pub fn list_at(
        &self,
        ty: &ResourceType,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        rv: u64,
    ) -> Result<BTreeMap<ObjectKey, Value>, Expired> {
        if rv < self.oldest {
            return Err(Expired {
                requested: rv,
                oldest: self.oldest,
            });
        }
        let mut objects: BTreeMap<ObjectKey, Value> = self
            .current(ty, namespace, after)
            .map(|(key, object)| (key.clone(), object.clone()))
            .collect();
        for change in self.log.iter().rev().take_while(|c| c.rv > rv) {
            if change.resource != ty.id() || !in_scope(&change.key, namespace, after) {
                continue;
            }
            match &change.previous {
                Some(previous) => objects.insert(change.key.clone(), previous.clone()),
                None => objects.remove(&change.key),
            };
        }
        Ok(objects)
    }

    /// One page of [`Store::list_at`]: the first `limit` objects `wanted`
    /// accepts, and how many more it accepts. At the current version only
    /// the page is copied.
    pub fn page_at(
        &self,
        ty: &ResourceType,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        rv: u64,
        wanted: impl Fn(&Value) -> bool,
        limit: usize,
    ) -> Result<(Vec<(ObjectKey, Value)>, usize), Expired> {
        if rv == self.rv {
            let (page, more) = first(
                self.current(ty, namespace, after)
                    .filter(|(_, o)| wanted(o)),
                limit,
            );
            let page = page
                .into_iter()
                .map(|(key, object)| (key.clone(), object.clone()))
                .collect();
            return Ok((page, more));
        }
        let objects = self.list_at(ty, namespace, after, rv)?;
        Ok(first(objects.into_iter().filter(|(_, o)| wanted(o)), limit))
    }

    /// The objects of `ty` now, in `namespace` (or all) and after `after`.
    fn current<'a>(
        &'a self,
        ty: &ResourceType,
        namespace: Option<&'a str>,
        after: Option<&'a ObjectKey>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> {
        // One namespace's objects, or those after a key, are a range of the
        // (namespace, name) keys.
        let first = (namespace.unwrap_or_default().to_owned(), String::new());
        let start = match after {
            Some(after) if *after >= first => Bound::Excluded(after.clone()),
            _ => Bound::Included(first),
        };
        self.objects
            .get(&ty.id())
            .into_iter()
            .flat_map(move |objects| objects.range((start.clone(), Bound::Unbounded)))
            .take_while(move |(key, _)| in_scope(key, namespace, after))
    }

    /// The changes after `rv` and a receiver of the ones to come, with
    /// nothing missed or repeated between them.
    pub fn changes_since(&self, rv: u64) -> Result<Resumed, Expired> {
        if rv < self.oldest {
            return Err(Expired {
                requested: rv,
                oldest: self.oldest,
            });
        }
        Ok(Resumed {
            backlog: self.log.iter().filter(|c| c.rv > rv).cloned().collect(),
            receiver: self.changes.subscribe(),
        })
    }

    /// A receiver of the changes after the current resourceVersion.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }
}

fn in_scope(key: &ObjectKey, namespace: Option<&str>, after: Option<&ObjectKey>) -> bool {
    namespace.is_none_or(|n| n == key.0) && after.is_none_or(|after| key > after)
}

/// The first `limit` items, and how many more there are.
fn first<T>(mut items: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, usize) {
    let page = items.by_ref().take(limit).collect();
    (page, items.count())
}
