//! Snapshots of the rendered objects of each plan: reviewable YAML files
//! committed under `coordinator/snapshots/`. A rendering change fails here
//! until the files are regenerated with `UPDATE_SNAPSHOTS=1 cargo test -p
//! knowton-coordinator --lib deploy` and the diff is reviewed.

use std::path::PathBuf;

use knowton_common::{Branding, Plan};

use super::*;

fn spec(plan: Plan) -> TenantSpec {
    TenantSpec {
        id: Uuid::parse_str("01938f5e-7c3a-7000-8000-00000000a1b2").unwrap(),
        slug: "acme".to_owned(),
        plan,
        domain: "acme.knowton.com".to_owned(),
        features: plan.features(),
        branding: Branding {
            company_name: "Acme Corp".to_owned(),
            primary_color: "#112233".to_owned(),
            secondary_color: "#445566".to_owned(),
            logo_url: None,
        },
        allowlist: if plan == Plan::Enterprise {
            vec!["203.0.113.0/24".to_owned(), "198.51.100.7/32".to_owned()]
        } else {
            Vec::new()
        },
        stopped: false,
        min_replicas: None,
    }
}

/// The cluster of the snapshots: the defaults, with the tenants'
/// databases at two addresses and a database server.
fn cluster() -> ClusterSettings {
    ClusterSettings {
        database_cidrs: vec!["192.0.2.10/32".to_owned(), "192.0.2.11/32".to_owned()],
        database_host: Some("tenants-db.example.internal".to_owned()),
        ..ClusterSettings::default()
    }
}

/// The cluster of a plan's snapshot: the enterprise one shows volumes
/// every node may mount, of a named class (the backend scaled and
/// rolled); the others the defaults (one replica, replaced).
fn snapshot_cluster(plan: Plan) -> ClusterSettings {
    match plan {
        Plan::Enterprise => shared(cluster()),
        _ => cluster(),
    }
}

/// `cluster` with volumes every node may mount, of the class `shared-nfs`.
fn shared(cluster: ClusterSettings) -> ClusterSettings {
    ClusterSettings {
        storage_access: AccessMode::ReadWriteMany,
        storage_class: Some("shared-nfs".to_owned()),
        ..cluster
    }
}

/// Every object of a professional tenant, of every kind there is.
pub(crate) fn sample_objects() -> Vec<Value> {
    render(&spec(Plan::Professional), &secrets(), &shared(cluster()))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn secrets() -> TenantSecrets {
    TenantSecrets {
        database_password: "db-password-not-for-snapshots".to_owned(),
        jwt_secret: "jwt-secret-not-for-snapshots".to_owned(),
    }
}

fn snapshot_path(plan: Plan) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(format!("tenant-{}.yaml", plan.as_str()))
}

#[test]
fn rendered_objects_match_their_snapshots() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    for plan in Plan::ALL {
        let yaml = to_yaml(&render(&spec(plan), &secrets(), &snapshot_cluster(plan)));
        let path = snapshot_path(plan);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != yaml {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "rendering changed {stale:?}: review it and regenerate with UPDATE_SNAPSHOTS=1"
    );
}

#[test]
fn every_object_is_labelled_with_its_tenant_and_namespaced_but_the_namespace() {
    let objects = render(
        &spec(Plan::Professional),
        &secrets(),
        &shared(ClusterSettings::default()),
    );
    assert_eq!(objects[0]["kind"], "Namespace");
    assert_eq!(objects[0]["metadata"]["name"], "knowton-tenant-acme");
    for o in &objects {
        assert_eq!(o["metadata"]["labels"][TENANT_LABEL], "acme", "{o}");
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "knowton-tenant-acme", "{o}");
        }
    }
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "ResourceQuota",
        "LimitRange",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
}

#[test]
fn quotas_follow_the_plan_and_secrets_never_reach_the_yaml() {
    let cluster = ClusterSettings::default();
    let quota = |plan| {
        render(&spec(plan), &secrets(), &cluster)
            .into_iter()
            .find(|o| o["kind"] == "ResourceQuota")
            .unwrap()
    };
    assert_eq!(
        quota(Plan::Basic)["spec"]["hard"]["requests.storage"],
        "10Gi"
    );
    assert_eq!(
        quota(Plan::Enterprise)["spec"]["hard"]["requests.storage"],
        "1Ti"
    );
    assert_eq!(quota(Plan::Professional)["spec"]["hard"]["limits.cpu"], "8");
    let objects = render(&spec(Plan::Basic), &secrets(), &cluster);
    let secret = objects.iter().find(|o| o["kind"] == "Secret").unwrap();
    assert_eq!(
        secret["stringData"]["DATABASE_PASSWORD"], "db-password-not-for-snapshots",
        "applied with its values"
    );
    let yaml = to_yaml(&objects);
    assert!(!yaml.contains("not-for-snapshots"), "printed without them");
    assert!(yaml.contains("DATABASE_PASSWORD: <redacted>"));
}

#[test]
fn a_stopped_tenant_keeps_its_namespace_config_and_services_but_runs_nothing() {
    let cluster = ClusterSettings::default();
    let stopped = TenantSpec {
        stopped: true,
        ..spec(Plan::Professional)
    };
    let objects = render(&stopped, &secrets(), &cluster);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for gone in ["Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(!kinds.contains(&gone), "{gone} still rendered");
    }
    for kept in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "Service",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(&kept), "{kept} missing");
    }
    for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
        assert_eq!(deployment["spec"]["replicas"], 0);
    }
}

#[test]
fn the_autoscaler_owns_the_backend_replicas_and_scaling_stays_within_the_plan() {
    let cluster = shared(ClusterSettings::default());
    let objects = render(&spec(Plan::Professional), &secrets(), &cluster);
    assert!(find(&objects, "Deployment", "backend")["spec"]["replicas"].is_null());
    assert_eq!(
        find(&objects, "Deployment", "frontend")["spec"]["replicas"],
        2
    );
    for (asked, min) in [(Some(5), 5), (Some(50), 10), (Some(1), 2), (None, 2)] {
        let scaled = TenantSpec {
            min_replicas: asked,
            ..spec(Plan::Professional)
        };
        let objects = render(&scaled, &secrets(), &cluster);
        let hpa = find(&objects, "HorizontalPodAutoscaler", "backend");
        assert_eq!(hpa["spec"]["minReplicas"], min, "{asked:?}");
        assert_eq!(hpa["spec"]["maxReplicas"], 10);
        assert_eq!(
            find(&objects, "Deployment", "frontend")["spec"]["replicas"],
            2
        );
    }
}

#[test]
fn the_ingress_speaks_the_configured_controllers_annotations() {
    let haproxy = ClusterSettings {
        ingress_style: IngressStyle::Haproxy,
        ..ClusterSettings::default()
    };
    let objects = render(&spec(Plan::Enterprise), &secrets(), &haproxy);
    let ingress = objects.iter().find(|o| o["kind"] == "Ingress").unwrap();
    let annotations = ingress["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(
        annotations["haproxy.org/rate-limit-requests"],
        Plan::Enterprise
            .limits()
            .api_requests_per_minute
            .to_string()
    );
    assert_eq!(annotations["haproxy.org/rate-limit-period"], "1m");
    assert_eq!(
        annotations["haproxy.org/allow-list"],
        "203.0.113.0/24,198.51.100.7/32"
    );
    assert!(
        annotations.keys().all(|k| !k.starts_with("nginx.")),
        "{annotations:?}"
    );
    assert_eq!(
        annotations["cert-manager.io/cluster-issuer"],
        "letsencrypt-prod"
    );
}

#[test]
fn tenant_egress_reaches_only_the_configured_database_addresses() {
    let egress_of = |cluster: &ClusterSettings| {
        render(&spec(Plan::Basic), &secrets(), cluster)
            .into_iter()
            .find(|o| o["metadata"]["name"] == "isolate-egress")
            .unwrap()["spec"]["egress"]
            .clone()
    };
    // No default range: without configured databases, no address outside
    // the namespace but DNS.
    let none = egress_of(&ClusterSettings::default());
    assert!(!none.to_string().contains("ipBlock"), "{none}");
    let some = egress_of(&cluster());
    let blocks: Vec<&str> = some
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["to"].as_array().unwrap())
        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(blocks, ["192.0.2.10/32", "192.0.2.11/32"]);
    assert!(!some.to_string().contains("10.0.0.0/8"));
}

#[test]
fn each_tenant_namespace_binds_the_coordinator_to_the_tenant_manager_role_only() {
    let objects = render(&spec(Plan::Basic), &secrets(), &cluster());
    let bindings: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        .collect();
    assert_eq!(bindings.len(), 1);
    let binding = bindings[0];
    assert_eq!(binding["kind"], "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "knowton-tenant-acme");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], TENANT_MANAGER_ROLE);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "knowton-coordinator", "namespace": "knowton-system"}])
    );
    // Bound before the Secret it allows is applied.
    let position = |kind: &str| objects.iter().position(|o| o["kind"] == kind).unwrap();
    assert!(position("RoleBinding") < position("Secret"));
}

#[test]
fn the_backend_gets_its_database_from_the_config_and_secret_only_when_there_is_one() {
    let config = |cluster: &ClusterSettings| {
        find(
            &render(&spec(Plan::Basic), &secrets(), cluster),
            "ConfigMap",
            "tenant-config",
        )["data"]
            .clone()
    };
    let none = config(&ClusterSettings::default());
    assert!(
        none.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("DATABASE_")),
        "{none}"
    );
    let with_server = ClusterSettings {
        database_host: Some("db.internal".to_owned()),
        database_port: 6432,
        ..ClusterSettings::default()
    };
    let data = config(&with_server);
    assert_eq!(data["DATABASE_HOST"], "db.internal");
    assert_eq!(data["DATABASE_PORT"], "6432");
    // The name provisioning gives the tenant's database and role.
    assert_eq!(data["DATABASE_NAME"], database_name("acme"));
    assert_eq!(data["DATABASE_USER"], "tenant_acme");
    assert!(
        data.get("DATABASE_PASSWORD").is_none(),
        "in the Secret only"
    );
    let objects = render(&spec(Plan::Basic), &secrets(), &with_server);
    let backend = find(&objects, "Deployment", "backend");
    let env_from = &backend["spec"]["template"]["spec"]["containers"][0]["envFrom"];
    assert_eq!(
        env_from,
        &json!([
            {"configMapRef": {"name": "tenant-config"}},
            {"secretRef": {"name": "tenant-secrets"}},
        ])
    );
    // The frontend holds neither the database password nor the token
    // secret.
    let frontend = find(&objects, "Deployment", "frontend");
    assert_eq!(
        frontend["spec"]["template"]["spec"]["containers"][0]["envFrom"],
        json!([{"configMapRef": {"name": "tenant-config"}}])
    );
}

#[test]
fn the_backend_mounts_a_claim_as_big_as_the_plans_storage_at_data() {
    for (plan, size) in [
        (Plan::Basic, "10Gi"),
        (Plan::Professional, "100Gi"),
        (Plan::Enterprise, "1Ti"),
    ] {
        let objects = render(&spec(plan), &secrets(), &ClusterSettings::default());
        let claim = find(&objects, "PersistentVolumeClaim", "tenant-data");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], size);
        assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert!(
            claim["spec"].get("storageClassName").is_none(),
            "the cluster's default class: {claim}"
        );
        // The quota admits it, and nothing bigger.
        let quota = find(&objects, "ResourceQuota", "tenant-quota");
        assert_eq!(quota["spec"]["hard"]["requests.storage"], size);
        let pod = &find(&objects, "Deployment", "backend")["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][1],
            json!({"name": "data", "persistentVolumeClaim": {"claimName": "tenant-data"}})
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][1],
            json!({"name": "data", "mountPath": "/data"})
        );
        let frontend = &find(&objects, "Deployment", "frontend")["spec"]["template"]["spec"];
        assert!(!frontend.to_string().contains("tenant-data"), "{frontend}");
    }
    let named = ClusterSettings {
        storage_class: Some("fast-ssd".to_owned()),
        ..ClusterSettings::default()
    };
    let objects = render(&spec(Plan::Basic), &secrets(), &named);
    assert_eq!(
        find(&objects, "PersistentVolumeClaim", "tenant-data")["spec"]["storageClassName"],
        "fast-ssd"
    );
}

#[test]
fn on_a_volume_one_node_mounts_the_backend_is_one_replica_replaced_not_rolled() {
    let once = render(
        &spec(Plan::Enterprise),
        &secrets(),
        &ClusterSettings::default(),
    );
    let backend = find(&once, "Deployment", "backend");
    assert_eq!(backend["spec"]["replicas"], 1);
    assert_eq!(backend["spec"]["strategy"], json!({"type": "Recreate"}));
    let kinds: Vec<&str> = once.iter().filter_map(|o| o["kind"].as_str()).collect();
    for gone in ["HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(!kinds.contains(&gone), "{gone} rendered: {kinds:?}");
    }
    assert!(kinds.contains(&"Ingress"));
    // Scaling cannot raise it; the frontend keeps the plan's replicas.
    let scaled = TenantSpec {
        min_replicas: Some(5),
        ..spec(Plan::Enterprise)
    };
    let cluster = ClusterSettings::default();
    assert_eq!(replicas_of(&scaled, &cluster), Replicas { min: 1, max: 1 });
    let objects = render(&scaled, &secrets(), &cluster);
    assert_eq!(
        find(&objects, "Deployment", "backend")["spec"]["replicas"],
        1
    );
    assert_eq!(
        find(&objects, "Deployment", "frontend")["spec"]["replicas"],
        3
    );

    let many = render(
        &spec(Plan::Enterprise),
        &secrets(),
        &shared(ClusterSettings::default()),
    );
    let backend = find(&many, "Deployment", "backend");
    assert!(backend["spec"]["replicas"].is_null(), "the autoscaler's");
    assert_eq!(backend["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        find(&many, "PersistentVolumeClaim", "tenant-data")["spec"]["accessModes"],
        json!(["ReadWriteMany"])
    );
    find(&many, "HorizontalPodAutoscaler", "backend");
    find(&many, "PodDisruptionBudget", "backend");
}

/// A volume pod (a storage backup's or restore's) is reached through the
/// API server only: no policy lets anything in or out of it, and the
/// policies that let the tenant's other pods talk do not select it.
#[test]
fn a_volume_pod_is_denied_all_traffic() {
    let objects = render(&spec(Plan::Basic), &secrets(), &ClusterSettings::default());
    let policies: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "NetworkPolicy")
        .collect();
    let volume = policies
        .iter()
        .find(|p| p["metadata"]["name"] == "isolate-volume")
        .unwrap();
    assert_eq!(
        volume["spec"]["podSelector"]["matchLabels"][COMPONENT_LABEL],
        volume::VOLUME_POD_COMPONENT
    );
    assert_eq!(volume["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(volume["spec"].get("ingress").is_none() && volume["spec"].get("egress").is_none());
    for allowing in policies
        .iter()
        .filter(|p| p["metadata"]["name"] != "isolate-volume")
    {
        assert_eq!(
            allowing["spec"]["podSelector"]["matchExpressions"][0],
            json!({"key": COMPONENT_LABEL, "operator": "NotIn", "values": ["volume"]}),
            "{allowing}"
        );
    }
}
