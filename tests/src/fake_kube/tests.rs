//! Tests of the fake API server: selectors, lists and watches here; writes,
//! server-side apply and namespaces in the modules below, each
//! with the real `kube` client.

mod apply;
mod client;
mod namespaces;
mod writes;

use std::time::Duration;

use serde_json::{Value, json};

use super::selector::{FieldSelector, LabelSelector, Requirement, field_value};
use super::{FakeKube, TestPod};

/// A plain HTTP client (the workspace builds reqwest without a default TLS provider).
fn http() -> reqwest::Client {
    knowton_coordinator::client::http_client()
}

fn labels(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn label_selectors_parse_as_the_api_server_does() {
    let parsed = LabelSelector::parse(
        "knowton.io/tenant, !legacy, app=backend, tier==web,env!=dev, zone in (a, b),track notin (canary)",
    )
    .unwrap();
    assert_eq!(
        parsed.0,
        vec![
            Requirement::Exists("knowton.io/tenant".into()),
            Requirement::NotExists("legacy".into()),
            Requirement::Equals("app".into(), "backend".into()),
            Requirement::Equals("tier".into(), "web".into()),
            Requirement::NotEquals("env".into(), "dev".into()),
            Requirement::In("zone".into(), ["a".into(), "b".into()].into()),
            Requirement::NotIn("track".into(), ["canary".into()].into()),
        ]
    );
    assert_eq!(LabelSelector::parse("").unwrap().0, vec![]);
    assert_eq!(
        LabelSelector::parse("app=").unwrap().0,
        vec![Requirement::Equals("app".into(), String::new())]
    );
    for bad in [
        "a,,b",
        "a,",
        "=x",
        "!",
        "a b",
        "app=back end",
        "zone in (a",
        "zone in a)",
        "zone within (a)",
        "Knowton.IO/x",
        "-app",
    ] {
        let err = LabelSelector::parse(bad).unwrap_err();
        assert!(
            err.starts_with("unable to parse requirement"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn label_selectors_match_absent_labels_as_the_api_server_does() {
    let acme = labels(json!({"knowton.io/tenant": "acme", "app": "backend", "zone": "a"}));
    let none = labels(json!({}));
    let check = |selector: &str, object: Option<&serde_json::Map<String, Value>>| {
        LabelSelector::parse(selector).unwrap().matches(object)
    };
    for (selector, on_acme, on_none) in [
        ("knowton.io/tenant", true, false),
        ("!knowton.io/tenant", false, true),
        ("knowton.io/tenant=acme", true, false),
        ("knowton.io/tenant=ghost", false, false),
        ("knowton.io/tenant!=ghost", true, true),
        ("knowton.io/tenant!=acme", false, true),
        ("zone in (a,b)", true, false),
        ("zone notin (a)", false, true),
        ("app=backend,zone=a", true, false),
        ("app=backend,zone=b", false, false),
        ("", true, true),
    ] {
        assert_eq!(check(selector, Some(&acme)), on_acme, "{selector} on acme");
        assert_eq!(check(selector, Some(&none)), on_none, "{selector} on none");
        assert_eq!(check(selector, None), on_none, "{selector} without labels");
    }
}

#[test]
fn field_selectors_compare_fields_as_text_and_absent_ones_as_empty() {
    let pod = TestPod::new("ns", "p")
        .on("node-a")
        .running("10.0.0.7")
        .json();
    let check = |selector: &str| {
        FieldSelector::parse(selector)
            .unwrap()
            .matches(|f| field_value(&pod, f))
    };
    assert!(check("spec.nodeName=node-a"));
    assert!(check("spec.nodeName==node-a,status.phase=Running"));
    assert!(check("spec.nodeName!=node-b"));
    assert!(!check("spec.nodeName=node-b"));
    assert!(!check("status.phase!=Running"));
    assert!(check("metadata.namespace=ns,metadata.name=p"));
    assert!(check("spec.schedulerName="), "absent is empty");
    assert!(check(""));
    for bad in ["spec.nodeName", "=x", "a,"] {
        assert!(FieldSelector::parse(bad).is_err(), "{bad}");
    }
    let unsupported = FieldSelector::parse("spec.nodeName=a,metadata.labels=x").unwrap();
    let err = unsupported
        .check_supported(|f| super::store::PODS.selectable(f))
        .unwrap_err();
    assert_eq!(err, "field label not supported: metadata.labels");
}

fn pod(name: &str, node: &str) -> Value {
    TestPod::new("knowton-tenant-acme", name)
        .tenant("acme")
        .on(node)
        .running("10.0.0.7")
        .json()
}

async fn get(fake: &FakeKube, path: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{}{path}", fake.url()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_filter_page_and_resume_from_their_continue_token() {
    let fake = FakeKube::start().await;
    for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1"), ("d", "n1")] {
        fake.put_pod(pod(name, node));
    }
    fake.put_pod(TestPod::new("other", "e").on("n1").json());

    let (status, all) = get(&fake, "/api/v1/pods").await;
    assert_eq!(status, 200);
    assert_eq!(
        (all["kind"].as_str(), all["apiVersion"].as_str()),
        (Some("PodList"), Some("v1"))
    );
    assert_eq!(
        all["metadata"]["resourceVersion"],
        fake.resource_version().to_string()
    );
    assert_eq!(
        names(&all),
        ["a", "b", "c", "d", "e"],
        "namespace, then name order"
    );
    assert!(
        all["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );

    let (_, in_ns) = get(&fake, "/api/v1/namespaces/knowton-tenant-acme/pods").await;
    assert_eq!(names(&in_ns), ["a", "b", "c", "d"]);
    let (_, on_n1) = get(
        &fake,
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&labelSelector=knowton.io%2Ftenant",
    )
    .await;
    assert_eq!(names(&on_n1), ["a", "c", "d"]);

    // Pages of two, consistent at the first page's version despite a write.
    let (_, first) = get(&fake, "/api/v1/namespaces/knowton-tenant-acme/pods?limit=2").await;
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 2);
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    fake.delete_pod("knowton-tenant-acme", "c");
    let (_, second) = get(
        &fake,
        &format!("/api/v1/namespaces/knowton-tenant-acme/pods?limit=2&continue={token}"),
    )
    .await;
    assert_eq!(names(&second), ["c", "d"], "as of the first page");
    assert!(second["metadata"].get("continue").is_none());
    assert_eq!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );

    // Once compacted, the token has expired.
    fake.compact();
    let (status, gone) = get(
        &fake,
        &format!("/api/v1/namespaces/knowton-tenant-acme/pods?limit=2&continue={token}"),
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(
        (
            gone["kind"].as_str(),
            gone["reason"].as_str(),
            gone["code"].as_u64()
        ),
        (Some("Status"), Some("Expired"), Some(410))
    );

    let (status, bad) = get(&fake, "/api/v1/pods?fieldSelector=metadata.labels%3Dx").await;
    assert_eq!((status, bad["reason"].as_str()), (400, Some("BadRequest")));
    let (status, _) = get(&fake, "/api/v1/pods?labelSelector=a%20b").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn get_answers_the_object_or_a_not_found_status() {
    let fake = FakeKube::start().await;
    let stored = fake.put_pod(pod("a", "n1"));
    let (status, body) = get(&fake, "/api/v1/namespaces/knowton-tenant-acme/pods/a").await;
    assert_eq!(status, 200);
    assert_eq!(body, stored);
    assert_eq!(body["kind"], "Pod");
    assert!(
        body["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(body["metadata"]["creationTimestamp"].is_string());

    let replaced = fake.put_pod(pod("a", "n2"));
    assert_eq!(
        replaced["metadata"]["uid"], stored["metadata"]["uid"],
        "same object"
    );
    assert!(
        replaced["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > stored["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
    );

    let (status, body) = get(&fake, "/api/v1/namespaces/knowton-tenant-acme/pods/zz").await;
    assert_eq!(status, 404);
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "pods \"zz\" not found");
    let (status, body) = get(&fake, "/api/v1/widgets").await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(404)));
}

/// Reads watch events until `n` arrived (bookmarks left out unless `bookmarks`).
async fn events(response: &mut reqwest::Response, n: usize, bookmarks: bool) -> Vec<Value> {
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("a watch event within 5s")
            .unwrap()
            .expect("the watch still open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(at) = buffer.find('\n') {
            let line: String = buffer.drain(..=at).collect();
            let event: Value = serde_json::from_str(&line).unwrap();
            if bookmarks || event["type"] != "BOOKMARK" {
                out.push(event);
            }
        }
    }
    out
}

fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_watch_sees_objects_enter_and_leave_its_selectors() {
    let fake = FakeKube::start().await;
    fake.put_pod(pod("a", "n1"));
    let rv = fake.resource_version();
    fake.put_pod(pod("b", "n1"));

    // From a resourceVersion: only what changed after it.
    let url = format!(
        "{}/api/v1/pods?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dn1&timeoutSeconds=30",
        fake.url()
    );
    let mut watch = http().get(&url).send().await.unwrap();
    assert_eq!(watch.status(), 200);
    assert_eq!(
        summary(&events(&mut watch, 1, false).await),
        [("ADDED".into(), "b".into())]
    );

    fake.put_pod(pod("a", "n1"));
    fake.put_pod(pod("a", "n2")); // moved off the selector
    fake.put_pod(pod("a", "n1")); // and back
    fake.put_pod(pod("x", "n2")); // never matches
    fake.delete_pod("knowton-tenant-acme", "b");
    let seen = events(&mut watch, 4, false).await;
    assert_eq!(
        summary(&seen),
        [
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "a".into()),
            ("ADDED".into(), "a".into()),
            ("DELETED".into(), "b".into()),
        ]
    );
    let rv_of = |e: &Value| {
        e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        seen.windows(2).all(|w| rv_of(&w[0]) < rv_of(&w[1])),
        "increasing versions"
    );
    assert_eq!(
        seen[1]["object"]["spec"]["nodeName"], "n1",
        "the object as last seen"
    );
    assert_eq!(
        rv_of(&seen[3]),
        fake.resource_version(),
        "deleted at the deletion's version"
    );

    // Without a resourceVersion: the current objects first, as ADDED.
    let mut fresh = http().get(format!("{}/api/v1/namespaces/knowton-tenant-acme/pods?watch=1&labelSelector=knowton.io%2Ftenant%3Dacme", fake.url())).send().await
        .unwrap();
    assert_eq!(
        summary(&events(&mut fresh, 2, false).await),
        [("ADDED".into(), "a".into()), ("ADDED".into(), "x".into())]
    );
}

#[tokio::test]
async fn watches_send_bookmarks_end_on_time_and_expire_after_compaction() {
    let fake = FakeKube::start_with_bookmarks_every(Duration::from_millis(50)).await;
    fake.put_pod(pod("a", "n1"));
    let rv = fake.resource_version();
    let mut watch = http().get(format!(
        "{}/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1",
        fake.url()
    )).send().await
    .unwrap();
    fake.put_pod(pod("z", "n9"));
    let seen = events(&mut watch, 2, true).await;
    let bookmark = seen.iter().find(|e| e["type"] == "BOOKMARK").unwrap();
    assert_eq!(bookmark["object"]["kind"], "Pod");
    assert_eq!(bookmark["object"]["apiVersion"], "v1");
    let marked: u64 = bookmark["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(marked >= rv);
    // timeoutSeconds=1: the stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while watch.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the watch ended after its timeout");

    fake.put_pod(pod("b", "n1"));
    fake.compact();
    let mut old = http()
        .get(format!(
            "{}/api/v1/pods?watch=true&resourceVersion={rv}",
            fake.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        200,
        "the real API server answers a watch with an ERROR event"
    );
    let error = &events(&mut old, 1, false).await[0];
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    // From the current version a watch is fine.
    let now = fake.resource_version();
    let ok = http()
        .get(format!(
            "{}/api/v1/pods?watch=true&resourceVersion={now}&timeoutSeconds=1",
            fake.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn the_stats_summary_is_what_the_test_set_and_down_means_unreachable() {
    let fake = FakeKube::start().await;
    let path = "/api/v1/nodes/n1/proxy/stats/summary";
    let (status, body) = get(&fake, path).await;
    assert_eq!((status, body["reason"].as_str()), (404, Some("NotFound")));
    fake.set_stats_summary("n1", json!({"node": {"nodeName": "n1"}, "pods": []}));
    assert_eq!(
        get(&fake, path).await,
        (200, json!({"node": {"nodeName": "n1"}, "pods": []}))
    );
    assert_eq!(fake.requests_to(path), 2);

    fake.down().await;
    assert!(
        http()
            .get(format!("{}{path}", fake.url()))
            .send()
            .await
            .is_err()
    );
    fake.up().await;
    assert_eq!(get(&fake, path).await.0, 200);
}
