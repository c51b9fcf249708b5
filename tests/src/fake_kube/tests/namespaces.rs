//! Namespaces: lifecycle admission, cascading deletion seen by a watch,
//! and dry runs that check everything and store nothing.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use super::client::{CONFIG_MAP, DEPLOYMENT, NAMESPACE, api, api_error, dynamic, json_of};
use crate::fake_kube::FakeKube;

fn config_map(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace}, "data": {"k": "v"}})
}

fn namespace_config(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"knowton.io/tenant": "acme"}}})
}

#[tokio::test]
async fn writes_into_a_missing_or_terminating_namespace_are_refused() {
    let fake = FakeKube::start().await;
    let maps = api(&fake, CONFIG_MAP, Some("acme"));
    let pp = PostParams::default();
    let missing = api_error(maps.create(&pp, &dynamic(config_map("acme", "a"))).await);
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.message.as_str()
        ),
        (404, "NotFound", "namespaces \"acme\" not found")
    );
    let applied = maps
        .patch(
            "a",
            &PatchParams::apply("deployer"),
            &Patch::Apply(config_map("acme", "a")),
        )
        .await;
    assert_eq!(api_error(applied).code, 404, "an apply that would create");

    let namespaces = api(&fake, NAMESPACE, None);
    let created = namespaces
        .patch(
            "acme",
            &PatchParams::apply("deployer"),
            &Patch::Apply(namespace_config("acme")),
        )
        .await
        .unwrap();
    let created = json_of(&created);
    assert_eq!(created["status"]["phase"], "Active");
    assert_eq!(created["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(
        created["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "acme"
    );
    maps.create(&pp, &dynamic(config_map("acme", "a")))
        .await
        .unwrap();

    fake.hold_namespace_deletion(true);
    let answered = namespaces
        .delete("acme", &DeleteParams::default())
        .await
        .unwrap();
    let answered = json_of(&answered.left().expect("the namespace"));
    assert_eq!(answered["status"]["phase"], "Terminating");
    assert!(answered["metadata"]["deletionTimestamp"].is_string());
    let again = api_error(namespaces.delete("acme", &DeleteParams::default()).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "Conflict"));
    let recreate = namespaces
        .create(&PostParams::default(), &dynamic(namespace_config("acme")))
        .await;
    let recreate = api_error(recreate);
    assert_eq!(
        (recreate.code, recreate.message.as_str()),
        (
            409,
            "object is being deleted: namespaces \"acme\" already exists"
        )
    );

    let forbidden = api_error(maps.create(&pp, &dynamic(config_map("acme", "b"))).await);
    assert_eq!(
        (forbidden.code, forbidden.reason.as_str()),
        (403, "Forbidden")
    );
    assert_eq!(
        forbidden.message,
        "configmaps \"b\" is forbidden: unable to create new content in namespace acme \
         because it is being terminated"
    );
    let dry = api_error(
        maps.create(
            &PostParams {
                dry_run: true,
                ..pp.clone()
            },
            &dynamic(config_map("acme", "b")),
        )
        .await,
    );
    assert_eq!(dry.code, 403, "also for a dry run");
    // Updates of what is there are still allowed.
    maps.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    assert!(fake.object("v1", "ConfigMap", Some("acme"), "a").is_some());

    fake.hold_namespace_deletion(false);
    assert!(fake.object("v1", "ConfigMap", Some("acme"), "a").is_none());
    assert!(fake.object("v1", "Namespace", None, "acme").is_none());
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_content_as_a_watch_sees() {
    let fake = FakeKube::start().await;
    let namespaces = api(&fake, NAMESPACE, None);
    let pp = PostParams::default();
    for ns in ["acme", "globex"] {
        namespaces
            .create(&pp, &dynamic(namespace_config(ns)))
            .await
            .unwrap();
        let maps = api(&fake, CONFIG_MAP, Some(ns));
        for name in ["a", "b"] {
            maps.create(&pp, &dynamic(config_map(ns, name)))
                .await
                .unwrap();
        }
    }
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 1}});
    api(&fake, DEPLOYMENT, Some("acme"))
        .create(&pp, &dynamic(deployment))
        .await
        .unwrap();

    let rv = fake.resource_version().to_string();
    let all_maps = api(&fake, CONFIG_MAP, None);
    let mut events = Box::pin(
        all_maps
            .watch(&WatchParams::default().timeout(10), &rv)
            .await
            .unwrap(),
    );
    let answered = namespaces
        .delete("acme", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        json_of(&answered.left().unwrap())["status"]["phase"],
        "Terminating"
    );

    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events within 5s")
            .expect("the watch open")
            .unwrap();
        match event {
            WatchEvent::Deleted(object) => deleted.push(format!(
                "{}/{}",
                object.metadata.namespace.unwrap(),
                object.metadata.name.unwrap()
            )),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(deleted, ["acme/a", "acme/b"]);
    assert!(fake.objects("v1", "ConfigMap", Some("acme")).is_empty());
    assert!(fake.objects("apps/v1", "Deployment", None).is_empty());
    assert_eq!(fake.objects("v1", "ConfigMap", Some("globex")).len(), 2);
    assert!(fake.object("v1", "Namespace", None, "acme").is_none());
    let gone = api_error(namespaces.get("acme").await);
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn a_dry_run_answers_as_the_write_would_and_stores_nothing() {
    let fake = FakeKube::start().await;
    let namespaces = api(&fake, NAMESPACE, None);
    let dry_apply = PatchParams::apply("deployer").dry_run();
    let rv = fake.resource_version();

    // The namespace itself, by a dry-run apply.
    let answered = namespaces
        .patch("acme", &dry_apply, &Patch::Apply(namespace_config("acme")))
        .await
        .unwrap();
    let answered = json_of(&answered);
    assert_eq!(answered["status"]["phase"], "Active");
    assert_eq!(answered["metadata"]["labels"]["knowton.io/tenant"], "acme");
    assert!(fake.object("v1", "Namespace", None, "acme").is_none());
    assert_eq!(fake.resource_version(), rv, "no resourceVersion used");

    // Its content still 404s: the namespace does not exist.
    let maps = api(&fake, CONFIG_MAP, Some("acme"));
    let missing = api_error(
        maps.patch("a", &dry_apply, &Patch::Apply(config_map("acme", "a")))
            .await,
    );
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "namespaces \"acme\" not found")
    );

    namespaces
        .create(&PostParams::default(), &dynamic(namespace_config("acme")))
        .await
        .unwrap();
    let rv = fake.resource_version();
    let watch_from = rv.to_string();
    let mut events = Box::pin(
        maps.watch(&WatchParams::default().timeout(1), &watch_from)
            .await
            .unwrap(),
    );
    let dry_post = PostParams {
        dry_run: true,
        ..Default::default()
    };
    maps.create(&dry_post, &dynamic(config_map("acme", "a")))
        .await
        .unwrap();
    maps.patch("a", &dry_apply, &Patch::Apply(config_map("acme", "a")))
        .await
        .unwrap();
    assert!(fake.object("v1", "ConfigMap", Some("acme"), "a").is_none());
    maps.create(&PostParams::default(), &dynamic(config_map("acme", "a")))
        .await
        .unwrap();
    let rv = fake.resource_version();
    let dry_merge = PatchParams::default().dry_run();
    let changed = maps
        .patch(
            "a",
            &dry_merge,
            &Patch::Merge(json!({"data": {"k": "dry"}})),
        )
        .await
        .unwrap();
    assert_eq!(json_of(&changed)["data"]["k"], "dry");
    maps.delete("a", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    namespaces
        .delete("acme", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert_eq!(fake.resource_version(), rv);
    assert_eq!(
        fake.object("v1", "ConfigMap", Some("acme"), "a").unwrap()["data"]["k"],
        "v"
    );
    assert_eq!(
        fake.object("v1", "Namespace", None, "acme").unwrap()["status"]["phase"],
        "Active"
    );
    // The only event: the real create.
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        if !matches!(event, WatchEvent::Bookmark(_)) {
            seen.push(event);
        }
    }
    assert_eq!(seen.len(), 1);
    assert!(matches!(seen[0], WatchEvent::Added(_)));
}
