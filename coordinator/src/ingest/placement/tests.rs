//! Tests of the pod placement table: what a result may claim.

use serde_json::json;

use super::*;

fn pod(namespace: &str, name: &str, node: Option<&str>) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {TENANT_LABEL: "acme"}},
        "spec": {"containers": [{"name": "backend", "image": "backend"}]},
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    serde_json::from_value(pod).unwrap()
}

const ACME: &str = "knowton-tenant-acme";

#[test]
fn results_are_bound_to_the_tenants_namespace_and_the_pods_node() {
    let placement = Placement::new("knowton-tenant-");
    let mut relisting = None;
    assert_eq!(
        placement.view().check("acme", "web-0", "node-a"),
        Err(RejectedResult::PodsNotListed),
        "nothing is known before the first list"
    );
    for event in [
        Event::Init,
        Event::InitApply(pod(ACME, "web-0", Some("node-a"))),
        Event::InitApply(pod(ACME, "web-1", Some("node-b"))),
        Event::InitApply(pod(ACME, "pending", None)),
        // Labelled as acme's, elsewhere.
        Event::InitApply(pod("default", "evil", Some("node-a"))),
        Event::InitApply(pod("knowton-tenant-globex", "globex-0", Some("node-a"))),
    ] {
        placement.apply(event, &mut relisting);
    }
    assert_eq!(
        placement.view().check("acme", "web-0", "node-a"),
        Err(RejectedResult::PodsNotListed),
        "a list counts once complete"
    );
    placement.apply(Event::InitDone, &mut relisting);
    assert_eq!(placement.size(), (3, true));

    let view = placement.view();
    assert_eq!(view.check("acme", "web-0", "node-a"), Ok(()));
    assert_eq!(view.check("globex", "globex-0", "node-a"), Ok(()));
    for (tenant, pod, node, why) in [
        ("acme", "web-1", "node-a", RejectedResult::WrongNode),
        ("acme", "web-0", "node-b", RejectedResult::WrongNode),
        (
            "acme",
            "evil",
            "node-a",
            RejectedResult::NotInTenantNamespace,
        ),
        (
            "acme",
            "globex-0",
            "node-a",
            RejectedResult::NotInTenantNamespace,
        ),
        (
            "globex",
            "web-0",
            "node-a",
            RejectedResult::NotInTenantNamespace,
        ),
        (
            "acme",
            "pending",
            "node-a",
            RejectedResult::NotInTenantNamespace,
        ),
        (
            "acme",
            "ghost",
            "node-a",
            RejectedResult::NotInTenantNamespace,
        ),
    ] {
        assert_eq!(
            view.check(tenant, pod, node),
            Err(why),
            "{tenant}/{pod} from {node}"
        );
    }
    drop(view);

    // Scheduled, rescheduled under the same name, deleted.
    placement.apply(
        Event::Apply(pod(ACME, "pending", Some("node-c"))),
        &mut relisting,
    );
    assert_eq!(placement.view().check("acme", "pending", "node-c"), Ok(()));
    placement.apply(
        Event::Apply(pod(ACME, "web-0", Some("node-c"))),
        &mut relisting,
    );
    assert_eq!(
        placement.view().check("acme", "web-0", "node-a"),
        Err(RejectedResult::WrongNode)
    );
    placement.apply(
        Event::Delete(pod(ACME, "web-1", Some("node-b"))),
        &mut relisting,
    );
    assert_eq!(
        placement.view().check("acme", "web-1", "node-b"),
        Err(RejectedResult::NotInTenantNamespace)
    );

    // A relist keeps the table until it is complete, then replaces it.
    placement.apply(Event::Init, &mut relisting);
    placement.apply(
        Event::InitApply(pod(ACME, "web-9", Some("node-a"))),
        &mut relisting,
    );
    assert_eq!(placement.view().check("acme", "web-0", "node-c"), Ok(()));
    placement.apply(Event::InitDone, &mut relisting);
    assert_eq!(placement.size(), (1, true));
    assert_eq!(placement.view().check("acme", "web-9", "node-a"), Ok(()));
}
