//! Test pods: a builder of the Pod JSON the fake API server holds.

use serde_json::{Value, json};

/// A pod as a test describes it, built into the JSON the API server holds:
/// `TestPod::new("ns", "acme-0").tenant("acme").on("node-a").running("10.0.0.7").http_port(3000)`.
#[derive(Debug, Clone)]
pub struct TestPod {
    pod: Value,
}

impl TestPod {
    /// A Pending pod, not yet scheduled, with one container.
    pub fn new(namespace: &str, name: &str) -> TestPod {
        TestPod {
            pod: json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": {}},
                "spec": {"containers": [{"name": "backend", "image": "knowton/backend:2.14.0"}]},
                "status": {"phase": "Pending"},
            }),
        }
    }

    /// Labelled `knowton.io/tenant=<slug>`.
    pub fn tenant(self, slug: &str) -> TestPod {
        self.label("knowton.io/tenant", slug)
    }

    pub fn label(mut self, key: &str, value: &str) -> TestPod {
        self.pod["metadata"]["labels"][key] = json!(value);
        self
    }

    /// Scheduled on `node`.
    pub fn on(mut self, node: &str) -> TestPod {
        self.pod["spec"]["nodeName"] = json!(node);
        self
    }

    /// Running with this IP.
    pub fn running(mut self, ip: &str) -> TestPod {
        self.pod["status"] = json!({
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        });
        self
    }

    /// Running, but without an IP yet.
    pub fn running_without_ip(mut self) -> TestPod {
        self.pod["status"] = json!({"phase": "Running"});
        self
    }

    /// The backend container exposes `port` as the port named `http`.
    pub fn http_port(mut self, port: u16) -> TestPod {
        self.pod["spec"]["containers"][0]["ports"] =
            json!([{"name": "http", "containerPort": port, "protocol": "TCP"}]);
        self
    }

    /// Being deleted (graceful deletion under way).
    pub fn terminating(mut self) -> TestPod {
        self.pod["metadata"]["deletionTimestamp"] =
            json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
        self.pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        self
    }

    pub fn json(self) -> Value {
        self.pod
    }
}
