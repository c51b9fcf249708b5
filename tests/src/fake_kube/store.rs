//! The fake API server's objects: any resource, as JSON, under one
//! cluster-wide resourceVersion, with the log of changes that watches and
//! paged lists resume from until it is compacted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A kind of object the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; "" for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// Plural name in paths, e.g. `pods`.
    pub resource: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Fields a field selector may use besides `metadata.name` and
    /// `metadata.namespace`.
    pub fields: &'static [&'static str],
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn selectable(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace") || self.fields.contains(&field)
    }

    fn id(&self) -> ResourceId {
        (self.group, self.version, self.resource)
    }
}

/// Core v1 pods, with the field selectors the real API server accepts.
pub const PODS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    resource: "pods",
    kind: "Pod",
    namespaced: true,
    fields: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
};

/// Every resource the fake serves.
pub const RESOURCES: &[ResourceType] = &[PODS];

/// (group, version, resource)
pub type ResourceId = (&'static str, &'static str, &'static str);
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
}

impl Default for Store {
    fn default() -> Self {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            oldest: 1,
            changes: broadcast::channel(4096).0,
        }
    }
}

impl Store {
    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Creates or replaces `object` (keyed by its metadata.namespace and
    /// .name; namespaced objects default to `default`), as the API server
    /// stores it: kind and apiVersion set, a new resourceVersion, and the
    /// uid and creationTimestamp of the object it replaces, or new ones.
    pub fn put(&mut self, ty: &ResourceType, mut object: Value) -> Value {
        let meta = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("an object with metadata");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .expect("metadata.name")
            .to_owned();
        let namespace = if ty.namespaced {
            meta.get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let key = (namespace.clone(), name);
        let previous = self.get(ty, &key).cloned();
        let kept = |field: &str| previous.as_ref().map(|p| p["metadata"][field].clone());
        self.rv += 1;
        if ty.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert(
            "uid".into(),
            kept("uid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string())),
        );
        meta.insert(
            "creationTimestamp".into(),
            kept("creationTimestamp").unwrap_or_else(|| {
                json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string())
            }),
        );
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        object["apiVersion"] = json!(ty.api_version());
        object["kind"] = json!(ty.kind);
        self.objects
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

    /// Forgets the history: watches and paged lists can resume only from
    /// the current resourceVersion on.
    pub fn compact(&mut self) {
        self.log.clear();
        self.oldest = self.rv;
    }

    /// The objects of `ty` (in `namespace`, or all) as they were at
    /// resourceVersion `rv`, in (namespace, name) order, rebuilt by undoing
    /// the later changes.
    pub fn list_at(
        &self,
        ty: &ResourceType,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<BTreeMap<ObjectKey, Value>, Expired> {
        if rv < self.oldest {
            return Err(Expired {
                requested: rv,
                oldest: self.oldest,
            });
        }
        let mut objects = self.objects.get(&ty.id()).cloned().unwrap_or_default();
        for change in self.log.iter().rev().take_while(|c| c.rv > rv) {
            if change.resource != ty.id() {
                continue;
            }
            match &change.previous {
                Some(previous) => objects.insert(change.key.clone(), previous.clone()),
                None => objects.remove(&change.key),
            };
        }
        objects.retain(|(ns, _), _| namespace.is_none_or(|n| n == ns));
        Ok(objects)
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
