//! Each tenant's own database and files, on the machine's real PostgreSQL
//! server as the tenants' server (`--tenant-database-url`), with SQLite and
//! PostgreSQL as the coordinator's store: made at provisioning (a failure
//! leaves neither record nor role nor database), kept at deprovisioning
//! (the role can no longer log in), dropped at purge.
//!
//! Roles and databases belong to the whole server, not to a test's schema:
//! every test uses slugs of its own and purges what it made.

use std::future::Future;

use knowton_coordinator::tenant_data::database_name;
use knowton_coordinator::tenant_data::scram::verifier_with;
use knowton_tests::cluster::database_addr;
use knowton_tests::proxy::TcpProxy;
use knowton_tests::{Db, TestCoordinator, on_every_backend, postgres_url, tenant_request};
use reqwest::{Method, StatusCode};
use sqlx::PgPool;

on_every_backend!(with given_tenant_server:
    a_tenant_gets_a_private_database_kept_when_deprovisioned_and_dropped_when_purged,
    a_provisioning_that_fails_half_way_leaves_no_role_database_or_record,
    databases_of_interrupted_provisionings_are_dropped_once_old,
);

/// A coordinator on `db` whose tenants' databases live on the test
/// PostgreSQL server, and an administrative pool on that server.
async fn given_tenant_server<F, Fut>(db: Db, test: F)
where
    F: FnOnce(TestCoordinator, PgPool) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(server) = tenants_server() else {
        return;
    };
    let kt = TestCoordinator::start_and(db, |args| {
        args.tenant_data.tenant_database_url = Some(server.clone());
    })
    .await;
    let admin = PgPool::connect(&server).await.unwrap();
    test(kt, admin).await;
}

/// The PostgreSQL server of the tenants' databases: the test database's
/// (`None`, said once, without `TEST_DATABASE_URL`).
fn tenants_server() -> Option<String> {
    let server = postgres_url();
    if server.is_none() {
        eprintln!("TEST_DATABASE_URL is not set: tenants' databases are not tested");
    }
    server
}

/// A slug no other test (or earlier run) uses.
fn fresh_slug(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

async fn role(admin: &PgPool, name: &str) -> Option<(bool, Option<String>)> {
    sqlx::query_as("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(name)
        .fetch_optional(admin)
        .await
        .unwrap()
}

/// The database's owner and access list, if it exists.
async fn database(admin: &PgPool, name: &str) -> Option<(String, String)> {
    sqlx::query_as(
        "SELECT pg_get_userbyid(datdba)::text, coalesce(datacl::text, '') \
         FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(admin)
    .await
    .unwrap()
}

async fn a_tenant_gets_a_private_database_kept_when_deprovisioned_and_dropped_when_purged(
    kt: TestCoordinator,
    admin: PgPool,
) {
    let slug = fresh_slug("data");
    let name = database_name(&slug);
    kt.provision(&slug, "basic").await;

    let (owner, acl) = database(&admin, &name)
        .await
        .expect("the tenant's database");
    assert_eq!(owner, name, "owned by the tenant's role");
    assert!(
        !acl.contains("=c") && !acl.contains("=Tc"),
        "PUBLIC may not connect: {acl}"
    );
    let (can_login, password) = role(&admin, &name).await.expect("the tenant's role");
    assert!(can_login);
    let password = password.unwrap();
    assert!(
        password.starts_with("SCRAM-SHA-256$4096:"),
        "stored as a SCRAM verifier: {password}"
    );
    let files = kt.db.dir.path().join("tenants").join(&slug);
    assert!(files.is_dir(), "{} made", files.display());

    // Deprovisioned: the data stays, the role can no longer log in.
    let gone = kt
        .admin(Method::DELETE, &format!("/api/v1/tenants/{slug}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.body);
    assert_eq!(role(&admin, &name).await.map(|r| r.0), Some(false));
    assert!(database(&admin, &name).await.is_some());
    assert!(files.is_dir());

    // Purged: database, role and files are gone.
    kt.purge(&slug).await;
    assert!(database(&admin, &name).await.is_none());
    assert!(role(&admin, &name).await.is_none());
    assert!(!files.exists());
    kt.stop().await;
}

async fn a_provisioning_that_fails_half_way_leaves_no_role_database_or_record(
    kt: TestCoordinator,
    admin: PgPool,
) {
    // A database of the tenant's name exists that is not the tenant's: the
    // role is made, the database is refused, the role is dropped again and
    // the other database is left alone.
    let slug = fresh_slug("taken");
    let name = database_name(&slug);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let refused = kt
        .admin(
            Method::POST,
            "/api/v1/tenants",
            Some(tenant_request(&slug, "basic")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "tenant_data_conflict");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&name), "{message}");
    assert!(role(&admin, &name).await.is_none(), "the role was dropped");
    assert!(database(&admin, &name).await.is_some(), "not ours: kept");
    let absent = kt
        .admin(Method::GET, &format!("/api/v1/tenants/{slug}"), None)
        .await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    assert!(!kt.db.dir.path().join("tenants").join(&slug).exists());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\"")))
        .execute(&admin)
        .await
        .unwrap();

    // The record cannot be written (its domain is taken): the database and
    // role made for it are dropped.
    let first = fresh_slug("first");
    kt.provision(&first, "basic").await;
    let second = fresh_slug("second");
    let mut request = tenant_request(&second, "basic");
    request["domain"] = tenant_request(&first, "basic")["domain"].clone();
    let refused = kt
        .admin(Method::POST, "/api/v1/tenants", Some(request))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "domain_taken");
    let second_name = database_name(&second);
    assert!(database(&admin, &second_name).await.is_none());
    assert!(role(&admin, &second_name).await.is_none());
    assert!(!kt.db.dir.path().join("tenants").join(&second).exists());

    kt.purge(&first).await;
    kt.stop().await;
}

/// The tenants' database server cut off while a tenant is deprovisioned:
/// the answer names the failed step, and the tenant is deprovisioned all
/// the same (its health no longer served, its record so marked);
/// deprovisioning again once the server is back disables the role. (The
/// coordinator's store is SQLite: the behaviour does not depend on it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deprovisioning_the_database_server_refuses_still_stops_the_tenant() {
    let Some(server) = tenants_server() else {
        return;
    };
    let direct = database_addr(&server);
    let proxy = TcpProxy::start(direct).await;
    let via_proxy = server.replacen(&direct.to_string(), &proxy.addr.to_string(), 1);
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.tenant_data.tenant_database_url = Some(via_proxy);
    })
    .await;
    let admin = PgPool::connect(&server).await.unwrap();
    let slug = fresh_slug("cut");
    let name = database_name(&slug);
    kt.provision(&slug, "basic").await;

    proxy.cut();
    let refused = kt
        .admin(Method::DELETE, &format!("/api/v1/tenants/{slug}"), None)
        .await;
    let (code, _) = refused.error(StatusCode::BAD_GATEWAY);
    assert_eq!(code, "tenant_data_error");
    let tenant = kt
        .admin(Method::GET, &format!("/api/v1/tenants/{slug}"), None)
        .await;
    assert_eq!(tenant.body["status"], "deprovisioned", "{}", tenant.body);
    assert_eq!(
        kt.monitoring_health(&slug).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(role(&admin, &name).await.map(|r| r.0), Some(true));

    proxy.restore();
    let again = kt
        .admin(Method::DELETE, &format!("/api/v1/tenants/{slug}"), None)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(role(&admin, &name).await.map(|r| r.0), Some(false));
    kt.purge(&slug).await;
    kt.stop().await;
}

/// What a provisioning killed between its database and its record leaves:
/// a role and a database marked for a tenant id by `installation`,
/// `age_seconds` ago.
async fn left_behind(admin: &PgPool, slug: &str, installation: &str, age_seconds: i64) {
    let name = database_name(slug);
    let made_at = chrono::Utc::now().timestamp() - age_seconds;
    let tenant = uuid::Uuid::now_v7();
    for sql in [
        format!("CREATE ROLE \"{name}\" LOGIN"),
        format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""),
        format!(
            "COMMENT ON DATABASE \"{name}\" IS 'knowton tenant {tenant} {made_at} {installation}'"
        ),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(admin)
            .await
            .unwrap();
    }
}

/// The leader drops, every hour, the databases of provisionings that never
/// recorded their tenant once they are ten minutes old; a younger one (a
/// provisioning under way elsewhere), a recorded tenant's, one not made
/// by a coordinator and one another installation made (its tenants are in
/// another store: CI ran the SQLite and PostgreSQL variants of this test
/// at once on one server, and each dropped the other's) stay.
async fn databases_of_interrupted_provisionings_are_dropped_once_old(
    kt: TestCoordinator,
    admin: PgPool,
) {
    let installation = kt
        .db
        .scalar("SELECT value FROM meta WHERE key = 'installation_id'")
        .await
        .expect("the coordinator recorded its installation id");
    let (old, young) = (fresh_slug("old"), fresh_slug("young"));
    left_behind(&admin, &old, &installation, 3600).await;
    left_behind(&admin, &young, &installation, 60).await;
    let elsewhere = fresh_slug("elsewhere");
    left_behind(&admin, &elsewhere, &uuid::Uuid::new_v4().to_string(), 3600).await;
    let recorded = fresh_slug("kept");
    kt.provision(&recorded, "basic").await;
    let theirs = database_name(&fresh_slug("theirs"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{theirs}\"")))
        .execute(&admin)
        .await
        .unwrap();

    let lifecycle = kt.running_state().service;
    let dropped = lifecycle
        .drop_unrecorded_databases(std::time::Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(dropped, 1, "the old one, and only it");
    let old_name = database_name(&old);
    assert!(database(&admin, &old_name).await.is_none());
    assert!(role(&admin, &old_name).await.is_none());
    let young_name = database_name(&young);
    assert!(database(&admin, &young_name).await.is_some());
    assert!(database(&admin, &database_name(&recorded)).await.is_some());
    assert!(database(&admin, &theirs).await.is_some());
    let elsewhere_name = database_name(&elsewhere);
    assert!(database(&admin, &elsewhere_name).await.is_some());

    for name in [young_name, theirs, elsewhere_name] {
        // One statement each: DROP DATABASE runs outside a transaction.
        for sql in [
            format!("DROP DATABASE \"{name}\""),
            format!("DROP ROLE IF EXISTS \"{name}\""),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .unwrap();
        }
    }
    kt.purge(&recorded).await;
    kt.stop().await;
}

/// PostgreSQL's own verifier of a password is the reference for ours:
/// made by the server, read back, and computed again with its salt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_scram_verifier_is_the_one_postgresql_computes() {
    let Some(server) = tenants_server() else {
        return;
    };
    let admin = PgPool::connect(&server).await.unwrap();
    let name = database_name(&fresh_slug("scram"));
    let mut conn = admin.acquire().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE \"{name}\" PASSWORD 'Pencil0123456789abcdefXYZ'"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let (_, theirs) = role(&admin, &name).await.unwrap();
    let theirs = theirs.unwrap();
    let (iterations, salt) = theirs
        .strip_prefix("SCRAM-SHA-256$")
        .and_then(|rest| rest.split_once('$'))
        .and_then(|(params, _)| params.split_once(':'))
        .unwrap();
    use base64::Engine as _;
    let salt = base64::engine::general_purpose::STANDARD
        .decode(salt)
        .unwrap();
    let ours = verifier_with(
        "Pencil0123456789abcdefXYZ",
        &salt,
        iterations.parse().unwrap(),
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE \"{name}\"")))
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(ours, theirs);
}

/// Found by following the README: `serve` without `--no-cluster` on a
/// machine with no cluster to infer gave tenants no storage directory (it
/// was on only with `--no-cluster`), so their files had nowhere to live
/// and nothing to back up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_to_infer_tenants_files_live_beside_the_database() {
    if std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    {
        eprintln!("a cluster may be inferred here: not this test's case");
        return;
    }
    let kt = TestCoordinator::start_and(Db::Sqlite, |args| {
        args.kube.no_cluster = false;
        args.tenant_data.tenant_storage_dir = None;
    })
    .await;
    let slug = fresh_slug("files");
    kt.provision(&slug, "basic").await;
    let dir = kt.db.dir.path().join("tenants").join(&slug);
    assert!(dir.is_dir(), "{} exists", dir.display());
    kt.stop().await;
}
