//! Every Kubernetes object of one tenant, from the tenant, its plan and the
//! cluster settings: one pure function, so that a dry-run, an apply and a
//! snapshot test all see the same objects.

use std::collections::BTreeMap;

use knowton_common::{Branding, Features, Plan};
use serde_json::{Value, json};
use uuid::Uuid;

use super::volume::{self, AccessMode};
use crate::tenant_data::database_name;

pub use knowton_common::namespace::COMPONENT_LABEL;
/// Label of every object: which tenant it belongs to.
pub use knowton_common::namespace::TENANT_LABEL;
pub const PLAN_LABEL: &str = "knowton.io/plan";
/// Pod template annotation: digest of the config and secrets the pods read.
pub const CONFIG_HASH_ANNOTATION: &str = "knowton.io/config-hash";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "knowton-coordinator");
/// The ClusterRole (deploy/coordinator/clusterrole-tenant-manager.yaml)
/// that each tenant namespace's RoleBinding grants the coordinator there:
/// its rights on the tenant's Secrets, which it holds nowhere else.
pub const TENANT_MANAGER_ROLE: &str = "knowton-tenant-manager";

/// What a tenant's deployment is rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSpec {
    pub id: Uuid,
    pub slug: String,
    pub plan: Plan,
    pub domain: String,
    pub features: Features,
    pub branding: Branding,
    /// Source ranges allowed to reach the ingress; empty: everyone.
    pub allowlist: Vec<String>,
    /// Deprovisioned: scaled to zero, unreachable, data kept.
    pub stopped: bool,
    /// The backend's minimum replicas raised by scaling (within the
    /// plan's maximum); `None`: the plan's minimum.
    pub min_replicas: Option<i32>,
}

/// The tenant's deployment secrets, opened from the store.
#[derive(Clone, PartialEq)]
pub struct TenantSecrets {
    pub database_password: String,
    pub jwt_secret: String,
}

impl std::fmt::Debug for TenantSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantSecrets(<redacted>)")
    }
}

/// Per-plan replica bounds of the backend's autoscaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub min: i32,
    pub max: i32,
}

/// How the cluster is set up; the same for every tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    pub namespace_prefix: String,
    pub backend_image: String,
    pub frontend_image: String,
    pub image_tag: String,
    pub ingress_class: String,
    /// Whose annotations carry the rate limit, body size and allowlist.
    pub ingress_style: IngressStyle,
    pub cluster_issuer: String,
    /// Namespace of the ingress controller (allowed in by the network policy).
    pub ingress_namespace: String,
    /// Namespace of the monitoring stack and the agents.
    pub monitoring_namespace: String,
    /// The coordinator's service account (namespace, name), which each
    /// tenant namespace's RoleBinding names.
    pub service_account: (String, String),
    /// Where tenants' databases are: the only addresses outside their
    /// namespace (besides DNS) their pods may reach. None by default.
    pub database_cidrs: Vec<String>,
    /// The port tenants' backends reach their database server at.
    pub database_port: u16,
    /// The host tenants' backends reach their database server at; `None`:
    /// tenants have no database (no `--tenant-database-url`).
    pub database_host: Option<String>,
    /// The storage class of tenants' volumes; `None`: the cluster's default.
    pub storage_class: Option<String>,
    /// How tenants' volumes are mounted, which decides how the backend
    /// scales and rolls out.
    pub storage_access: AccessMode,
    pub replicas: BTreeMap<Plan, Replicas>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            namespace_prefix: knowton_common::namespace::DEFAULT_NAMESPACE_PREFIX.to_owned(),
            backend_image: "ghcr.io/knowton/backend".to_owned(),
            frontend_image: "ghcr.io/knowton/frontend".to_owned(),
            image_tag: "latest".to_owned(),
            ingress_class: "nginx".to_owned(),
            ingress_style: IngressStyle::Nginx,
            cluster_issuer: "letsencrypt-prod".to_owned(),
            ingress_namespace: "ingress-nginx".to_owned(),
            monitoring_namespace: "knowton-system".to_owned(),
            service_account: (
                "knowton-system".to_owned(),
                "knowton-coordinator".to_owned(),
            ),
            database_cidrs: Vec::new(),
            database_port: 5432,
            database_host: None,
            storage_class: None,
            storage_access: AccessMode::default(),
            replicas: BTreeMap::from([
                (Plan::Basic, Replicas { min: 2, max: 4 }),
                (Plan::Professional, Replicas { min: 2, max: 10 }),
                (Plan::Enterprise, Replicas { min: 3, max: 20 }),
            ]),
        }
    }
}

/// The ingress controller whose annotations the tenant's Ingress carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IngressStyle {
    /// ingress-nginx (`nginx.ingress.kubernetes.io/…`).
    Nginx,
    /// The HAProxy Kubernetes Ingress Controller (`haproxy.org/…`).
    Haproxy,
}

/// Per-plan quota sizes that are not in the plan sheet.
fn plan_counts(plan: Plan) -> (u32, u32) {
    // (persistent volume claims, pods)
    match plan {
        Plan::Basic => (5, 20),
        Plan::Professional => (10, 50),
        Plan::Enterprise => (20, 200),
    }
}

const BACKEND_PORT: u16 = 3000;
const FRONTEND_PORT: u16 = 8080;

/// The tenant's namespace.
pub fn namespace(spec: &TenantSpec, cluster: &ClusterSettings) -> String {
    knowton_common::namespace::tenant_namespace(&cluster.namespace_prefix, &spec.slug)
}

fn labels(spec: &TenantSpec, component: Option<&str>) -> Value {
    let mut labels = json!({
        TENANT_LABEL: spec.slug,
        PLAN_LABEL: spec.plan.as_str(),
        MANAGED_BY.0: MANAGED_BY.1,
    });
    if let (Some(component), Some(map)) = (component, labels.as_object_mut()) {
        map.insert(COMPONENT_LABEL.to_owned(), json!(component));
    }
    labels
}

fn meta(spec: &TenantSpec, ns: &str, name: &str, component: Option<&str>) -> Value {
    json!({"name": name, "namespace": ns, "labels": labels(spec, component)})
}

fn quantity_bytes(bytes: u64) -> String {
    // The API server's canonical form: the largest binary suffix that
    // divides exactly.
    const MI: u64 = 1 << 20;
    let mebibytes = bytes.div_ceil(MI);
    match mebibytes {
        m if m.is_multiple_of(1 << 20) => format!("{}Ti", m >> 20),
        m if m.is_multiple_of(1 << 10) => format!("{}Gi", m >> 10),
        m => format!("{m}Mi"),
    }
}

/// CPU in the API server's canonical form (`2`, `1500m`), so that a live
/// object compares equal to the rendered one.
fn quantity_cpu(millicores: u32) -> String {
    if millicores.is_multiple_of(1000) {
        (millicores / 1000).to_string()
    } else {
        format!("{millicores}m")
    }
}

/// Every object of the tenant, in apply order (namespace first). A stopped
/// tenant keeps its namespace, config, secrets, volume and services, runs
/// no pods and has no ingress, autoscaler or disruption budget.
///
/// The backend mounts the tenant's volume at `/data`. On a volume only one
/// node may mount (ReadWriteOnce, the default) it runs one replica, which
/// a rollout replaces (`Recreate`: a surge pod on another node could never
/// attach the volume), with no autoscaler and no disruption budget (with
/// one replica, `minAvailable: 1` would block every node drain); on a
/// shared volume (ReadWriteMany) it scales within the plan's replicas and
/// rolls.
pub fn render(spec: &TenantSpec, secrets: &TenantSecrets, cluster: &ClusterSettings) -> Vec<Value> {
    let ns = namespace(spec, cluster);
    let limits = spec.plan.limits();
    let (pvcs, pods) = plan_counts(spec.plan);
    let replicas = replicas_of(spec, cluster);
    let mut config = json!({
        "TENANT_ID": spec.id.to_string(),
        "TENANT_SLUG": spec.slug,
        "PLAN": spec.plan.as_str(),
        "DOMAIN": spec.domain,
        "FEATURES": serde_json::to_string(&spec.features).unwrap_or_default(),
        "BRANDING": serde_json::to_string(&spec.branding).unwrap_or_default(),
    });
    // The tenant's own database (its password is in the Secret).
    if let (Some(host), Some(map)) = (&cluster.database_host, config.as_object_mut()) {
        let name = database_name(&spec.slug);
        for (key, value) in [
            ("DATABASE_HOST", host.clone()),
            ("DATABASE_PORT", cluster.database_port.to_string()),
            ("DATABASE_NAME", name.clone()),
            ("DATABASE_USER", name),
        ] {
            map.insert(key.to_owned(), json!(value));
        }
    }
    let config_hash = config_hash(&config, secrets);
    let mut objects = vec![
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels(spec, None)},
        }),
        // The coordinator's rights on this namespace's Secrets, before the
        // Secret is applied.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta(spec, &ns, "knowton-coordinator", None),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": TENANT_MANAGER_ROLE,
            },
            "subjects": [{
                "kind": "ServiceAccount",
                "name": cluster.service_account.1,
                "namespace": cluster.service_account.0,
            }],
        }),
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": meta(spec, &ns, "tenant-quota", None),
            "spec": {"hard": {
                "requests.cpu": quantity_cpu(limits.cpu_millicores),
                "limits.cpu": quantity_cpu(limits.cpu_millicores),
                "requests.memory": quantity_bytes(limits.memory_bytes),
                "limits.memory": quantity_bytes(limits.memory_bytes),
                "requests.storage": quantity_bytes(limits.storage_bytes),
                "persistentvolumeclaims": pvcs.to_string(),
                "pods": pods.to_string(),
            }},
        }),
        json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": meta(spec, &ns, "container-defaults", None),
            "spec": {"limits": [{
                "type": "Container",
                "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                "default": {"cpu": "500m", "memory": "512Mi"},
            }]},
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(spec, &ns, "tenant-config", None),
            "data": config,
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": meta(spec, &ns, "tenant-secrets", None),
            "type": "Opaque",
            "stringData": {
                "DATABASE_PASSWORD": secrets.database_password,
                "JWT_SECRET": secrets.jwt_secret,
            },
        }),
        // The tenant's files, as big as its plan's storage (its quota's
        // `requests.storage`). Kept when it is stopped; deleted only with
        // the namespace, when it is purged.
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": meta(spec, &ns, volume::CLAIM, None),
            "spec": volume::claim_spec(
                &quantity_bytes(limits.storage_bytes),
                cluster.storage_access,
                cluster.storage_class.as_deref(),
            ),
        }),
    ];
    for (component, image, port, liveness, readiness) in [
        (
            "backend",
            &cluster.backend_image,
            BACKEND_PORT,
            "/health",
            "/api/health",
        ),
        (
            "frontend",
            &cluster.frontend_image,
            FRONTEND_PORT,
            "/health",
            "/health",
        ),
    ] {
        objects.push(deployment(
            spec,
            &ns,
            cluster,
            component,
            image,
            port,
            liveness,
            readiness,
            &config_hash,
            match (spec.stopped, component) {
                (true, _) => Some(0),
                // The autoscaler owns the backend's replica count.
                (false, "backend") if cluster.storage_access.shared() => None,
                (false, "backend") => Some(replicas.min),
                // Scaling raises the backend's floor only.
                (false, _) => Some(plan_replicas(spec.plan, cluster).min),
            },
        ));
        objects.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(spec, &ns, component, Some(component)),
            "spec": {
                "selector": {TENANT_LABEL: spec.slug, COMPONENT_LABEL: component},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        }));
    }
    if spec.stopped {
        objects.extend(network_policies(spec, &ns, cluster));
        return objects;
    }
    objects.push(ingress(spec, &ns, cluster));
    if !cluster.storage_access.shared() {
        objects.extend(network_policies(spec, &ns, cluster));
        return objects;
    }
    objects.push(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": meta(spec, &ns, "backend", Some("backend")),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
            "minReplicas": replicas.min,
            "maxReplicas": replicas.max,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70},
            }}],
        },
    }));
    objects.extend(network_policies(spec, &ns, cluster));
    objects.push(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": meta(spec, &ns, "backend", Some("backend")),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {TENANT_LABEL: spec.slug, COMPONENT_LABEL: "backend"}},
        },
    }));
    objects
}

#[allow(clippy::too_many_arguments)]
fn deployment(
    spec: &TenantSpec,
    ns: &str,
    cluster: &ClusterSettings,
    component: &str,
    image: &str,
    port: u16,
    liveness: &str,
    readiness: &str,
    config_hash: &str,
    replicas: Option<i32>,
) -> Value {
    let selector = json!({TENANT_LABEL: spec.slug, COMPONENT_LABEL: component});
    let probe = |path: &str, delay: u32| {
        json!({
            "httpGet": {"path": path, "port": "http"},
            "initialDelaySeconds": delay, "periodSeconds": 10,
            "timeoutSeconds": 3, "failureThreshold": 3,
        })
    };
    // The backend holds the tenant's volume: on one a single node may
    // mount, its pod is replaced, not rolled (see [`render`]).
    let data = component == "backend";
    let strategy = if data && !cluster.storage_access.shared() {
        json!({"type": "Recreate"})
    } else {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    };
    let mut mounts = vec![json!({"name": "tmp", "mountPath": "/tmp"})];
    let mut volumes = vec![json!({"name": "tmp", "emptyDir": {}})];
    if data {
        mounts.push(json!({"name": "data", "mountPath": volume::DATA_PATH}));
        volumes
            .push(json!({"name": "data", "persistentVolumeClaim": {"claimName": volume::CLAIM}}));
    }
    // The database password and the token secret are the backend's: the
    // frontend serves the tenant's pages and holds neither.
    let env_from = if component == "backend" {
        json!([
            {"configMapRef": {"name": "tenant-config"}},
            {"secretRef": {"name": "tenant-secrets"}},
        ])
    } else {
        json!([{"configMapRef": {"name": "tenant-config"}}])
    };
    let mut deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(spec, ns, component, Some(component)),
        "spec": {
            "selector": {"matchLabels": selector},
            "strategy": strategy,
            "template": {
                "metadata": {
                    "labels": labels(spec, Some(component)),
                    // Pods read the config and secrets at start: a change
                    // of either rolls them.
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"},
                        // A volume of a terabyte is not walked to change
                        // its group at every start: only when its root's is
                        // wrong.
                        "fsGroupChangePolicy": "OnRootMismatch",
                    },
                    "containers": [{
                        "name": component,
                        "image": format!("{image}:{}", cluster.image_tag),
                        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                        "envFrom": env_from,
                        "livenessProbe": probe(liveness, 10),
                        "readinessProbe": probe(readiness, 5),
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "256Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    });
    if let (Some(replicas), Some(spec)) = (replicas, deployment["spec"].as_object_mut()) {
        spec.insert("replicas".to_owned(), json!(replicas));
    }
    deployment
}

/// A digest of the tenant's config and secrets (short, and not reversible
/// into them).
fn config_hash(config: &Value, secrets: &TenantSecrets) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(config.to_string().as_bytes());
    for secret in [&secrets.database_password, &secrets.jwt_secret] {
        digest.update([0]);
        digest.update(secret.as_bytes());
    }
    knowton_common::hex(&digest.finalize()[..8])
}

/// The backend autoscaler's bounds: the plan's, with the minimum raised by
/// scaling up to the maximum; one replica, not scaled, when the tenant's
/// volume can be mounted on one node only.
pub fn replicas_of(spec: &TenantSpec, cluster: &ClusterSettings) -> Replicas {
    if !cluster.storage_access.shared() {
        return Replicas { min: 1, max: 1 };
    }
    let plan = plan_replicas(spec.plan, cluster);
    Replicas {
        min: spec
            .min_replicas
            .map_or(plan.min, |m| m.clamp(plan.min, plan.max)),
        max: plan.max,
    }
}

/// The plan's replica bounds (the frontend's count is their minimum).
fn plan_replicas(plan: Plan, cluster: &ClusterSettings) -> Replicas {
    cluster
        .replicas
        .get(&plan)
        .copied()
        .unwrap_or(Replicas { min: 2, max: 10 })
}

fn ingress(spec: &TenantSpec, ns: &str, cluster: &ClusterSettings) -> Value {
    let limits = spec.plan.limits();
    let rpm = limits.api_requests_per_minute.to_string();
    let allowed = (!spec.allowlist.is_empty()).then(|| spec.allowlist.join(","));
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "cert-manager.io/cluster-issuer".to_owned(),
        json!(cluster.cluster_issuer),
    );
    let style: Vec<(&str, Option<String>)> = match cluster.ingress_style {
        IngressStyle::Nginx => vec![
            ("nginx.ingress.kubernetes.io/limit-rpm", Some(rpm)),
            (
                "nginx.ingress.kubernetes.io/proxy-body-size",
                Some(quantity_bytes(limits.max_file_bytes).replace('i', "")),
            ),
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                allowed,
            ),
        ],
        IngressStyle::Haproxy => vec![
            ("haproxy.org/rate-limit-requests", Some(rpm)),
            ("haproxy.org/rate-limit-period", Some("1m".to_owned())),
            ("haproxy.org/rate-limit-status-code", Some("429".to_owned())),
            ("haproxy.org/allow-list", allowed),
        ],
    };
    for (name, value) in style {
        if let Some(value) = value {
            annotations.insert(name.to_owned(), json!(value));
        }
    }
    let annotations = Value::Object(annotations);
    let path = |path: &str, service: &str| {
        json!({
            "path": path, "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"name": "http"}}},
        })
    };
    let mut metadata = meta(spec, ns, "tenant", None);
    if let Some(map) = metadata.as_object_mut() {
        map.insert("annotations".to_owned(), annotations);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": metadata,
        "spec": {
            "ingressClassName": cluster.ingress_class,
            "tls": [{"hosts": [spec.domain], "secretName": format!("{}-tls", spec.slug)}],
            "rules": [{"host": spec.domain, "http": {"paths": [
                path("/api", "backend"),
                path("/", "frontend"),
            ]}}],
        },
    })
}

fn network_policies(spec: &TenantSpec, ns: &str, cluster: &ClusterSettings) -> Vec<Value> {
    let from_namespace = |name: &str| json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}});
    let mut egress = vec![
        json!({"to": [{"podSelector": {}}]}),
        json!({
            "to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }),
    ];
    if !cluster.database_cidrs.is_empty() {
        egress.push(json!({
            "to": cluster
                .database_cidrs
                .iter()
                .map(|cidr| json!({"ipBlock": {"cidr": cidr}}))
                .collect::<Vec<_>>(),
            "ports": [{"protocol": "TCP", "port": cluster.database_port}],
        }));
    }
    // Every pod but a volume pod (which needs no network: it is reached
    // through the API server's pods/exec), which is denied everything.
    let tenant_pods = json!({"matchExpressions": [{
        "key": COMPONENT_LABEL, "operator": "NotIn", "values": [volume::VOLUME_POD_COMPONENT],
    }]});
    vec![
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(spec, ns, "isolate-ingress", None),
            "spec": {
                "podSelector": tenant_pods,
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [
                    {"podSelector": {}},
                    from_namespace(&cluster.ingress_namespace),
                    from_namespace(&cluster.monitoring_namespace),
                ]}],
            },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(spec, ns, "isolate-egress", None),
            "spec": {
                "podSelector": tenant_pods,
                "policyTypes": ["Egress"],
                "egress": egress,
            },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(spec, ns, "isolate-volume", None),
            "spec": {
                "podSelector": {"matchLabels": {COMPONENT_LABEL: volume::VOLUME_POD_COMPONENT}},
                "policyTypes": ["Ingress", "Egress"],
            },
        }),
    ]
}

/// The objects as a multi-document YAML stream, with Secret values
/// replaced (a dry-run shows a Secret's keys, never its values).
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&redacted(object)).unwrap_or_default());
    }
    out
}

/// `object` as it may be shown: a Secret's values replaced.
pub fn redacted(object: &Value) -> Value {
    let mut shown = object.clone();
    if shown["kind"] == "Secret"
        && let Some(data) = shown.get_mut("stringData").and_then(Value::as_object_mut)
    {
        for value in data.values_mut() {
            *value = json!("<redacted>");
        }
    }
    shown
}

#[cfg(test)]
pub(crate) mod tests;
