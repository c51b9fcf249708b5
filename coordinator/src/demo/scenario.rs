//! The demo's tenants, their simulated pods, and what happens to them when.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use knowton_common::Plan;
use tokio::sync::watch;

use super::DemoError;
use super::console::Console;
use crate::provision::{LifecycleError, ProvisionRequest, TenantLifecycle};
use crate::sim::{Behaviour, SimPod};

/// One simulated tenant.
#[derive(Debug, Clone, Copy)]
pub(super) struct TenantSketch {
    pub slug: &'static str,
    pub name: &'static str,
    pub plan: Plan,
    pub pods: usize,
    /// Registered users each pod reports: well within the plan's limit.
    pub users: f64,
}

pub(super) const TENANTS: [TenantSketch; 5] = [
    TenantSketch {
        slug: "acme",
        name: "Acme Corp",
        plan: Plan::Enterprise,
        pods: 2,
        users: 300.0,
    },
    TenantSketch {
        slug: "globex",
        name: "Globex",
        plan: Plan::Professional,
        pods: 2,
        users: 30.0,
    },
    TenantSketch {
        slug: "initech",
        name: "Initech",
        plan: Plan::Basic,
        pods: 1,
        users: 6.0,
    },
    TenantSketch {
        slug: "umbrella",
        name: "Umbrella Health",
        plan: Plan::Professional,
        pods: 1,
        users: 45.0,
    },
    TenantSketch {
        slug: "hooli",
        name: "Hooli",
        plan: Plan::Basic,
        pods: 1,
        users: 4.0,
    },
];

/// Provisions the demo's tenants through the tenant lifecycle, as the API
/// would (those already there are kept).
pub(super) async fn provision(
    lifecycle: &TenantLifecycle,
    console: &Console,
) -> Result<Vec<(String, Plan)>, DemoError> {
    let mut tenants = Vec::new();
    for t in TENANTS {
        let err = |source| DemoError::Provision {
            slug: t.slug.to_owned(),
            source,
        };
        let plan = match lifecycle.resolve(t.slug).await {
            Ok(id) => lifecycle.get(id).await.map_err(err)?.plan,
            Err(LifecycleError::NotFound(_)) => {
                let request = ProvisionRequest {
                    name: t.name.to_owned(),
                    slug: t.slug.to_owned(),
                    plan: t.plan,
                    admin_email: format!("admin@{}.example.com", t.slug),
                    domain: format!("{}.example.com", t.slug),
                    features: None,
                    branding: None,
                };
                lifecycle.provision(request, "demo").await.map_err(err)?;
                t.plan
            }
            Err(other) => return Err(err(other)),
        };
        tenants.push((t.slug.to_owned(), plan));
    }
    let names: Vec<String> = tenants
        .iter()
        .map(|(slug, plan)| format!("{slug} ({plan})"))
        .collect();
    console.event(format!("tenants: {}", names.join(", ")));
    Ok(tenants)
}

/// The tenant whose pods slow down, and how slow they get: above the
/// default response-time warning (1 s), below critical (2 s).
pub(super) const DEGRADING: &str = "globex";
pub(super) const SLOW: Duration = Duration::from_millis(1500);

/// A running simulated pod of a demo tenant.
#[derive(Debug)]
pub(super) struct DemoPod {
    pub tenant: &'static str,
    pub name: String,
    pub pod: SimPod,
}

/// Starts every tenant's pods on addresses of their own, 127.0.0.2 upwards
/// (Linux routes all of 127/8 to loopback). Where only 127.0.0.1 can be
/// bound (macOS), every pod listens there on a port of its own.
pub(super) fn start_pods() -> std::io::Result<(Vec<DemoPod>, bool)> {
    let mut shared_ip = false;
    let mut pods = Vec::new();
    for tenant in TENANTS {
        for i in 0..tenant.pods {
            let own = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(pods.len()).unwrap_or(0));
            let pod = if shared_ip {
                SimPod::try_start(Ipv4Addr::LOCALHOST, 0)?
            } else {
                match SimPod::try_start(own, 0) {
                    Ok(pod) => pod,
                    Err(err) if err.kind() == std::io::ErrorKind::AddrNotAvailable => {
                        shared_ip = true;
                        SimPod::try_start(Ipv4Addr::LOCALHOST, 0)?
                    }
                    Err(err) => return Err(err),
                }
            };
            pod.update_metrics(|m| m.users = Some(tenant.users));
            pods.push(DemoPod {
                tenant: tenant.slug,
                name: format!("{}-backend-{i}", tenant.slug),
                pod,
            });
        }
    }
    Ok((pods, shared_ip))
}

/// The agent's targets file: a YAML list of {tenant, pod, url}.
pub(super) fn targets_yaml(pods: &[DemoPod]) -> String {
    let mut yaml = String::from("# Written by `knowton-coordinator demo`: the simulated pods.\n");
    for p in pods {
        yaml.push_str(&format!(
            "- tenant: {}\n  pod: {}\n  url: {}\n",
            p.tenant,
            p.name,
            p.pod.url()
        ));
    }
    yaml
}

/// The timeline: [`DEGRADING`]'s pods answer slowly after `degrade_after`,
/// and normally again `recover_after` later. Returns early on `stop`.
pub(super) async fn run(
    pods: Arc<Vec<DemoPod>>,
    degrade_after: Duration,
    recover_after: Duration,
    console: Console,
    mut stop: watch::Receiver<bool>,
) {
    let steps = [
        (degrade_after, Behaviour::Slow(SLOW)),
        (recover_after, Behaviour::Healthy),
    ];
    for (after, behaviour) in steps {
        tokio::select! {
            () = tokio::time::sleep(after) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let affected: Vec<&DemoPod> = pods.iter().filter(|p| p.tenant == DEGRADING).collect();
        for p in &affected {
            p.pod.set(behaviour).await;
        }
        console.event(match behaviour {
            Behaviour::Slow(_) => format!(
                "{DEGRADING} degrading: its {} pods now answer in {:.1} s (response-time warning above 1 s, critical above 2 s)",
                affected.len(),
                SLOW.as_secs_f64()
            ),
            _ => format!("{DEGRADING} recovering: its pods answer at once again"),
        });
    }
}
