//! Leader election over a Lease, as `kube-lease-manager` does it: create,
//! a server-side apply of the holder fields that must conflict while
//! another manager holds them, and strategic merge patches to renew and
//! release.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::{Value, json};

use super::client::{api_error, client, namespace};
use crate::fake_kube::FakeKube;

const NS: &str = "knowton-system";

fn holder(fake: &FakeKube) -> Option<String> {
    let lease = fake.object("coordination.k8s.io/v1", "Lease", Some(NS), "leader")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

/// The lock the manager with `identity` applies (as `LeaseState::lock`).
fn lock(identity: &str, now: &str) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "spec": {
            "acquireTime": now,
            "renewTime": now,
            "holderIdentity": identity,
            "leaseDurationSeconds": 15,
        },
    }))
}

fn manager(identity: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(format!("kube-lease-manager-{identity}")),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_lock_conflicts_while_held_and_not_once_released() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let leases: Api<Lease> = Api::namespaced(client(&fake), NS);
    let empty = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("leader".into()),
            ..Default::default()
        },
        spec: Some(Default::default()),
    };
    leases.create(&PostParams::default(), &empty).await.unwrap();
    let again = api_error(leases.create(&PostParams::default(), &empty).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    leases
        .patch(
            "leader",
            &manager("a"),
            &lock("a", "2026-01-01T00:00:00.000000Z"),
        )
        .await
        .unwrap();
    let transitions = Patch::Strategic(json!({"spec": {"leaseTransitions": 1}}));
    leases
        .patch("leader", &manager("a"), &transitions)
        .await
        .unwrap();
    assert_eq!(holder(&fake).as_deref(), Some("a"));

    let taken = leases
        .patch(
            "leader",
            &manager("b"),
            &lock("b", "2026-01-01T00:00:01.000000Z"),
        )
        .await;
    let conflict = api_error(taken);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict
            .message
            .starts_with("Apply failed with 3 conflicts: conflicts with \"kube-lease-manager-a\":"),
        "{}",
        conflict.message
    );
    assert_eq!(holder(&fake).as_deref(), Some("a"));

    // Renewing is a strategic merge patch by the holder.
    let renew = Patch::Strategic(json!({"spec": {"renewTime": "2026-01-01T00:00:05.000000Z"}}));
    leases.patch("leader", &manager("a"), &renew).await.unwrap();
    // Releasing nulls the holder fields: nobody owns them any more.
    let release = Patch::Strategic(json!({"spec": {
        "acquireTime": null, "renewTime": null, "holderIdentity": null, "leaseDurationSeconds": null,
    }}));
    leases
        .patch("leader", &manager("a"), &release)
        .await
        .unwrap();
    assert_eq!(holder(&fake), None);
    leases
        .patch(
            "leader",
            &manager("b"),
            &lock("b", "2026-01-01T00:00:06.000000Z"),
        )
        .await
        .unwrap();
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    let lease = fake
        .object("coordination.k8s.io/v1", "Lease", Some(NS), "leader")
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

/// A kube-lease-manager for the lease `leader` in [`NS`], as `identity`,
/// holding it for `duration` seconds with `grace` seconds of grace.
async fn lease_manager(
    fake: &FakeKube,
    identity: &str,
    duration: u64,
    grace: u64,
) -> kube_lease_manager::Result<kube_lease_manager::LeaseManager> {
    LeaseManagerBuilder::new(client(fake), "leader")
        .with_namespace(NS)
        .with_identity(identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
}

#[tokio::test]
async fn two_lease_managers_hand_leadership_over() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let a = lease_manager(&fake, "a", 2, 1).await.unwrap();
    let b = lease_manager(&fake, "b", 2, 1).await.unwrap();
    let (mut a_leads, a_task) = a.watch().await;
    tokio::time::timeout(Duration::from_secs(5), a_leads.wait_for(|leads| *leads))
        .await
        .expect("a leads within 5s")
        .unwrap();
    assert_eq!(holder(&fake).as_deref(), Some("a"));

    // While a renews, b waits, longer than a lease lasts.
    let (mut b_leads, b_task) = b.watch().await;
    let waited = tokio::time::timeout(Duration::from_secs(3), b_leads.wait_for(|leads| *leads))
        .await
        .is_ok();
    assert!(!waited, "b led while a held the lease");
    assert_eq!(holder(&fake).as_deref(), Some("a"));

    // a stops: it releases the lease, and b takes it.
    drop(a_leads);
    a_task.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), b_leads.wait_for(|leads| *leads))
        .await
        .expect("b leads within 10s")
        .unwrap();
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    drop(b_leads);
    b_task.await.unwrap().unwrap();
    assert_eq!(holder(&fake), None, "released on the way out");
}

#[tokio::test]
async fn a_lease_left_to_expire_is_taken_by_another_manager() {
    let fake = FakeKube::start().await;
    namespace(&fake, NS);
    let (mut a_leads, a_task) = lease_manager(&fake, "a", 1, 0).await.unwrap().watch().await;
    tokio::time::timeout(Duration::from_secs(5), a_leads.wait_for(|leads| *leads))
        .await
        .expect("a leads within 5s")
        .unwrap();
    // a dies without releasing; b force-releases the expired lease and
    // applies its own lock.
    a_task.abort();
    let (mut b_leads, b_task) = lease_manager(&fake, "b", 1, 0).await.unwrap().watch().await;
    tokio::time::timeout(Duration::from_secs(10), b_leads.wait_for(|leads| *leads))
        .await
        .expect("b leads within 10s")
        .unwrap();
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    let lease = fake
        .object("coordination.k8s.io/v1", "Lease", Some(NS), "leader")
        .unwrap();
    let managers: Vec<&str> = lease["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(
        !managers.contains(&"kube-lease-manager-a"),
        "a owns nothing any more: {managers:?}"
    );
    drop(b_leads);
    b_task.await.unwrap().unwrap();
}
