//! The volume pod as rendered: what it mounts, where it runs, what it may
//! do (nothing but read, or write, the claim), and the command run in it.

use std::time::Duration;

use serde_json::{Value, json};

use knowton_common::namespace::COMPONENT_LABEL;
use knowton_common::volume::{CLAIM, DATA_PATH, POD_COMPONENT};

/// One per tenant namespace at a time: a leftover is found by its name.
pub const POD_NAME: &str = "knowton-volume";
pub const CONTAINER: &str = "volume";
/// The pod's component label; the tenant's network policies deny it all
/// traffic.
pub const COMPONENT: &str = POD_COMPONENT;

/// What the pod may do to the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A backup: the claim is mounted read-only.
    Read,
    /// A restore (the tenant scaled to zero first).
    Write,
}

#[derive(Debug)]
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub slug: &'a str,
    pub image: &'a str,
    pub access: Access,
    /// The node of the pod holding a ReadWriteOnce claim.
    pub node: Option<&'a str>,
    pub deadline: Duration,
}

/// The command `pods/exec` runs in the pod.
pub fn command(access: Access) -> Vec<String> {
    let mut command: Vec<String> = ["knowton-agent", "volume", "--root", DATA_PATH]
        .map(str::to_owned)
        .into();
    if access == Access::Read {
        command.push("--read-only".to_owned());
    }
    command
}

/// The Pod. Its main process waits (`--idle`) until the coordinator has
/// done and deletes it, or its deadline passes.
pub fn render(spec: &PodSpec<'_>) -> Value {
    let read_only = spec.access == Access::Read;
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": POD_NAME,
            "namespace": spec.namespace,
            // Not the tenant label: agents would probe it as a tenant pod.
            "labels": {
                COMPONENT_LABEL: COMPONENT,
                "knowton.io/volume-of": spec.slug,
                "app.kubernetes.io/managed-by": "knowton-coordinator",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": spec.deadline.as_secs().max(1),
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
                "fsGroup": 10001, "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": CONTAINER,
                "image": spec.image,
                "command": ["knowton-agent", "volume", "--root", DATA_PATH, "--idle"],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"cpu": "1", "memory": "256Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": "data", "mountPath": DATA_PATH, "readOnly": read_only}],
            }],
            "volumes": [{
                "name": "data",
                "persistentVolumeClaim": {"claimName": CLAIM, "readOnly": read_only},
            }],
        },
    });
    if let Some(node) = spec.node {
        pod["spec"]["affinity"] = json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}],
            }]},
        }});
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(access: Access, node: Option<&str>) -> Value {
        render(&PodSpec {
            namespace: "knowton-tenant-acme",
            slug: "acme",
            image: "ghcr.io/knowton/knowton-agent:0.1.0",
            access,
            node,
            deadline: Duration::from_secs(3600),
        })
    }

    #[test]
    fn a_backup_pod_mounts_the_claim_read_only_on_the_backends_node() {
        let pod = spec(Access::Read, Some("node-a"));
        let s = &pod["spec"];
        assert_eq!(
            s["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "tenant-data"
        );
        assert_eq!(s["volumes"][0]["persistentVolumeClaim"]["readOnly"], true);
        assert_eq!(s["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(
            s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchFields"][0]["values"],
            json!(["node-a"])
        );
        assert_eq!(s["automountServiceAccountToken"], false);
        assert_eq!(s["activeDeadlineSeconds"], 3600);
        assert_eq!(
            s["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        assert!(s["containers"][0]["resources"]["limits"]["memory"].is_string());
        // Never the tenant label: agents probe pods that carry it.
        assert!(pod["metadata"]["labels"].get("knowton.io/tenant").is_none());
        assert_eq!(pod["metadata"]["labels"][COMPONENT_LABEL], COMPONENT);
        assert!(command(Access::Read).contains(&"--read-only".to_owned()));
    }

    #[test]
    fn a_restore_pod_writes_and_a_shared_claim_is_not_pinned() {
        let pod = spec(Access::Write, None);
        assert_eq!(
            pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"],
            false
        );
        assert!(pod["spec"].get("affinity").is_none());
        assert!(!command(Access::Write).contains(&"--read-only".to_owned()));
    }
}
