use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

fn filter() -> PodFilter {
    PodFilter {
        node: "node-a".into(),
        default_port: 3000,
        namespace_prefix: "knowton-tenant-".into(),
    }
}

/// A Running tenant pod of `acme` on node-a, as the API server returns it,
/// changed by `change`.
fn pod(name: &str, change: impl FnOnce(&mut Value)) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "knowton-tenant-acme",
            "uid": "5b0cf2a4-3f1e-4a52-9d0c-1f6f3a1c2b7e",
            "resourceVersion": "1207",
            "labels": {"knowton.io/tenant": "acme", "app": "backend"}
        },
        "spec": {
            "nodeName": "node-a",
            "containers": [
                {"name": "sidecar", "image": "envoy", "ports": [{"name": "admin", "containerPort": 9901}]},
                {"name": "backend", "image": "knowton/backend:2.14.0",
                 "ports": [{"name": "metrics", "containerPort": 9090}, {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}
            ]
        },
        "status": {"phase": "Running", "podIP": "10.0.3.7", "podIPs": [{"ip": "10.0.3.7"}]}
    });
    change(&mut pod);
    serde_json::from_value(pod).unwrap()
}

#[test]
fn a_running_tenant_pod_with_an_ip_is_a_target_on_its_http_port() {
    let found = pod_target(&pod("acme-backend-0", |_| {}), &filter()).unwrap();
    assert_eq!(
        found,
        PodTarget {
            namespace: "knowton-tenant-acme".into(),
            target: Target {
                tenant: "acme".into(),
                pod: "acme-backend-0".into(),
                url: "http://10.0.3.7:8080".into(),
                storage_path: None,
            },
        }
    );

    let no_named_port = pod("p", |p| p["spec"]["containers"][1]["ports"] = json!([]));
    assert_eq!(
        pod_target(&no_named_port, &filter()).unwrap().target.url,
        "http://10.0.3.7:3000",
        "the --pod-port default"
    );
    let ipv6 = pod("p", |p| p["status"]["podIP"] = json!("fd00::3:7"));
    assert_eq!(
        pod_target(&ipv6, &filter()).unwrap().target.url,
        "http://[fd00::3:7]:8080"
    );
}

/// A change to a pod's JSON.
type Change = fn(&mut Value);

#[test]
fn pods_elsewhere_unlabelled_not_running_without_ip_or_deleting_are_not_targets() {
    let cases: [(&str, Change); 12] = [
        ("on another node", |p| {
            p["spec"]["nodeName"] = json!("node-b")
        }),
        ("not scheduled", |p| {
            p["spec"].as_object_mut().unwrap().remove("nodeName");
        }),
        ("without the tenant label", |p| {
            p["metadata"]["labels"] = json!({"app": "backend"})
        }),
        ("with an empty tenant label", |p| {
            p["metadata"]["labels"]["knowton.io/tenant"] = json!("")
        }),
        // Finding 8 of issue 11: the label alone made any pod a tenant's.
        ("labelled acme outside any tenant namespace", |p| {
            p["metadata"]["namespace"] = json!("default")
        }),
        ("labelled acme in another tenant's namespace", |p| {
            p["metadata"]["namespace"] = json!("knowton-tenant-globex")
        }),
        ("in a namespace that only ends like a tenant's", |p| {
            p["metadata"]["namespace"] = json!("evil-knowton-tenant-acme")
        }),
        ("in the namespace named by the prefix alone", |p| {
            p["metadata"]["namespace"] = json!("knowton-tenant-");
            p["metadata"]["labels"]["knowton.io/tenant"] = json!("");
        }),
        ("pending", |p| p["status"] = json!({"phase": "Pending"})),
        ("running without an IP", |p| {
            p["status"] = json!({"phase": "Running"})
        }),
        ("succeeded", |p| p["status"]["phase"] = json!("Succeeded")),
        ("being deleted", |p| {
            p["metadata"]["deletionTimestamp"] = json!("2026-11-29T16:00:00Z")
        }),
    ];
    for (what, change) in cases {
        assert_eq!(pod_target(&pod("p", change), &filter()), None, "{what}");
    }
}

#[test]
fn a_relist_replaces_the_targets_only_when_complete() {
    let f = filter();
    let mut set = PodSet::default();
    assert_eq!(set.apply(Event::Init, &f), None);
    assert_eq!(set.apply(Event::InitApply(pod("a", |_| {})), &f), None);
    let pending = pod("b", |p| p["status"] = json!({"phase": "Pending"}));
    assert_eq!(set.apply(Event::InitApply(pending), &f), None);
    assert!(set.targets().is_empty(), "nothing before InitDone");
    let changes = set.apply(Event::InitDone, &f).unwrap();
    assert_eq!(changes.added.len(), 1);
    assert_eq!(set.targets()[0].pod, "a");
    assert_eq!(
        set.namespaces()
            .get(&("acme".to_owned(), "a".to_owned()))
            .map(String::as_str),
        Some("knowton-tenant-acme")
    );

    // b starts running; a is modified without a change that matters.
    let running_b = pod("b", |_| {});
    assert_eq!(
        set.apply(Event::Apply(running_b), &f).unwrap().added.len(),
        1
    );
    let relabelled = pod("a", |p| p["metadata"]["labels"]["app"] = json!("web"));
    assert_eq!(set.apply(Event::Apply(relabelled), &f), None);

    // A relist (after 410 Gone) keeps both until it is complete, then only b.
    set.apply(Event::Init, &f);
    set.apply(Event::InitApply(pod("b", |_| {})), &f);
    assert_eq!(set.targets().len(), 2, "the previous targets meanwhile");
    let changes = set.apply(Event::InitDone, &f).unwrap();
    assert_eq!(changes.removed[0].target.pod, "a");
    assert!(changes.added.is_empty());
    assert_eq!(set.targets().len(), 1);

    // b stops running, then comes back, then is deleted.
    let terminating = pod("b", |p| {
        p["metadata"]["deletionTimestamp"] = json!("2026-11-29T16:00:00Z")
    });
    assert_eq!(
        set.apply(Event::Apply(terminating), &f)
            .unwrap()
            .removed
            .len(),
        1
    );
    set.apply(Event::Apply(pod("b", |_| {})), &f);
    assert_eq!(
        set.apply(Event::Delete(pod("b", |_| {})), &f)
            .unwrap()
            .removed
            .len(),
        1
    );
    assert!(set.targets().is_empty() && set.namespaces().is_empty());
}

#[test]
fn api_urls_are_checked() {
    assert!(parse_api_url("http://127.0.0.1:8001").is_ok());
    assert!(parse_api_url("https://10.96.0.1").is_ok());
    for bad in ["127.0.0.1:8001", "ftp://x", "http//x", ""] {
        let err = parse_api_url(bad).unwrap_err().to_string();
        assert!(err.contains("--kube-api-url"), "{bad}: {err}");
    }
}
