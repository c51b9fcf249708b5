//! `knowton-coordinator demo` in process with short timings (probes every
//! second, globex slow after 2 s for 12 s): what a new user sees must happen.
//! Fresh results for every tenant, the slowdown and the recovery as the REST
//! API shows them, and globex's alert firing then resolving in the webhook log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use knowton_coordinator::demo::{Console, Demo, DemoArgs, DemoTenant};
use knowton_tests::eventually;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_every_tenant_and_an_alert_that_fires_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let any_port = "127.0.0.1:0".parse().unwrap();
    let args = DemoArgs {
        dir: Some(dir.path().join("demo")),
        http_addr: any_port,
        grpc_addr: any_port,
        agent_metrics_addr: any_port,
        degrade_after: Duration::from_secs(2),
        // A slow round takes about 7.5 s (three checks of 1.5 s, two of them
        // confirmed); its results stay in view until the next round's, so the
        // slowdown lasts long enough for a second round to begin.
        recover_after: Duration::from_secs(12),
        interval: Duration::from_secs(1),
        duration: None,
    };
    let (console, mut lines) = Console::channel();
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    let collect = printed.clone();
    // Shown with the failure of the test; ends when the demo has stopped.
    let collector = tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            println!("{line}");
            collect.lock().unwrap().push(line);
        }
    });
    let demo = Demo::start(args, console).await.expect("the demo starts");
    let api = Api {
        http: knowton_coordinator::client::http_client(),
        base: demo.api_url(),
        token: demo.admin_token().to_owned(),
    };
    let printed_has = |needle: &str| printed.lock().unwrap().iter().any(|l| l.contains(needle));

    assert!(printed_has("Working directory"), "the banner comes first");
    assert_eq!(demo.tenants().len(), 5);
    let plans: std::collections::BTreeSet<_> = demo.tenants().iter().map(|t| t.plan).collect();
    assert_eq!(plans.len(), 3, "every plan is shown");

    // Every pod of every tenant, freshly reported through the agent.
    for tenant in demo.tenants() {
        eventually(
            Duration::from_secs(20),
            &format!("fresh results of every pod of {}", tenant.slug),
            || async { api.fresh(tenant).await.then_some(()) },
        )
        .await;
    }
    eventually(Duration::from_secs(10), "the status table", || async {
        printed_has("LAST RESULT").then_some(())
    })
    .await;

    // The slowdown, then the recovery, as the API shows them.
    let degrading = demo
        .tenants()
        .iter()
        .find(|t| t.slug == demo.degrading())
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "globex answering in 1.5 s",
        || async {
            api.slowest_ms(degrading)
                .await
                .filter(|ms| *ms >= 1400.0)
                .map(drop)
        },
    )
    .await;
    assert!(printed_has("globex degrading"));
    eventually(
        Duration::from_secs(40),
        "globex answering at once again",
        || async {
            api.slowest_ms(degrading)
                .await
                .filter(|ms| *ms < 500.0)
                .map(drop)
        },
    )
    .await;
    assert!(printed_has("globex recovering"));

    // The alert: firing, then resolved, in the webhook log and on the console.
    let log = demo.webhook_log();
    let alerts = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("one JSON document per line"))
            .filter(|p| p["alerts"][0]["labels"]["tenant"] == "globex")
            .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(30),
        "a firing alert of globex in the webhook log",
        || async { alerts().iter().any(|s| s == "firing").then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "globex's alert resolved in the webhook log",
        || async {
            let statuses = alerts();
            let fired = statuses.iter().position(|s| s == "firing")?;
            statuses[fired..]
                .iter()
                .any(|s| s == "resolved")
                .then_some(())
        },
    )
    .await;
    assert!(printed_has("ALERT firing") && printed_has("ALERT resolved"));

    demo.stop().await;
    tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .expect("nothing prints once the demo has stopped")
        .unwrap();
    assert!(printed_has("stopped."));
}

/// The demo's REST API, as the admin.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn health(&self, slug: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/monitoring/health", self.base))
            .bearer_auth(&self.token)
            .header("X-Tenant-Slug", slug)
            .send()
            .await
            .expect("the coordinator answers");
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("JSON")
    }

    /// Every pod of `tenant` has a result received in the last 10 s.
    async fn fresh(&self, tenant: &DemoTenant) -> bool {
        let body = self.health(&tenant.slug).await;
        let now = chrono::Utc::now();
        tenant.pods.iter().all(|(name, _)| {
            body["pods"].as_array().into_iter().flatten().any(|p| {
                p["pod"] == name.as_str()
                    && p["liveness"]["ok"] == true
                    && p["receivedAt"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| {
                            now - t.with_timezone(&chrono::Utc) < chrono::TimeDelta::seconds(10)
                        })
            })
        })
    }

    /// The slowest API-health answer of `tenant`'s pods, once all reported.
    async fn slowest_ms(&self, tenant: &DemoTenant) -> Option<f64> {
        let body = self.health(&tenant.slug).await;
        let pods = body["pods"].as_array()?;
        if pods.len() < tenant.pods.len() {
            return None;
        }
        pods.iter()
            .map(|p| p["apiHealth"]["latencyMs"].as_f64())
            .collect::<Option<Vec<f64>>>()?
            .into_iter()
            .reduce(f64::max)
    }
}
