//! A tenant's objects on a cluster: server-side apply under one field
//! manager, pruning by label (never of a claim: data goes with the
//! namespace only), a server dry-run with a field diff per object, drift
//! detection and namespace deletion.

use std::collections::BTreeSet;
use std::path::Path;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::diff::{FieldChange, drift, field_changes};
use super::kinds::{Kind, MANAGED, NAMESPACE, ObjectRef};
use super::render::{MANAGED_BY, TENANT_LABEL};
use super::volume;

/// The one field manager every write of the coordinator uses.
pub const FIELD_MANAGER: &str = "knowton-coordinator";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("failed to load the kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to build a Kubernetes client")]
    Client(#[source] Box<kube::Error>),
    #[error("{object} is not a kind the coordinator manages")]
    UnknownKind { object: ObjectRef },
    #[error("failed to apply {object}: {}", api_message(.source))]
    Apply {
        object: ObjectRef,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to read {object}: {}", api_message(.source))]
    Read {
        object: ObjectRef,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to list {kind} in {namespace}: {}", api_message(.source))]
    List {
        kind: &'static str,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to delete {object}: {}", api_message(.source))]
    Delete {
        object: ObjectRef,
        #[source]
        source: Box<kube::Error>,
    },
}

/// The API server's own words for a failed request (`422 Invalid: …`),
/// which an operator needs to see in the deployment status.
fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

/// What a server dry-run says would happen to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Change,
    Unchanged,
    /// Pruned: no longer part of the tenant's desired state.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedChange {
    #[serde(flatten)]
    pub object: ObjectRef,
    pub action: Action,
    /// For `change`: every field that would differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A connection to the cluster the tenants run on.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cluster")
    }
}

impl Cluster {
    pub fn new(client: kube::Client) -> Self {
        Cluster { client }
    }

    /// From `kubeconfig` when given; otherwise the in-cluster service
    /// account or `$KUBECONFIG`/`~/.kube/config` when either exists, else
    /// `None`: no cluster, and the coordinator runs without one.
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<Option<Cluster>, ClusterError> {
        let config = match kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    ClusterError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|source| ClusterError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?
            }
            None => match kube::Config::infer().await {
                Ok(config) => config,
                Err(err) => {
                    tracing::info!(error = %err, "no Kubernetes configuration found: running without a cluster");
                    return Ok(None);
                }
            },
        };
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterError::Client(Box::new(e)))?;
        Ok(Some(Cluster { client }))
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        match (kind.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

    fn api_for(&self, object: &Value) -> Result<(Api<DynamicObject>, ObjectRef), ClusterError> {
        let reference = ObjectRef::of(object);
        let kind = Kind::of(object).ok_or_else(|| ClusterError::UnknownKind {
            object: reference.clone(),
        })?;
        Ok((self.api(&kind, reference.namespace.as_deref()), reference))
    }

    /// Applies `object` with server-side apply, taking back any field
    /// someone else changed.
    /// A claim is applied as it can be over the live one
    /// ([`volume::settled`]).
    async fn apply_one(&self, object: &Value, dry_run: bool) -> Result<Value, ClusterError> {
        let (api, reference) = self.api_for(object)?;
        let settled;
        let object = if Kind::of(object).is_some_and(|k| k.holds_data()) {
            settled = volume::settled(object, self.get(object).await?.as_ref());
            &settled
        } else {
            object
        };
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        let answer = api
            .patch(&reference.name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| ClusterError::Apply {
                object: reference.clone(),
                source: Box::new(source),
            })?;
        Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
    }

    async fn get(&self, object: &Value) -> Result<Option<Value>, ClusterError> {
        let (api, reference) = self.api_for(object)?;
        let live = api
            .get_opt(&reference.name)
            .await
            .map_err(|source| ClusterError::Read {
                object: reference,
                source: Box::new(source),
            })?;
        Ok(live.map(|o| serde_json::to_value(o).unwrap_or(Value::Null)))
    }

    /// Applies every object in order, then deletes the tenant's objects
    /// that are no longer among them. Pruning only starts once every apply
    /// succeeded, so a failure never leaves the tenant half-pruned; the
    /// error names the object that failed. Returns what was pruned.
    pub async fn apply(
        &self,
        tenant: &str,
        objects: &[Value],
    ) -> Result<Vec<ObjectRef>, ClusterError> {
        for object in objects {
            self.apply_granted(object).await?;
        }
        match namespace_of(objects) {
            Some(ns) => self.prune(tenant, &ns, objects, false).await,
            None => Ok(Vec::new()),
        }
    }

    /// Re-applies only `objects` (drift repair: no pruning).
    pub async fn apply_objects(&self, objects: &[&Value]) -> Result<(), ClusterError> {
        for object in objects {
            self.apply_granted(object).await?;
        }
        Ok(())
    }

    /// [`Self::apply_one`], retrying a Secret's apply that is forbidden for
    /// about two seconds: the coordinator's rights on a tenant's Secrets
    /// come from the RoleBinding applied just before, which the API
    /// server's authorizer may not have seen yet.
    async fn apply_granted(&self, object: &Value) -> Result<Value, ClusterError> {
        let mut delay = std::time::Duration::from_millis(100);
        for _ in 0..4 {
            match self.apply_one(object, false).await {
                Err(ClusterError::Apply { source, .. })
                    if object["kind"] == "Secret"
                        && matches!(&*source, kube::Error::Api(status) if status.code == 403) =>
                {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                done => return done,
            }
        }
        self.apply_one(object, false).await
    }

    /// The tenant's objects in `namespace` that `objects` does not
    /// contain; deleted unless `dry_run`.
    async fn prune(
        &self,
        tenant: &str,
        namespace: &str,
        objects: &[Value],
        dry_run: bool,
    ) -> Result<Vec<ObjectRef>, ClusterError> {
        let keep: BTreeSet<ObjectRef> = objects.iter().map(ObjectRef::of).collect();
        let selector = format!("{TENANT_LABEL}={tenant},{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let mut pruned = Vec::new();
        // A claim goes with its namespace only (purge), never by pruning.
        for kind in MANAGED.iter().filter(|k| k.namespaced && !k.holds_data()) {
            let api = self.api(kind, Some(namespace));
            let list = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|source| ClusterError::List {
                    kind: kind.kind,
                    namespace: namespace.to_owned(),
                    source: Box::new(source),
                })?;
            for item in list.items {
                let name = item.metadata.name.clone().unwrap_or_default();
                let reference = ObjectRef {
                    kind: kind.kind.to_owned(),
                    namespace: Some(namespace.to_owned()),
                    name,
                };
                if keep.contains(&reference) {
                    continue;
                }
                if !dry_run {
                    self.delete(&api, &reference).await?;
                    tracing::info!(tenant, object = %reference, "pruned: no longer part of the tenant");
                }
                pruned.push(reference);
            }
        }
        Ok(pruned)
    }

    async fn delete(
        &self,
        api: &Api<DynamicObject>,
        reference: &ObjectRef,
    ) -> Result<bool, ClusterError> {
        match api.delete(&reference.name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(source) => Err(ClusterError::Delete {
                object: reference.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// What applying `objects` would do, asking the API server with
    /// `dryRun=All`; nothing is stored. Objects in a namespace that does
    /// not exist yet cannot be sent (the server refuses content in a
    /// missing namespace even in a dry-run): they are reported as created,
    /// and the Namespace itself is dry-run.
    pub async fn dry_run(
        &self,
        tenant: &str,
        objects: &[Value],
    ) -> Result<Vec<PlannedChange>, ClusterError> {
        let namespace = namespace_of(objects);
        let namespace_exists = match &namespace {
            Some(ns) => self
                .get(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .await?
                .is_some(),
            None => true,
        };
        let mut plan = Vec::with_capacity(objects.len());
        for object in objects {
            let reference = ObjectRef::of(object);
            let in_new_namespace = reference.namespace.is_some() && !namespace_exists;
            let change = if in_new_namespace {
                PlannedChange {
                    object: reference,
                    action: Action::Create,
                    fields: Vec::new(),
                    note: Some("in the namespace this deployment creates: the API server checks it when applied".to_owned()),
                }
            } else {
                let live = self.get(object).await?;
                let answer = self.apply_one(object, true).await?;
                match live {
                    None => PlannedChange {
                        object: reference,
                        action: Action::Create,
                        fields: Vec::new(),
                        note: None,
                    },
                    Some(live) => {
                        let fields = field_changes(&live, &answer);
                        PlannedChange {
                            object: reference,
                            action: if fields.is_empty() {
                                Action::Unchanged
                            } else {
                                Action::Change
                            },
                            fields,
                            note: None,
                        }
                    }
                }
            };
            plan.push(change);
        }
        if let (Some(ns), true) = (namespace, namespace_exists) {
            for object in self.prune(tenant, &ns, objects, true).await? {
                plan.push(PlannedChange {
                    object,
                    action: Action::Delete,
                    fields: Vec::new(),
                    note: Some("no longer part of the tenant: pruned".to_owned()),
                });
            }
        }
        Ok(plan)
    }

    /// The objects someone changed or deleted by hand, with the drifted
    /// paths (none for a deleted object).
    pub async fn drifted<'a>(
        &self,
        objects: &'a [Value],
    ) -> Result<Vec<(&'a Value, Option<Vec<String>>)>, ClusterError> {
        let mut drifted = Vec::new();
        for object in objects {
            match self.get(object).await? {
                None => drifted.push((object, None)),
                Some(live) => {
                    let paths = drift(&live, object);
                    if !paths.is_empty() {
                        drifted.push((object, Some(paths)));
                    }
                }
            }
        }
        Ok(drifted)
    }

    /// Deletes the namespace and, with it, everything in it. `false`: it
    /// was already gone.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<bool, ClusterError> {
        let reference = ObjectRef {
            kind: "Namespace".to_owned(),
            namespace: None,
            name: namespace.to_owned(),
        };
        self.delete(&self.api(&NAMESPACE, None), &reference).await
    }

    /// Every object of `kind` in the cluster (the drift watch).
    pub fn api_of(&self, kind: &Kind) -> Api<DynamicObject> {
        self.api(kind, None)
    }
}

/// The tenant's namespace: that of its namespaced objects.
fn namespace_of(objects: &[Value]) -> Option<String> {
    objects
        .iter()
        .find_map(|o| o["metadata"]["namespace"].as_str().map(str::to_owned))
}
