//! The RBAC of deploy/ (issue 11, finding 9): no ClusterRole that reads
//! Secrets is granted cluster-wide; the coordinator's Secret rights come
//! only from the RoleBinding each tenant namespace's rendering carries; and
//! the roles grant what the deployer does with each kind it manages.

use std::path::{Path, PathBuf};

use knowton_coordinator::deploy::kinds::{Kind, MANAGED};
use knowton_coordinator::deploy::render::TENANT_MANAGER_ROLE;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every object of every YAML file under deploy/.
fn manifests() -> Vec<(PathBuf, Value)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&deploy_dir(), &mut files);
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if value.is_object() {
                objects.push((file.clone(), value));
            }
        }
    }
    assert!(objects.len() > 20, "deploy/ read: {}", objects.len());
    objects
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether `rule` grants `verb` on `resource` of `group` (wildcards
/// included); `by_name`: also when limited to some resourceNames.
fn grants(rule: &Value, group: &str, resource: &str, verb: &str, by_name: bool) -> bool {
    let any = |list: Vec<&str>, wanted: &str| list.iter().any(|v| *v == wanted || *v == "*");
    any(strings(&rule["apiGroups"]), group)
        && any(strings(&rule["resources"]), resource)
        && any(strings(&rule["verbs"]), verb)
        && (by_name || strings(&rule["resourceNames"]).is_empty())
}

fn rules_of<'a>(objects: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Vec<Value> {
    objects
        .iter()
        .find(|(_, o)| o["kind"] == kind && o["metadata"]["name"] == name)
        .and_then(|(_, o)| o["rules"].as_array())
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/"))
}

#[test]
fn no_cluster_role_that_reads_secrets_is_granted_cluster_wide() {
    let objects = manifests();
    let bound_cluster_wide: Vec<&str> = objects
        .iter()
        .filter(|(_, o)| o["kind"] == "ClusterRoleBinding")
        .filter_map(|(_, o)| o["roleRef"]["name"].as_str())
        .collect();
    let mut reading_secrets = Vec::new();
    for (file, role) in objects.iter().filter(|(_, o)| o["kind"] == "ClusterRole") {
        let name = role["metadata"]["name"].as_str().unwrap();
        let reads = role["rules"].as_array().into_iter().flatten().any(|rule| {
            ["get", "list", "watch"]
                .iter()
                .any(|verb| grants(rule, "", "secrets", verb, true))
        });
        if reads {
            assert!(
                !bound_cluster_wide.contains(&name),
                "{}: ClusterRole {name} reads Secrets and a ClusterRoleBinding grants it cluster-wide",
                file.display()
            );
            reading_secrets.push(name);
        }
    }
    // The one that does is bound per tenant namespace, by the rendering.
    assert_eq!(reading_secrets, [TENANT_MANAGER_ROLE]);
    for (file, binding) in objects.iter().filter(|(_, o)| o["kind"] == "RoleBinding") {
        assert_ne!(
            binding["roleRef"]["name"],
            TENANT_MANAGER_ROLE,
            "{}: knowton-tenant-manager is bound only in tenant namespaces, by the coordinator",
            file.display()
        );
    }
}

#[test]
fn the_coordinator_may_bind_only_the_tenant_manager_role_and_never_escalate() {
    let objects = manifests();
    for rule in rules_of(&objects, "ClusterRole", "knowton-coordinator") {
        for verb in ["escalate", "impersonate", "*"] {
            assert!(!strings(&rule["verbs"]).contains(&verb), "{rule}");
        }
        assert!(!strings(&rule["resources"]).contains(&"*"), "{rule}");
        if strings(&rule["verbs"]).contains(&"bind") {
            assert_eq!(strings(&rule["verbs"]), ["bind"], "{rule}");
            assert_eq!(strings(&rule["resources"]), ["clusterroles"], "{rule}");
            assert_eq!(
                strings(&rule["resourceNames"]),
                [TENANT_MANAGER_ROLE],
                "{rule}"
            );
        }
    }
}

#[test]
fn the_roles_grant_what_the_deployer_does_with_each_managed_kind() {
    let objects = manifests();
    let cluster_wide = rules_of(&objects, "ClusterRole", "knowton-coordinator");
    let per_tenant = rules_of(&objects, "ClusterRole", TENANT_MANAGER_ROLE);
    let allowed = |rules: &Vec<Value>, kind: &Kind, verb: &str| {
        rules
            .iter()
            .any(|rule| grants(rule, kind.group, kind.plural, verb, false))
    };
    for kind in MANAGED {
        // Secrets in tenant namespaces only; everything else cluster-wide.
        let rules = if kind.is_watched() {
            cluster_wide
        } else {
            per_tenant
        };
        for verb in ["get", "create", "patch", "delete", "list"] {
            assert!(allowed(rules, kind, verb), "{verb} {}", kind.plural);
        }
        // The drift watch lists and watches each watched kind cluster-wide.
        if kind.is_watched() {
            assert!(
                allowed(cluster_wide, kind, "watch"),
                "watch {}",
                kind.plural
            );
        } else {
            assert!(!allowed(cluster_wide, kind, "get"), "{}", kind.plural);
        }
    }
    // The placement watch reads pods cluster-wide, and never writes them.
    for verb in ["get", "list", "watch"] {
        assert!(
            cluster_wide
                .iter()
                .any(|r| grants(r, "", "pods", verb, false)),
            "{verb} pods"
        );
    }
    for verb in ["create", "patch", "update", "delete"] {
        assert!(
            !cluster_wide
                .iter()
                .any(|r| grants(r, "", "pods", verb, false)),
            "{verb} pods"
        );
    }
}
