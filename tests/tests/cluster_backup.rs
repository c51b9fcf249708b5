//! Storage backups in a cluster: a tenant's files are read from its
//! volume claim by a short-lived volume pod (`knowton-agent volume`,
//! reached through `pods/exec` on the fake API server, which runs the
//! real agent binary on the claim's directory), incrementally, and
//! restored into the claim; the pod runs on the backend's node and is
//! deleted afterwards; a volume pod that sends what it must not is
//! refused and no backup is recorded.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::Utc;
use knowton_common::volume::{EntryInfo, Kind, Reply};
use knowton_coordinator::backup::manifest::Content;
use knowton_coordinator::backup::{BackupKind, TenantRef, storage};
use knowton_tests::deploy::{Cluster, ns};
use knowton_tests::fake_kube::{Backing, TestPod};
use knowton_tests::process::agent_binary;
use knowton_tests::{Db, TestCoordinator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const FILES: usize = 100;

/// A cluster with the agent's binary for execs, a coordinator deploying
/// to it, and tenant `slug` provisioned with its backend pod on `node-b`
/// and its claim at a directory of the test's.
async fn tenant_on_cluster(slug: &str) -> (Cluster, TestCoordinator, PathBuf) {
    let cluster = Cluster::start().await;
    cluster
        .fake
        .provide_command("knowton-agent", agent_binary());
    let kt = cluster.coordinator(Db::Sqlite).await;
    cluster.provisioned(&kt, slug, "basic").await;
    cluster.fake.put_pod(
        TestPod::new(&ns(slug), "backend-7d9f-x2")
            .tenant(slug)
            .label("knowton.io/component", "backend")
            .on("node-b")
            .running("10.0.0.9")
            .json(),
    );
    let claim = cluster.dir().join(format!("claim-{slug}"));
    std::fs::create_dir_all(&claim).unwrap();
    cluster
        .fake
        .mount_claim(&ns(slug), "tenant-data", Backing::Dir(claim.clone()));
    (cluster, kt, claim)
}

async fn back_up(kt: &TestCoordinator, slug: &str) -> Value {
    let started = kt
        .admin(
            Method::POST,
            &format!("/api/v1/tenants/{slug}/backups"),
            Some(json!({"kind": "storage"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["id"].clone();
    let listed = kt.finished_backup_run(slug).await;
    let run = listed["runs"][0].clone();
    assert_eq!(run["id"], id, "{listed}");
    run
}

/// `seed`'s bytes: distinct per file, so no two files share a chunk.
fn content(seed: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.to_be_bytes()).to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(len);
    out
}

/// Everything under `root`: each path's kind, mode, and a file's
/// modification time and content hash or a link's target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.mode() & 0o7777;
            let shown = if meta.is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                pending.push(path.clone());
                format!("dir {mode:o}")
            } else {
                let hash = knowton_common::hex(&Sha256::digest(std::fs::read(&path).unwrap()));
                let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
                format!("file {mode:o} {mtime} {hash}")
            };
            out.insert(rel, shown);
        }
    }
    out
}

fn fill(claim: &Path) {
    for i in 0..FILES {
        let dir = claim.join(format!("docs/{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("file-{i}.bin"));
        std::fs::write(&path, content(i, 20_000 + i * 37)).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o640][i % 4];
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir_all(claim.join("empty/inside")).unwrap();
    std::fs::set_permissions(claim.join("empty"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(claim.join("caf\u{e9}.txt"), "caf\u{e9}").unwrap();
    // A link to a file outside the volume: backed up as a link, never read.
    std::os::unix::fs::symlink("/etc/passwd", claim.join("passwd")).unwrap();
    std::os::unix::fs::symlink("docs/0", claim.join("latest")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_backed_up_incrementally_by_a_pinned_pod_and_restored_into_its_claim() {
    let (cluster, kt, claim) = tenant_on_cluster("vol").await;
    fill(&claim);

    let first = back_up(&kt, "vol").await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let total: u64 =
        (0..FILES).map(|i| 20_000 + i as u64 * 37).sum::<u64>() + "caf\u{e9}".len() as u64;
    assert_eq!(first["bytesRead"], total, "{first}");

    // The volume pod ran on the backend's node, mounting the claim
    // read-only, and is gone.
    let started = cluster.fake.started_pods();
    assert_eq!(started.len(), 1, "{started:#?}");
    let pod = &started[0];
    assert_eq!(pod["metadata"]["name"], "knowton-volume");
    assert_eq!(pod["spec"]["nodeName"], "node-b");
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"],
        true
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert!(cluster.fake.pod(&ns("vol"), "knowton-volume").is_none());

    // 1% of the files change; a leftover volume pod (a crashed run's) is
    // in the way.
    let changed = claim.join("docs/3/file-3.bin");
    std::fs::write(&changed, content(1_000, 30_000)).unwrap();
    cluster.fake.put_pod(
        TestPod::new(&ns("vol"), "knowton-volume")
            .label("knowton.io/component", "volume")
            .on("node-a")
            .running_without_ip()
            .json(),
    );
    let second = back_up(&kt, "vol").await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        second["bytesRead"], 30_000,
        "only the changed file is read: {second}"
    );
    assert!(
        second["bytesWritten"].as_u64().unwrap() < 40_000,
        "{second}"
    );
    assert_eq!(cluster.fake.started_pods().len(), 2);
    assert!(cluster.fake.pod(&ns("vol"), "knowton-volume").is_none());
    let backed_up = tree(&claim);

    // The tenant's files change again; the backup is restored into the
    // claim: exactly what was backed up, nothing else.
    std::fs::remove_file(claim.join("docs/1/file-1.bin")).unwrap();
    std::fs::write(claim.join("docs/2/file-2.bin"), "overwritten").unwrap();
    std::fs::write(claim.join("stray.txt"), "not in the backup").unwrap();
    std::fs::remove_file(claim.join("passwd")).unwrap();
    let state = kt.running_state();
    let backups = state.backups.as_ref().unwrap().backups();
    let tenant = kt
        .admin(Method::GET, "/api/v1/tenants/vol", None)
        .await
        .body;
    let id = tenant["id"].as_str().unwrap().parse().unwrap();
    let manifest = backups
        .latest(id, BackupKind::Storage, Utc::now())
        .await
        .unwrap()
        .unwrap();
    let into = TenantRef {
        id,
        slug: "vol".to_owned(),
    };
    let written = backups.restore_storage(&manifest, &into).await.unwrap();
    assert_eq!(written, total - 20_000 - 3 * 37 + 30_000);
    assert_eq!(tree(&claim), backed_up);
    let Content::Storage { entries, .. } = &manifest.content else {
        panic!("not a storage backup");
    };
    let problems = storage::compare(&claim, entries, backups.repository().sealer());
    assert!(problems.is_empty(), "{problems:#?}");
    let restorer = &cluster.fake.started_pods()[2];
    assert_eq!(
        restorer["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"],
        false
    );
    assert!(cluster.fake.pod(&ns("vol"), "knowton-volume").is_none());
}

fn entry(path: &str) -> Vec<u8> {
    Reply::Entry(EntryInfo {
        path: path.as_bytes().to_vec(),
        kind: Kind::File,
        mode: 0o644,
        size: 10,
        mtime_ns: 0,
        ctime_ns: 0,
        dev: 1,
        ino: 2,
        target: Vec::new(),
    })
    .encode()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_pod_that_sends_what_it_must_not_is_refused_and_nothing_is_recorded() {
    let (cluster, kt, _claim) = tenant_on_cluster("evil").await;
    let mut oversized = entry("a");
    oversized.extend([b'd', 0x80, 0, 0, 0]);
    let mut escaping = entry("a");
    escaping.extend(entry("../../etc/shadow"));
    let cases = [
        (
            oversized,
            "volume pod knowton-tenant-evil/knowton-volume refused: a frame of 2147483648 bytes, more than the 1048576 allowed",
        ),
        (
            escaping,
            "volume pod knowton-tenant-evil/knowton-volume refused: path \"../../etc/shadow\" refused: a . or .. component",
        ),
    ];
    for (bytes, error) in cases {
        cluster
            .fake
            .mount_claim(&ns("evil"), "tenant-data", Backing::Hostile(bytes));
        let run = back_up(&kt, "evil").await;
        assert_eq!(run["status"], "failed", "{run}");
        assert!(
            run["error"].as_str().unwrap().contains(error),
            "{run}\nexpected: {error}"
        );
        assert!(cluster.fake.pod(&ns("evil"), "knowton-volume").is_none());
    }
    let listed = kt
        .admin(Method::GET, "/api/v1/tenants/evil/backups", None)
        .await
        .body;
    let storage: Vec<&Value> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "storage")
        .collect();
    assert!(storage.is_empty(), "{listed}");
}
