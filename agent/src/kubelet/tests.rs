use serde_json::json;

use super::*;

/// A summary as the kubelet returns it (trimmed to pods and volumes).
fn summary() -> Summary {
    serde_json::from_value(json!({
        "node": {"nodeName": "node-a", "startTime": "2026-11-29T08:00:00Z"},
        "pods": [
            {
                "podRef": {"name": "acme-backend-0", "namespace": "knowton-tenant-acme", "uid": "u1"},
                "startTime": "2026-11-29T08:01:00Z",
                "containers": [],
                "volume": [
                    {"time": "2026-11-29T16:00:00Z", "availableBytes": 6000, "capacityBytes": 10000,
                     "usedBytes": 4000, "inodesFree": 10, "inodes": 20, "inodesUsed": 10,
                     "name": "data", "pvcRef": {"name": "data-acme-backend-0", "namespace": "knowton-tenant-acme"}},
                    {"time": "2026-11-29T16:00:00Z", "capacityBytes": 5000, "usedBytes": 1000,
                     "name": "uploads", "pvcRef": {"name": "uploads-acme", "namespace": "knowton-tenant-acme"}},
                    {"time": "2026-11-29T16:00:00Z", "capacityBytes": 1000000, "usedBytes": 12,
                     "name": "kube-api-access-x7k2p"},
                    {"capacityBytes": 1000000, "usedBytes": 40, "name": "config"}
                ]
            },
            {
                "podRef": {"name": "acme-backend-1", "namespace": "knowton-tenant-acme", "uid": "u2"},
                "volume": [{"capacityBytes": 1000000, "usedBytes": 12, "name": "kube-api-access-q8f4z"}]
            },
            {
                "podRef": {"name": "acme-backend-0", "namespace": "knowton-tenant-other", "uid": "u3"},
                "volume": [{"capacityBytes": 700, "usedBytes": 70, "name": "data", "pvcRef": {"name": "d", "namespace": "knowton-tenant-other"}}]
            },
            {"podRef": {"name": "kube-proxy-abcde", "namespace": "kube-system", "uid": "u4"}}
        ]
    }))
    .unwrap()
}

#[test]
fn only_pvc_volumes_count_and_they_add_up() {
    let usage = summary().pvc_usage();
    let key = |ns: &str, pod: &str| (ns.to_owned(), pod.to_owned());
    assert_eq!(
        usage.get(&key("knowton-tenant-acme", "acme-backend-0")),
        Some(&StorageSample {
            used_bytes: 5000,
            capacity_bytes: 15000
        })
    );
    assert_eq!(
        usage.get(&key("knowton-tenant-acme", "acme-backend-1")),
        None,
        "no PVC"
    );
    assert_eq!(usage.get(&key("kube-system", "kube-proxy-abcde")), None);
    assert_eq!(usage.len(), 2);
}

#[test]
fn results_get_the_storage_of_their_namespace_and_pod() {
    let namespaces = PodNamespaces::from([
        (
            ("acme".into(), "acme-backend-0".into()),
            "knowton-tenant-acme".into(),
        ),
        (
            ("acme".into(), "acme-backend-1".into()),
            "knowton-tenant-acme".into(),
        ),
    ]);
    let volumes = Volumes::join(&summary(), &namespaces);
    let result = |pod: &str| PodResult {
        tenant: "acme".into(),
        pod: pod.into(),
        ..PodResult::default()
    };
    let mut results = [
        result("acme-backend-0"),
        result("acme-backend-1"),
        PodResult {
            storage: Some(StorageSample {
                used_bytes: 1,
                capacity_bytes: 2,
            }),
            ..result("from-a-file")
        },
    ];
    volumes.fill(&mut results);
    assert_eq!(
        results[0].storage,
        Some(StorageSample {
            used_bytes: 5000,
            capacity_bytes: 15000
        }),
        "from knowton-tenant-acme, not the pod of the same name elsewhere"
    );
    assert_eq!(results[1].storage, None);
    assert_eq!(results[2].storage.unwrap().used_bytes, 1, "kept");
}

#[test]
fn an_empty_summary_is_valid() {
    let summary: Summary = serde_json::from_value(json!({"node": {"nodeName": "n"}})).unwrap();
    assert!(summary.pvc_usage().is_empty());
}
