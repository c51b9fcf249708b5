//! Backups of a tenant's files and database into a local repository, with
//! real PostgreSQL and Debian's `pg_dump`/`pg_restore`: taken, changed,
//! restored to the earlier state exactly, verified.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use knowton_coordinator::backup::manifest::Content;
use knowton_coordinator::backup::pack;
use knowton_coordinator::backup::repo::Repository;
use knowton_coordinator::backup::seal::Sealer;
use knowton_coordinator::backup::{BackupKind, Backups, TenantRef, open_repository};
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::tenant_data::{TenantData, TenantDatabases, TenantStorage, database_name};
use knowton_tests::backend::postgres_url;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

/// A repository and tenant storage in a temporary directory.
struct Given {
    dir: TempDir,
    data: TenantData,
    backups: Backups,
    tenant: TenantRef,
}

impl Given {
    fn new(data: TenantData, dir: TempDir, key: u8) -> Self {
        let repo = open_repository(
            &format!("file://{}", dir.path().join("repo").display()),
            None,
            &SecretBox::from_key(&[key; 32]),
        )
        .unwrap();
        let slug = format!("t-{}", &Uuid::new_v4().simple().to_string()[..10]);
        Given {
            dir,
            backups: Backups::new(repo, data.clone()),
            data,
            tenant: TenantRef {
                id: Uuid::now_v7(),
                slug,
            },
        }
    }

    fn with_storage() -> Self {
        let dir = TempDir::new().unwrap();
        let storage = TenantStorage::new(dir.path().join("tenants"));
        storage.create("placeholder").unwrap();
        let given = Given::new(
            TenantData {
                databases: None,
                storage: Some(storage.clone()),
            },
            dir,
            1,
        );
        storage.create(&given.tenant.slug).unwrap();
        given
    }

    fn files(&self) -> PathBuf {
        self.dir.path().join("tenants").join(&self.tenant.slug)
    }

    fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The same, writing every chunk into a pack of its own.
    fn with_a_pack_per_chunk(mut self) -> Self {
        let repo = self.backups.repository().clone().with_pack_size(1);
        self.backups = Backups::new(repo, self.data.clone());
        self
    }

    /// The chunks the tenant's index lists.
    async fn chunk_ids(&self) -> std::collections::HashSet<String> {
        self.backups
            .repository()
            .chunk_ids(self.tenant.id)
            .await
            .unwrap()
    }

    /// The pack objects (data and meta) the tenant has.
    /// The packs written whole: not a write's staging file (`<pack>#<n>`,
    /// renamed to the pack once complete), which a wait for packs once
    /// took for a pack, so that one landed after the prunes it awaited.
    fn packs(&self) -> Vec<PathBuf> {
        let root = self
            .repo_dir()
            .join(format!("tenants/{}/packs", self.tenant.id));
        let mut out = Vec::new();
        for kind in std::fs::read_dir(root).into_iter().flatten() {
            for shard in std::fs::read_dir(kind.unwrap().path()).unwrap() {
                for pack in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                    let pack = pack.unwrap().path();
                    if !pack.file_name().unwrap().to_string_lossy().contains('#') {
                        out.push(pack);
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// Every path under `root` with its kind, mode, size, mtime and content
/// hash (or link target).
fn tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                pending.push(path.clone());
                format!("dir {mode:o}")
            } else {
                let hash = Sha256::digest(std::fs::read(&path).unwrap());
                format!(
                    "file {mode:o} {} {}.{} {}",
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    knowton_common::hex(&hash)
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough
/// for the byte counts to mean something.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_restored_exactly_as_they_were_and_the_next_backup_uploads_what_changed() {
    files_round_trip(Given::with_storage()).await;
}

/// The same through a real S3 server (moto): signed requests, write-once
/// puts by `If-None-Match`, listing by prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_through_s3() {
    let s3 = knowton_tests::s3::TestS3::start().await;
    let mut given = Given::with_storage();
    given.backups = Backups::new(
        Repository::new(
            Arc::new(s3.store("knowton-backups")),
            Sealer::new(&SecretBox::from_key(&[1; 32])),
            format!("s3://{}/knowton-backups", s3.bucket()),
        ),
        given.data.clone(),
    );
    let first = files_round_trip(given).await;
    let listed: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(s3.store("knowton-backups").list(None))
            .await
            .unwrap();
    assert!(
        listed
            .iter()
            .any(|o| o.location.as_ref().ends_with(&first.to_string())),
        "the manifest is in the bucket"
    );
}

/// Backs up a tree, changes about 1% of it, backs up again, restores
/// both; returns the first backup's id.
async fn files_round_trip(given: Given) -> Uuid {
    let files = given.files();
    // 40 files of 100 KiB to 600 KiB, nested; a read-only file, an
    // executable, an empty file, an empty directory, a read-only
    // directory, a symbolic link and a name that is not UTF-8.
    for i in 0..40u64 {
        let len = 100 * 1024 + (i as usize % 6) * 100 * 1024;
        write(
            &files.join(format!("docs/{}/file-{i}.bin", i % 4)),
            &noise(i, len),
            0o640,
        );
    }
    write(&files.join("readonly.txt"), b"do not touch", 0o400);
    write(&files.join("bin/run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&files.join("empty"), b"", 0o600);
    std::fs::create_dir_all(files.join("empty-dir/inner")).unwrap();
    write(&files.join("locked/inside.txt"), b"inside", 0o644);
    std::fs::set_permissions(files.join("locked"), std::fs::Permissions::from_mode(0o500)).unwrap();
    std::os::unix::fs::symlink("docs/0/file-0.bin", files.join("link")).unwrap();
    write(
        &files.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1 name",
        0o644,
    );
    let before = tree(&files);

    let first = given
        .backups
        .run(&given.tenant, BackupKind::Storage)
        .await
        .unwrap();
    let total: u64 = before.len() as u64;
    assert!(first.transfer.new_chunks >= 40, "{:?}", first.transfer);
    assert!(total > 45);

    // Change about 1% of the bytes: one file rewritten in part, one
    // removed, one added.
    let changed = files.join("docs/1/file-1.bin");
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes[1000..1100].copy_from_slice(&[0u8; 100]);
    write(&changed, &bytes, 0o640);
    std::fs::remove_file(files.join("docs/2/file-2.bin")).unwrap();
    write(&files.join("docs/new.bin"), &noise(999, 50 * 1024), 0o600);
    let second = given
        .backups
        .run(&given.tenant, BackupKind::Storage)
        .await
        .unwrap();
    assert!(
        second.transfer.bytes_read < first.transfer.bytes_read / 10,
        "unchanged files are not read again: {:?} then {:?}",
        first.transfer,
        second.transfer
    );
    assert!(
        second.transfer.bytes_written < first.transfer.bytes_written / 10,
        "{:?} then {:?}",
        first.transfer,
        second.transfer
    );
    assert_eq!(second.transfer.new_chunks, 2, "{:?}", second.transfer);

    let listed = given.backups.list(given.tenant.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|b| b.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );
    assert!(given.backups.verify(&first).await.is_empty());

    given
        .backups
        .restore_storage(&first, &given.tenant)
        .await
        .unwrap();
    assert_eq!(tree(&files), before, "the first backup's files, exactly");

    given
        .backups
        .restore_storage(&second, &given.tenant)
        .await
        .unwrap();
    let after = tree(&files);
    assert!(!after.contains_key(b"docs/2/file-2.bin".as_slice()));
    assert!(after.contains_key(b"docs/new.bin".as_slice()));
    // Nothing left beside the tenant's directory.
    let beside: Vec<_> = std::fs::read_dir(given.dir.path().join("tenants"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside.len(), 2, "{beside:?}");
    first.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_foreign_objects_are_named_by_verification_and_refused_by_restore() {
    let given = Given::with_storage().with_a_pack_per_chunk();
    let files = given.files();
    for i in 0..3u64 {
        write(&files.join(format!("f{i}")), &noise(i, 300 * 1024), 0o644);
    }
    let backup = given
        .backups
        .run(&given.tenant, BackupKind::Storage)
        .await
        .unwrap();
    let Content::Storage { entries, .. } = &backup.content else {
        panic!("a storage backup");
    };
    let chunks = given
        .backups
        .repository()
        .chunks(given.tenant.id)
        .await
        .unwrap();
    // The pack holding the first chunk of the `i`th file, and where in it.
    let chunk_file = |i: usize| {
        let id = match &entries[i].node {
            knowton_coordinator::backup::manifest::Node::File { chunks, .. } => {
                chunks[0].id.clone()
            }
            other => panic!("{other:?}"),
        };
        let at = chunks.locate(&id).unwrap().clone();
        let path = pack::pack_path(given.tenant.id, at.kind, &at.pack);
        (given.repo_dir().join(&path), path, at)
    };
    let (flipped, flipped_name, at) = chunk_file(0);
    let mut bytes = std::fs::read(&flipped).unwrap();
    let middle = (at.offset + u64::from(at.length) / 2) as usize;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    let (deleted, deleted_name, _) = chunk_file(1);
    assert_ne!(deleted, flipped, "a pack per chunk");
    std::fs::remove_file(&deleted).unwrap();

    let problems = given.backups.verify(&backup).await;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&flipped_name) && p.contains("does not authenticate")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains(&deleted_name)),
        "{problems:?}"
    );

    std::fs::remove_dir_all(&files).unwrap();
    let refused = given
        .backups
        .restore_storage(&backup, &given.tenant)
        .await
        .unwrap_err();
    assert!(
        knowton_common::error_chain(&refused).contains(&flipped_name)
            || knowton_common::error_chain(&refused).contains(&deleted_name),
        "{}",
        knowton_common::error_chain(&refused)
    );
    assert!(!files.exists(), "a refused restore writes nothing");

    // The same repository read with another key: the manifest is named.
    let other = open_repository(
        &format!("file://{}", given.repo_dir().display()),
        None,
        &SecretBox::from_key(&[2; 32]),
    )
    .unwrap();
    let err = Backups::new(other, TenantData::default())
        .list(given.tenant.id)
        .await
        .unwrap_err();
    let message = knowton_common::error_chain(&err);
    assert!(
        message.contains(&format!("tenants/{}/backups/storage/", given.tenant.id))
            && message.contains("does not authenticate"),
        "{message}"
    );
}

async fn admin(server: &str, database: &str) -> PgConnection {
    let url = url_with_database(server, database);
    PgConnection::connect(&url).await.unwrap()
}

fn url_with_database(server: &str, database: &str) -> String {
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

async fn rows(conn: &mut PgConnection) -> Vec<(i32, String)> {
    sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_is_restored_to_its_backup_and_into_a_new_tenant() {
    let Some(server) = postgres_url() else {
        eprintln!("TEST_DATABASE_URL is not set: database backups are not tested");
        return;
    };
    let databases = TenantDatabases::connect(&server, Uuid::new_v4())
        .await
        .unwrap();
    let dir = TempDir::new().unwrap();
    let given = Given::new(
        TenantData {
            databases: Some(databases.clone()),
            storage: None,
        },
        dir,
        3,
    );
    let name = database_name(&given.tenant.slug);
    databases
        .create(
            given.tenant.id,
            &given.tenant.slug,
            "Pw0123456789abcdefghijklmnopqrstuv",
        )
        .await
        .unwrap();
    let mut conn = admin(&server, &name).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET ROLE \"{name}\"; \
         CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL); \
         INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 5000) i; \
         CREATE SCHEMA app; CREATE TABLE app.\"Mixed Case\" (v jsonb); \
         INSERT INTO app.\"Mixed Case\" VALUES ('{{\"a\": 1}}'), (NULL);"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let earlier = rows(&mut conn).await;

    let backup = given
        .backups
        .run(&given.tenant, BackupKind::Database)
        .await
        .unwrap();
    let Content::Database { tables, .. } = &backup.content else {
        panic!("a database backup");
    };
    assert_eq!(
        tables
            .iter()
            .map(|t| (t.table.as_str(), t.rows))
            .collect::<Vec<_>>(),
        [("app.\"Mixed Case\"", 2), ("public.notes", 5000)]
    );

    sqlx::raw_sql(
        "UPDATE notes SET body = 'changed' WHERE id % 7 = 0; \
         DELETE FROM notes WHERE id > 4000; \
         INSERT INTO notes VALUES (9001, 'added later');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_ne!(rows(&mut conn).await, earlier);
    conn.close().await.unwrap();

    given
        .backups
        .restore_database(&backup, &given.tenant)
        .await
        .unwrap();
    let mut conn = admin(&server, &name).await;
    assert_eq!(rows(&mut conn).await, earlier);
    let (again, _) = knowton_coordinator::backup::database::table_checks(&mut conn)
        .await
        .unwrap();
    assert_eq!(&again, tables, "row counts and checksums as backed up");
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'notes'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(owner, name);
    conn.close().await.unwrap();

    // Into another tenant: its own role owns what is restored.
    let copy = TenantRef {
        id: Uuid::now_v7(),
        slug: format!("{}-copy", given.tenant.slug),
    };
    let copy_name = database_name(&copy.slug);
    databases
        .create(copy.id, &copy.slug, "Pw0123456789abcdefghijklmnopqrstuw")
        .await
        .unwrap();
    given
        .backups
        .restore_database(&backup, &copy)
        .await
        .unwrap();
    let mut conn = admin(&server, &copy_name).await;
    assert_eq!(rows(&mut conn).await, earlier);
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'notes'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(owner, copy_name);
    conn.close().await.unwrap();

    // A second backup of an unchanged database uploads almost nothing.
    let again = given
        .backups
        .run(&given.tenant, BackupKind::Database)
        .await
        .unwrap();
    assert!(
        again.transfer.new_chunks <= 1,
        "an unchanged dump dedupes: {:?}",
        again.transfer
    );

    databases
        .drop(given.tenant.id, &given.tenant.slug)
        .await
        .unwrap();
    databases.drop(copy.id, &copy.slug).await.unwrap();
}

/// Pruning keeps exactly the policy's backups, marks what nothing
/// references, deletes it only at a later prune, and never deletes a chunk
/// a kept backup, or a backup still being written, uses: a pack that a
/// kept backup uses in part stays, its other chunks leave the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_the_policy_and_sweeps_only_unreferenced_chunks() {
    use knowton_coordinator::backup::retention::Retention;
    let given = Given::with_storage();
    let files = given.files();
    write(&files.join("same"), &noise(1, 200 * 1024), 0o644);
    let mut backups = Vec::new();
    for version in 0..3u64 {
        write(
            &files.join("changing"),
            &noise(100 + version, 200 * 1024),
            0o644,
        );
        backups.push(
            given
                .backups
                .run(&given.tenant, BackupKind::Storage)
                .await
                .unwrap(),
        );
    }
    let data: Vec<_> = backups
        .iter()
        .map(|b| b.content.data_chunks().cloned().collect::<Vec<_>>())
        .collect();
    let same = data[0]
        .iter()
        .find(|c| data[2].contains(c))
        .unwrap()
        .id
        .clone();
    let first_version = data[0].iter().find(|c| c.id != same).unwrap().id.clone();
    assert_eq!(
        given.chunk_ids().await.len(),
        7,
        "one shared, three versions, three listings"
    );
    assert_eq!(given.packs().len(), 6, "a data and a meta pack per backup");
    let shared_pack = given
        .backups
        .repository()
        .chunks(given.tenant.id)
        .await
        .unwrap()
        .locate(&same)
        .unwrap()
        .clone();
    let keep_one: Retention = "daily=1".parse().unwrap();
    let no_grace = std::time::Duration::ZERO;

    let first = given
        .backups
        .prune(given.tenant.id, keep_one, no_grace)
        .await
        .unwrap();
    assert_eq!(
        (
            first.kept,
            first.deleted_backups,
            first.marked_chunks,
            first.deleted_chunks
        ),
        (1, 2, 4, 0),
        "two versions and two listings marked: {first:?}"
    );
    let listed = given.backups.list(given.tenant.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|b| b.id).collect::<Vec<_>>(),
        [backups[2].id]
    );
    assert_eq!(given.chunk_ids().await.len(), 7, "marked, not yet deleted");

    // A backup under way uses the first version's chunk again before the
    // sweep, and has not written its manifest yet.
    let writer = given.backups.chunk_writer(given.tenant.id).await.unwrap();
    let rescued = writer.put(noise(100, 200 * 1024)).await.unwrap();
    assert_eq!(rescued.id, first_version);
    writer.finish().await.unwrap();

    let second = given
        .backups
        .prune(given.tenant.id, keep_one, no_grace)
        .await
        .unwrap();
    assert_eq!(
        (second.kept, second.deleted_backups, second.deleted_chunks),
        (1, 0, 3),
        "the unused version and both listings go, the rescued one stays: {second:?}"
    );
    let left = given.chunk_ids().await;
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(left.contains(&rescued.id) && left.contains(&same));
    // The first backup's data pack held the shared chunk and the first
    // version: partly referenced, it stays, and the shared chunk reads.
    let chunks = given
        .backups
        .repository()
        .chunks(given.tenant.id)
        .await
        .unwrap();
    assert_eq!(chunks.locate(&same), Some(&shared_pack));
    assert_ne!(
        chunks.locate(&rescued.id).unwrap().pack,
        shared_pack.pack,
        "the rescued copy is the new one"
    );
    assert_eq!(
        chunks.get(&rescued.id).await.unwrap(),
        noise(100, 200 * 1024)
    );
    assert!(given.backups.verify(&backups[2]).await.is_empty());
    assert_eq!(
        given.packs().len(),
        4,
        "the second backup's packs and the first's meta pack are gone"
    );

    // With a grace period, a fresh mark is not swept.
    let third = given
        .backups
        .prune(
            given.tenant.id,
            keep_one,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(third.deleted_chunks, 0, "{third:?}");
    assert_eq!(given.chunk_ids().await.len(), 4);
}

/// A run that stops after writing packs but before its manifest (as a
/// crash would) leaves no backup listed, and its packs, which no index
/// names yet, are marked by one prune and removed by the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_before_its_manifest_leaves_nothing_listed_and_pruning_removes_it() {
    use knowton_coordinator::backup::retention::Retention;
    let given = Given::with_storage().with_a_pack_per_chunk();
    let writer = given.backups.chunk_writer(given.tenant.id).await.unwrap();
    for seed in 0..3 {
        writer.put(noise(seed, 100 * 1024)).await.unwrap();
    }
    // Packs are written beside the run: stopped once they have landed,
    // with no finish (no index) and no manifest.
    knowton_tests::eventually::eventually(
        std::time::Duration::from_secs(30),
        "the packs written",
        || std::future::ready((given.packs().len() == 3).then_some(())),
    )
    .await;
    drop(writer);
    assert!(
        given
            .backups
            .list(given.tenant.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(given.chunk_ids().await.is_empty(), "no index names them");
    let policy: Retention = "daily=1".parse().unwrap();
    for _ in 0..2 {
        given
            .backups
            .prune(given.tenant.id, policy, std::time::Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(given.packs(), Vec::<PathBuf>::new());
}

/// Of a tree of many small files, a backup after 1% of them changed
/// writes about 1% again: the files' chunks dedupe, and so does the
/// listing of the files unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_after_one_percent_changed_writes_about_one_percent() {
    let given = Given::with_storage();
    let files = given.files();
    for i in 0..400u64 {
        write(
            &files.join(format!("d{}/f{i:04}.bin", i % 20)),
            &noise(i, 16 * 1024 + (i as usize % 7) * 1024),
            0o644,
        );
    }
    let first = given
        .backups
        .run(&given.tenant, BackupKind::Storage)
        .await
        .unwrap();
    for i in (0..400u64).step_by(100) {
        write(
            &files.join(format!("d{}/f{i:04}.bin", i % 20)),
            &noise(10_000 + i, 16 * 1024 + (i as usize % 7) * 1024),
            0o644,
        );
    }
    let second = given
        .backups
        .run(&given.tenant, BackupKind::Storage)
        .await
        .unwrap();
    assert_eq!(second.transfer.new_chunks, 4, "{:?}", second.transfer);
    assert_eq!(
        second.transfer.reused_chunks, 0,
        "unchanged files are not read"
    );
    assert!(
        second.transfer.bytes_written * 100 < first.transfer.bytes_written * 3,
        "{:?} then {:?}",
        first.transfer,
        second.transfer
    );
    assert!(given.backups.verify(&second).await.is_empty());
}

/// A repository that fails in the middle of a database backup: the run
/// fails naming the object it could not write, `pg_dump` does not outlive
/// it, no backup is listed, and the next run (the repository mended)
/// succeeds and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_backup_the_repository_fails_leaves_no_backup_and_the_next_one_succeeds() {
    let Some(server) = postgres_url() else {
        eprintln!("TEST_DATABASE_URL is not set: database backups are not tested");
        return;
    };
    let databases = TenantDatabases::connect(&server, Uuid::new_v4())
        .await
        .unwrap();
    let given = Given::new(
        TenantData {
            databases: Some(databases.clone()),
            storage: None,
        },
        TempDir::new().unwrap(),
        4,
    );
    let name = database_name(&given.tenant.slug);
    databases
        .create(
            given.tenant.id,
            &given.tenant.slug,
            "Pw0123456789abcdefghijklmnopqrstux",
        )
        .await
        .unwrap();
    let mut conn = admin(&server, &name).await;
    // About 12 MB of dump: several chunks, more than a pipe holds.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET ROLE \"{name}\"; CREATE TABLE blobs (id int, body text); \
         INSERT INTO blobs SELECT i, repeat(md5(i::text), 20) FROM generate_series(1, 20000) i;"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    // Every data pack shard is a file, so no pack can be written (the
    // tests run as root: permissions would not stop it).
    let chunks = given
        .repo_dir()
        .join(format!("tenants/{}/packs/data", given.tenant.id));
    std::fs::create_dir_all(&chunks).unwrap();
    for shard in 0..=255u8 {
        std::fs::write(chunks.join(format!("{shard:02x}")), b"").unwrap();
    }
    let failed = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        given.backups.run(&given.tenant, BackupKind::Database),
    )
    .await
    .expect("the backup ends")
    .unwrap_err();
    let message = knowton_common::error_chain(&failed);
    assert!(
        message.contains("failed to write tenants/") && message.contains("/packs/data/"),
        "{message}"
    );
    assert!(
        given
            .backups
            .list(given.tenant.id)
            .await
            .unwrap()
            .is_empty()
    );
    let watcher = sqlx::PgPool::connect(&server).await.unwrap();
    knowton_tests::eventually::eventually(
        std::time::Duration::from_secs(10),
        "pg_dump's session ends with the failed run",
        || {
            let (watcher, name) = (watcher.clone(), name.clone());
            async move {
                let dumping: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = $1 AND application_name = 'pg_dump'",
                )
                .bind(name)
                .fetch_one(&watcher)
                .await
                .unwrap();
                (dumping == 0).then_some(())
            }
        },
    )
    .await;

    std::fs::remove_dir_all(&chunks).unwrap();
    let backup = given
        .backups
        .run(&given.tenant, BackupKind::Database)
        .await
        .unwrap();
    assert!(backup.transfer.new_chunks >= 3, "{:?}", backup.transfer);
    assert!(given.backups.verify(&backup).await.is_empty());
    assert_eq!(given.backups.list(given.tenant.id).await.unwrap().len(), 1);
    databases
        .drop(given.tenant.id, &given.tenant.slug)
        .await
        .unwrap();
}
