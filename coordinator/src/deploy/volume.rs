//! The tenant's data volume: its PersistentVolumeClaim as rendered, and as
//! it may be applied over the claim that exists (what a claim cannot change
//! keeps its live value, and it never shrinks).

use serde_json::{Value, json};

/// The claim's name ([`CLAIM`]), where the backend mounts it
/// ([`DATA_PATH`]), and the component label of the pod a storage backup or
/// restore reads or writes it with ([`VOLUME_POD_COMPONENT`]), which the
/// tenant's network policies deny all traffic.
pub use knowton_common::volume::{CLAIM, DATA_PATH, POD_COMPONENT as VOLUME_POD_COMPONENT};

/// How the tenant's volume may be mounted: by the pods of one node, or
/// by pods anywhere (which the storage class must support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccessMode {
    /// `ReadWriteOnce`: every storage class offers it; the backend runs one
    /// replica, replaced rather than rolled (see the README).
    #[default]
    ReadWriteOnce,
    /// `ReadWriteMany` (NFS, CephFS, EFS, Azure Files, Longhorn…): the
    /// backend keeps its autoscaler, rolling updates and disruption budget.
    ReadWriteMany,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadWriteMany => "ReadWriteMany",
        }
    }

    /// Whether pods on several nodes may mount the volume at once.
    pub fn shared(self) -> bool {
        self == AccessMode::ReadWriteMany
    }
}

/// The claim's `spec`: `size` (a quantity), the access mode, and the
/// storage class when one is named (absent: the cluster's default).
pub fn claim_spec(size: &str, access: AccessMode, storage_class: Option<&str>) -> Value {
    let mut spec = json!({
        "accessModes": [access.as_str()],
        "resources": {"requests": {"storage": size}},
    });
    if let (Some(class), Some(map)) = (storage_class, spec.as_object_mut()) {
        map.insert("storageClassName".to_owned(), json!(class));
    }
    spec
}

/// `desired` (a rendered claim) as it can be applied over `live`, the claim
/// in the cluster: its storage class and access modes are those it was
/// made with (the API server refuses to change them, so a
/// changed flag applies to new claims only), and its size is the larger
/// of the two (a claim cannot shrink: a tenant moved to a smaller plan
/// keeps its data). Anything else is returned as it is.
pub fn settled(desired: &Value, live: Option<&Value>) -> Value {
    let Some(live) = live else {
        return desired.clone();
    };
    // Only the desired object is sure to name its kind (a watched list's
    // items do not).
    if desired["kind"] != "PersistentVolumeClaim" {
        return desired.clone();
    }
    let mut settled = desired.clone();
    let Some(spec) = settled["spec"].as_object_mut() else {
        return settled;
    };
    for field in ["storageClassName", "accessModes"] {
        match live["spec"].get(field) {
            Some(value) if !value.is_null() => {
                spec.insert(field.to_owned(), value.clone());
            }
            _ => {}
        }
    }
    let wanted = desired["spec"]["resources"]["requests"]["storage"].as_str();
    let held = live["spec"]["resources"]["requests"]["storage"].as_str();
    if let (Some(wanted), Some(held)) = (wanted, held)
        && super::diff::quantity(held) > super::diff::quantity(wanted)
    {
        settled["spec"]["resources"]["requests"]["storage"] = json!(held);
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(size: &str, class: Option<&str>) -> Value {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": "knowton-tenant-acme"},
            "spec": claim_spec(size, AccessMode::ReadWriteOnce, class),
        })
    }

    #[test]
    fn the_storage_class_is_named_only_when_configured() {
        let spec = claim_spec("10Gi", AccessMode::ReadWriteOnce, None);
        assert!(spec.get("storageClassName").is_none(), "{spec}");
        assert_eq!(spec["accessModes"], json!(["ReadWriteOnce"]));
        let spec = claim_spec("1Ti", AccessMode::ReadWriteMany, Some("nfs"));
        assert_eq!(spec["storageClassName"], "nfs");
        assert_eq!(spec["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(spec["resources"]["requests"]["storage"], "1Ti");
    }

    #[test]
    fn a_claim_grows_with_its_plan_but_never_shrinks_or_changes_class() {
        // No claim yet: as rendered.
        let desired = claim("100Gi", Some("fast"));
        assert_eq!(settled(&desired, None), desired);
        // A bigger plan: the claim grows.
        let mut live = claim("10Gi", Some("standard"));
        live["spec"]["volumeName"] = json!("pvc-123");
        live["spec"]["volumeMode"] = json!("Filesystem");
        let grown = settled(&desired, Some(&live));
        assert_eq!(grown["spec"]["resources"]["requests"]["storage"], "100Gi");
        assert_eq!(grown["spec"]["storageClassName"], "standard");
        assert!(grown["spec"].get("volumeMode").is_none(), "{grown}");
        assert!(grown["spec"].get("volumeName").is_none(), "{grown}");
        // A smaller one: the claim keeps its size.
        let live = claim("1Ti", None);
        let kept = settled(&claim("10Gi", None), Some(&live));
        assert_eq!(kept["spec"]["resources"]["requests"]["storage"], "1Ti");
        // Other kinds pass through.
        let config = json!({"kind": "ConfigMap", "data": {"a": "b"}});
        assert_eq!(settled(&config, Some(&live)), config);
    }
}
