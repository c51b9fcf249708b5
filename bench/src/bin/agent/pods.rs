//! The simulated pods the agent probes, each on a loopback address of its
//! own, the targets file naming them, and the requests they received.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use knowton_coordinator::sim::SimPod;
use serde::Serialize;

/// Pods are on 127.0.x.y, x from 1, y in 1..=250: 250 addresses per x.
const PER_SUBNET: usize = 250;

/// Running pods and the tenant of each.
#[derive(Debug)]
pub struct Pods {
    pods: Vec<(String, String, SimPod)>,
}

/// Requests the pods received so far, all together.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Served {
    pub liveness: u64,
    pub api_health: u64,
    pub metrics: u64,
    pub connections: u64,
}

impl Served {
    pub fn since(self, before: Served) -> Served {
        Served {
            liveness: self.liveness - before.liveness,
            api_health: self.api_health - before.api_health,
            metrics: self.metrics - before.metrics,
            connections: self.connections - before.connections,
        }
    }
}

impl Pods {
    /// Starts `count` healthy pods, pod `i` for tenant `tenants[i % len]`.
    /// Call within a tokio runtime.
    pub fn start(count: usize, tenants: &[String]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            count <= PER_SUBNET * 255,
            "at most {} pods fit on 127.0.1.1-127.0.255.250",
            PER_SUBNET * 255
        );
        let pods = (0..count)
            .map(|i| {
                let x = u8::try_from(1 + i / PER_SUBNET).expect("checked above");
                let y = u8::try_from(1 + i % PER_SUBNET).expect("below 251");
                let ip = Ipv4Addr::new(127, 0, x, y);
                let tenant = tenants[i % tenants.len()].clone();
                let pod = format!("{tenant}-backend-{i:04}");
                (tenant, pod, SimPod::start(ip, 0))
            })
            .collect();
        Ok(Pods { pods })
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Writes the agent's targets file.
    pub fn write_targets(&self, path: &Path) -> anyhow::Result<()> {
        let mut yaml = String::new();
        for (tenant, pod, sim) in &self.pods {
            let _ = writeln!(
                yaml,
                "- {{tenant: {tenant}, pod: {pod}, url: '{}'}}",
                sim.url()
            );
        }
        std::fs::write(path, yaml).with_context(|| format!("failed to write {}", path.display()))
    }

    pub fn served(&self) -> Served {
        let mut served = Served::default();
        for (_, _, sim) in &self.pods {
            served.liveness += sim.requests("/health");
            served.api_health += sim.requests("/api/health");
            served.metrics += sim.requests("/metrics");
            served.connections += sim.connections();
        }
        served
    }
}
