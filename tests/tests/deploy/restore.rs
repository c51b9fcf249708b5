//! A restore of a tenant's data in a cluster holds the tenant at zero
//! replicas: nothing is restored while one of its pods is left, and it is
//! redeployed once the data is back, the job ending only then.

use knowton_tests::eventually_showing;
use knowton_tests::fake_kube::TestPod;

use super::*;

on_every_backend!(db:
    a_database_restore_holds_the_tenant_at_zero_until_its_data_is_back,
    a_redeployment_that_fails_after_the_restore_fails_the_job_naming_it,
);

/// Runs `sql` as the tenant, then reads back its notes.
async fn on_tenant_db(server: &str, database: &str, sql: &str) -> Vec<(i32, String)> {
    knowton_tests::as_tenant(server, database, sql).await;
    knowton_tests::db::notes(server, database).await
}

fn replicas(cluster: &Cluster, slug: &str, name: &str) -> i64 {
    cluster.deployment(slug, name).unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

/// A tenant in the cluster with a database backed up and changed since,
/// and a restore of that database to before the change, just started.
struct Restoring {
    cluster: Cluster,
    kt: TestCoordinator,
    server: String,
    slug: String,
    database: String,
    /// Its notes when backed up, and after the change.
    earlier: Vec<(i32, String)>,
    changed: Vec<(i32, String)>,
    /// The job's path in the API.
    job: String,
}

impl Restoring {
    /// `None` without a PostgreSQL server for tenants' databases. `pod`:
    /// a backend pod of the tenant, running on a node, put there first.
    async fn start(db: Db, prefix: &str, pod: Option<&str>) -> Option<Restoring> {
        let Some(server) = knowton_tests::postgres_url() else {
            eprintln!("TEST_DATABASE_URL is not set: restores of databases are not tested");
            return None;
        };
        let cluster = Cluster::start().await;
        let slug = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let database = format!("tenant_{}", slug.replace('-', "_"));
        let kt = TestCoordinator::start_and(db, |args| {
            cluster.configure(args);
            args.tenant_data.tenant_database_url = Some(server.clone());
        })
        .await;
        cluster.provisioned(&kt, &slug, "basic").await;
        assert_eq!(replicas(&cluster, &slug, "backend"), 1);
        if let Some(pod) = pod {
            // As the Deployment controller would have made it.
            cluster.fake.put_object(
                TestPod::new(&ns(&slug), pod)
                    .tenant(&slug)
                    .label("knowton.io/component", "backend")
                    .on("node-a")
                    .running("10.0.0.7")
                    .json(),
            );
        }
        let earlier = on_tenant_db(
            &server,
            &database,
            "CREATE TABLE notes (id int PRIMARY KEY, body text); \
             INSERT INTO notes SELECT i, 'v1 ' || i FROM generate_series(1, 20) i;",
        )
        .await;
        let started = kt
            .admin(
                Method::POST,
                &format!("/api/v1/tenants/{slug}/backups"),
                Some(json!({"kind": "database"})),
            )
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let listed = kt.finished_backup_run(&slug).await;
        assert_eq!(listed["runs"][0]["status"], "succeeded", "{listed}");
        let backed_up = chrono::Utc::now();
        let changed = on_tenant_db(&server, &database, "UPDATE notes SET body = 'v2';").await;
        assert_ne!(changed, earlier);

        let started = kt
            .admin(
                Method::POST,
                &format!("/api/v1/tenants/{slug}/restore"),
                Some(json!({"at": backed_up, "only": "database"})),
            )
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let job = format!(
            "/api/v1/tenants/{slug}/restores/{}",
            started.body["id"].as_str().unwrap()
        );
        Some(Restoring {
            cluster,
            kt,
            server,
            slug,
            database,
            earlier,
            changed,
            job,
        })
    }

    /// The tenant's notes now.
    async fn notes(&self) -> Vec<(i32, String)> {
        knowton_tests::db::notes(&self.server, &self.database).await
    }

    /// The job once it has ended.
    async fn ended(&self) -> Value {
        eventually_showing(WAIT, "the restore job ends", || async {
            let reply = self.kt.admin(Method::GET, &self.job, None).await;
            match reply.body["status"].as_str() {
                Some("succeeded" | "failed") => Ok(reply.body),
                _ => Err(reply.body.to_string()),
            }
        })
        .await
    }
}

async fn a_database_restore_holds_the_tenant_at_zero_until_its_data_is_back(db: Db) {
    let pod = "backend-7d9f-abcde";
    let Some(given) = Restoring::start(db, "hold", Some(pod)).await else {
        return;
    };
    let Restoring {
        cluster,
        kt,
        slug,
        job,
        ..
    } = &given;

    // Deployed stopped, saying why.
    until_phase(kt, slug, 2, "waiting").await;
    assert_eq!(replicas(cluster, slug, "backend"), 0);
    assert_eq!(replicas(cluster, slug, "frontend"), 0);
    cluster.roll_out_all(slug);
    let held = until_phase(kt, slug, 2, "ready").await;
    assert!(
        held["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("held at zero by restore")),
        "{held:#}"
    );
    // The job waits for the backend's pod, which is still there: it
    // restores nothing while it is. Two of its progress records (every
    // 2 s) after the deployment at zero ended, it still says so, and the
    // rows are still the changed ones.
    let since = chrono::Utc::now();
    let records = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually_showing(
        WAIT,
        "two records of the job waiting for the pod",
        || async {
            let reply = kt.admin(Method::GET, job, None).await;
            let body = &reply.body;
            let updated: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(body["updatedAt"].clone()).unwrap();
            if updated <= since {
                return Err(body.to_string());
            }
            assert_eq!(body["status"], "running", "{body}");
            assert_eq!(body["phase"], "scaling the tenant to zero", "{body}");
            let mut records = records.lock().unwrap();
            records.insert(updated);
            if records.len() >= 2 {
                Ok(())
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    assert_eq!(given.notes().await, given.changed);
    // Nor may a backup start meanwhile: it would hold half the restore.
    let refused = kt
        .admin(
            Method::POST,
            &format!("/api/v1/tenants/{slug}/backups"),
            Some(json!({"kind": "database"})),
        )
        .await;
    assert_eq!(
        refused.error(StatusCode::CONFLICT).0,
        "restore_running",
        "{}",
        refused.body
    );
    cluster
        .fake
        .delete_object("v1", "Pod", Some(&ns(slug)), pod)
        .expect("the pod was there");

    // Then restored, and redeployed: the job ends with that deployment.
    until_phase(kt, slug, 3, "waiting").await;
    assert_eq!(replicas(cluster, slug, "backend"), 1);
    assert_eq!(
        given.notes().await,
        given.earlier,
        "restored before the tenant is redeployed"
    );
    let running = kt.admin(Method::GET, job, None).await;
    assert_eq!(running.body["status"], "running", "{}", running.body);
    cluster.roll_out_all(slug);
    let done = given.ended().await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let deployed = deployment_of(kt, slug).await;
    assert_eq!(deployed["attempt"], 3, "{deployed:#}");
    assert_eq!(deployed["phase"], "ready", "{deployed:#}");
    // Its database goes with it: the server outlives the test.
    kt.purge(slug).await;
}

/// The data is back but the tenant's rollout after it does not finish:
/// the job fails saying the data was restored and why the tenant is not
/// back, and the hold is released (the deployment is no longer at zero).
async fn a_redeployment_that_fails_after_the_restore_fails_the_job_naming_it(db: Db) {
    let Some(given) = Restoring::start(db, "redep", None).await else {
        return;
    };
    let Restoring {
        cluster, kt, slug, ..
    } = &given;
    until_phase(kt, slug, 2, "waiting").await;
    cluster.roll_out_all(slug);
    until_phase(kt, slug, 3, "waiting").await;
    assert_eq!(
        replicas(cluster, slug, "backend"),
        1,
        "the hold is released"
    );
    let generation = cluster.deployment(slug, "backend").unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap();
    cluster.fake.set_status(
        "apps/v1",
        "Deployment",
        &ns(slug),
        "backend",
        json!({
            "observedGeneration": generation, "replicas": 1, "updatedReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"backend-7d9\" has timed out progressing."}],
        }),
    );
    let failed = given.ended().await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["errorCode"], "restore_redeploy_failed", "{failed:#}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("the data was restored (database)")
            && error.contains("progress deadline exceeded"),
        "{error}"
    );
    assert_eq!(given.notes().await, given.earlier);
    // Its database goes with it: the server outlives the test.
    kt.purge(slug).await;
}
