//! The deployment scenarios against a REAL cluster, opt-in: set
//! `KNOWTON_E2E_KUBECONFIG` to a kubeconfig whose user may manage
//! namespaces and the tenant kinds (a kind or k3d cluster will do), and
//! optionally `KNOWTON_E2E_BACKEND_IMAGE` / `KNOWTON_E2E_FRONTEND_IMAGE` /
//! `KNOWTON_E2E_IMAGE_TAG` for images that serve `/health` and
//! `/api/health` on 3000 and 8080. Without the variable each test says it
//! was skipped and passes: no cluster can run on CI machines.
//!
//! What the fake API server stands in for elsewhere is real here: the
//! Deployment controller reports rollouts, the API server's defaulting,
//! validation and server-side apply.

use std::path::PathBuf;
use std::time::Duration;

use knowton_tests::{Db, TestCoordinator, eventually};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(300);

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("KNOWTON_E2E_KUBECONFIG") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!("KNOWTON_E2E_KUBECONFIG is not set: skipping the real-cluster scenario");
            None
        }
    }
}

async fn coordinator(kubeconfig: &std::path::Path) -> TestCoordinator {
    TestCoordinator::start_and(Db::Sqlite, |args| {
        args.kube.no_cluster = false;
        args.kube.kubeconfig = Some(kubeconfig.to_owned());
        args.kube.rollout_timeout_seconds = 240;
        args.kube.verify_timeout_seconds = 5;
        args.kube.cluster.namespace_prefix = "knowton-e2e-".to_owned();
        for (var, field) in [
            (
                "KNOWTON_E2E_BACKEND_IMAGE",
                &mut args.kube.cluster.backend_image,
            ),
            (
                "KNOWTON_E2E_FRONTEND_IMAGE",
                &mut args.kube.cluster.frontend_image,
            ),
            ("KNOWTON_E2E_IMAGE_TAG", &mut args.kube.cluster.image_tag),
        ] {
            if let Ok(value) = std::env::var(var) {
                *field = value;
            }
        }
    })
    .await
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn deployment(kt: &TestCoordinator, slug: &str) -> Value {
    kt.admin(
        Method::GET,
        &format!("/api/v1/tenants/{slug}/deployment"),
        None,
    )
    .await
    .body
}

async fn settled(kt: &TestCoordinator, slug: &str, attempt: i64) -> Value {
    eventually(WAIT, "the deployment to settle", || async {
        let view = deployment(kt, slug).await;
        (view["attempt"].as_i64() >= Some(attempt)
            && matches!(view["phase"].as_str(), Some("ready" | "failed")))
        .then_some(view)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_deployed_previewed_repaired_deprovisioned_and_purged_on_a_real_cluster() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    knowton_coordinator::certs::install_crypto_provider();
    let kt = coordinator(&kubeconfig).await;
    let slug = format!("e2e{}", std::process::id());
    let ns = format!("knowton-e2e-{slug}");
    kt.provision(&slug, "basic").await;
    let view = settled(&kt, &slug, 1).await;
    assert_eq!(view["phase"], "ready", "{view:#}");

    // Nothing differs right after a deployment.
    let preview = kt
        .admin(
            Method::POST,
            &format!("/api/v1/tenants/{slug}/deploy?dryRun=server"),
            None,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    for change in preview.body["changes"].as_array().unwrap() {
        assert_eq!(change["action"], "unchanged", "{change:#}");
    }

    // A hand edit is repaired and recorded.
    let client = client(&kubeconfig).await;
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &knowton_coordinator::deploy::kinds::DEPLOYMENT.api_resource(),
    );
    deployments
        .patch(
            "frontend",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"labels": {"hand": "edit"}}}}}),
            ),
        )
        .await
        .unwrap();
    eventually(WAIT, "the drift repaired", || async {
        let view = deployment(&kt, &slug).await;
        view["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "drift")
            .then_some(())
    })
    .await;

    // Deprovisioned: scaled to zero, namespace kept; purged: namespace gone.
    kt.admin(Method::DELETE, &format!("/api/v1/tenants/{slug}"), None)
        .await;
    let view = settled(&kt, &slug, 2).await;
    assert_eq!(view["phase"], "ready", "{view:#}");
    let namespaces: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &knowton_coordinator::deploy::kinds::NAMESPACE.api_resource(),
    );
    assert!(namespaces.get_opt(&ns).await.unwrap().is_some());
    let reply = kt
        .admin(
            Method::DELETE,
            &format!("/api/v1/tenants/{slug}?purge=true"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    eventually(WAIT, "the namespace gone", || async {
        namespaces
            .get_opt(&ns)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    kt.stop().await;
}
