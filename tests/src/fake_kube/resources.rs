//! The kinds of object the fake serves: group, version, plural, kind and
//! scope of each, as the real API server's discovery would describe them.

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
    /// Whether `status` is written only through the `/status` subresource
    /// (writes to the object itself keep the stored status).
    pub status_subresource: bool,
    /// Whether a PUT of an absent object creates it (true for few kinds,
    /// Lease among them); otherwise it is 404 NotFound.
    pub create_on_update: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as error messages name it: `pods`, `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    pub fn selectable(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace") || self.fields.contains(&field)
    }

    pub(super) fn id(&self) -> ResourceId {
        (self.group, self.version, self.resource)
    }

    /// The served resource of this apiVersion and kind, if any.
    pub fn find(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version)
    }

    /// The served resource at this path, if any.
    pub fn at(group: &str, version: &str, resource: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
    }
}

/// (group, version, resource)
pub type ResourceId = (&'static str, &'static str, &'static str);

/// A resource with the defaults of most: no extra selectable fields, no
/// status subresource, no create on update.
const fn resource(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        resource,
        kind,
        namespaced,
        fields: &[],
        status_subresource: false,
        create_on_update: false,
    }
}

/// The same resource with a `/status` subresource.
const fn with_status(ty: ResourceType) -> ResourceType {
    ResourceType {
        status_subresource: true,
        ..ty
    }
}

/// Core v1 pods, with the field selectors the real API server accepts.
pub const PODS: ResourceType = ResourceType {
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
    ..with_status(resource("", "v1", "pods", "Pod", true))
};

/// Core v1 namespaces (cluster-scoped).
pub const NAMESPACES: ResourceType = ResourceType {
    fields: &["status.phase"],
    ..with_status(resource("", "v1", "namespaces", "Namespace", false))
};

pub const RESOURCE_QUOTAS: ResourceType =
    with_status(resource("", "v1", "resourcequotas", "ResourceQuota", true));
pub const LIMIT_RANGES: ResourceType = resource("", "v1", "limitranges", "LimitRange", true);
pub const CONFIG_MAPS: ResourceType = resource("", "v1", "configmaps", "ConfigMap", true);
pub const SECRETS: ResourceType = ResourceType {
    fields: &["type"],
    ..resource("", "v1", "secrets", "Secret", true)
};
pub const SERVICES: ResourceType = with_status(resource("", "v1", "services", "Service", true));
pub const PERSISTENT_VOLUME_CLAIMS: ResourceType = with_status(resource(
    "",
    "v1",
    "persistentvolumeclaims",
    "PersistentVolumeClaim",
    true,
));
pub const DEPLOYMENTS: ResourceType =
    with_status(resource("apps", "v1", "deployments", "Deployment", true));
pub const INGRESSES: ResourceType = with_status(resource(
    "networking.k8s.io",
    "v1",
    "ingresses",
    "Ingress",
    true,
));
pub const NETWORK_POLICIES: ResourceType = resource(
    "networking.k8s.io",
    "v1",
    "networkpolicies",
    "NetworkPolicy",
    true,
);
pub const HORIZONTAL_POD_AUTOSCALERS: ResourceType = with_status(resource(
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    "HorizontalPodAutoscaler",
    true,
));
pub const POD_DISRUPTION_BUDGETS: ResourceType = with_status(resource(
    "policy",
    "v1",
    "poddisruptionbudgets",
    "PodDisruptionBudget",
    true,
));
pub const ROLE_BINDINGS: ResourceType = resource(
    "rbac.authorization.k8s.io",
    "v1",
    "rolebindings",
    "RoleBinding",
    true,
);
pub const LEASES: ResourceType = ResourceType {
    create_on_update: true,
    ..resource("coordination.k8s.io", "v1", "leases", "Lease", true)
};

/// Every resource the fake serves.
pub const RESOURCES: &[ResourceType] = &[
    PODS,
    NAMESPACES,
    RESOURCE_QUOTAS,
    LIMIT_RANGES,
    CONFIG_MAPS,
    SECRETS,
    SERVICES,
    PERSISTENT_VOLUME_CLAIMS,
    DEPLOYMENTS,
    INGRESSES,
    NETWORK_POLICIES,
    HORIZONTAL_POD_AUTOSCALERS,
    POD_DISRUPTION_BUDGETS,
    ROLE_BINDINGS,
    LEASES,
];
