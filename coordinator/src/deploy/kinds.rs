//! The kinds of object a tenant is made of, as the Kubernetes API names
//! them, so that the deployer needs no discovery round trips.

use kube::discovery::ApiResource;

/// One kind of object the coordinator manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl Kind {
    /// Whether the drift watch follows this kind across the cluster. Not
    /// Secrets: listing them cluster-wide would mean reading every Secret
    /// of the cluster, so the coordinator may read them only in tenant
    /// namespaces (deploy/coordinator/clusterrole-tenant-manager.yaml) and
    /// the periodic drift check reads each tenant's Secret there.
    pub fn is_watched(&self) -> bool {
        *self != SECRET
    }

    /// Whether objects of this kind hold a tenant's data: never pruned,
    /// gone only with the namespace when the tenant is purged.
    pub fn holds_data(&self) -> bool {
        *self == PERSISTENT_VOLUME_CLAIM
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }

    /// The kind of `object`, from its apiVersion and kind.
    pub fn of(object: &serde_json::Value) -> Option<Kind> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        MANAGED
            .iter()
            .copied()
            .find(|k| k.kind == kind && k.api_version() == api_version)
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

pub const NAMESPACE: Kind = kind("", "v1", "Namespace", "namespaces", false);
pub const SECRET: Kind = kind("", "v1", "Secret", "secrets", true);
pub const DEPLOYMENT: Kind = kind("apps", "v1", "Deployment", "deployments", true);
pub const PERSISTENT_VOLUME_CLAIM: Kind = kind(
    "",
    "v1",
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    true,
);

/// Every kind a tenant's rendering may contain. The namespaced ones are
/// listed by label when pruning, so an object of a kind that a later
/// rendering drops is still found and deleted (but for the kinds that
/// [hold data](Kind::holds_data)).
pub const MANAGED: &[Kind] = &[
    NAMESPACE,
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    kind("", "v1", "ResourceQuota", "resourcequotas", true),
    kind("", "v1", "LimitRange", "limitranges", true),
    kind("", "v1", "ConfigMap", "configmaps", true),
    SECRET,
    PERSISTENT_VOLUME_CLAIM,
    kind("", "v1", "Service", "services", true),
    DEPLOYMENT,
    kind("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    kind(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    kind(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    kind(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
];

/// A managed object's identity, as it is named in messages:
/// `Deployment knowton-tenant-acme/backend`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn of(object: &serde_json::Value) -> ObjectRef {
        ObjectRef {
            kind: object["kind"].as_str().unwrap_or_default().to_owned(),
            namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

impl ObjectRef {
    /// The reference of a watched object of `kind` (list items carry no
    /// kind of their own).
    pub fn of_watched(kind: &Kind, object: &kube::api::DynamicObject) -> ObjectRef {
        use kube::ResourceExt;
        ObjectRef {
            kind: kind.kind.to_owned(),
            namespace: object.namespace(),
            name: object.name_any(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendered_object_is_a_managed_kind() {
        let objects = crate::deploy::render::tests::sample_objects();
        for object in &objects {
            assert!(Kind::of(object).is_some(), "{}", ObjectRef::of(object));
        }
        assert_eq!(MANAGED.iter().filter(|k| !k.namespaced).count(), 1);
    }
}
