//! Per-node gauges from the figures the agents send with their batches
//! (one series per connected agent: bounded by the nodes of the cluster).

use std::fmt::Write;

use knowton_proto::agent::v1::NodeMetrics;

use crate::ingest::AgentState;

/// A family: name, help, and its value from a node's figures.
type Gauge = (&'static str, &'static str, fn(&NodeMetrics) -> f64);

/// The gauges of each connected agent's node, in the text exposition format.
pub(crate) fn render(agents: &[AgentState], out: &mut String) {
    let nodes: Vec<_> = agents
        .iter()
        .filter(|a| a.connected)
        .filter_map(|a| {
            Some((
                super::families::esc(&a.node),
                a.node_metrics.as_ref()?.metrics,
            ))
        })
        .collect();
    let gauges: [Gauge; 5] = [
        (
            "knowton_node_cpu_usage_ratio",
            "CPU busy across all cores of the node, 0 to 1, as its agent last sampled it.",
            |m| m.cpu_percent / 100.0,
        ),
        (
            "knowton_node_memory_used_bytes",
            "Memory in use on the node, as its agent last sampled it.",
            |m| m.memory_used_bytes as f64,
        ),
        (
            "knowton_node_memory_total_bytes",
            "Memory of the node.",
            |m| m.memory_total_bytes as f64,
        ),
        (
            "knowton_node_disk_used_bytes",
            "Space in use on the node's root filesystem, as its agent last sampled it.",
            |m| m.disk_used_bytes as f64,
        ),
        (
            "knowton_node_disk_total_bytes",
            "Size of the node's root filesystem.",
            |m| m.disk_total_bytes as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (node, metrics) in &nodes {
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {}", value(metrics));
        }
    }
}

#[cfg(test)]
mod tests {
    use knowton_proto::agent::v1::{Hello, NodeMetrics, ResultBatch};

    use crate::directory::TenantDirectory;
    use crate::ingest::Registry;

    #[test]
    fn connected_agents_nodes_are_gauges_labelled_by_node() {
        let registry = Registry::default();
        let hello = |node: &str| Hello {
            protocol_version: 1,
            node_name: node.to_owned(),
            agent_version: "test".to_owned(),
            session_id: "s".to_owned(),
        };
        let remote = "127.0.0.1:1".parse().unwrap();
        let (a, _) = registry.connect(&hello("node-\"a\""), 1, remote);
        let (b, _) = registry.connect(&hello("node-b"), 1, remote);
        let (_silent, _) = registry.connect(&hello("node-c"), 1, remote);
        let figures = NodeMetrics {
            cpu_percent: 25.0,
            memory_used_bytes: 1024,
            memory_total_bytes: 4096,
            disk_used_bytes: 10,
            disk_total_bytes: 100,
        };
        for conn in [&a, &b] {
            let batch = ResultBatch {
                sequence: 1,
                results: Vec::new(),
                node: Some(figures),
            };
            registry.ingest(conn, batch, &TenantDirectory::default());
        }
        registry.disconnect(&b);
        let mut out = String::new();
        super::render(&registry.agents(), &mut out);
        assert!(
            out.contains("knowton_node_cpu_usage_ratio{node=\"node-\\\"a\\\"\"} 0.25\n"),
            "{out}"
        );
        assert!(out.contains("knowton_node_memory_total_bytes{node=\"node-\\\"a\\\"\"} 4096\n"));
        assert!(
            !out.contains("node-b"),
            "a disconnected agent's node is not shown: {out}"
        );
        assert!(
            !out.contains("node-c"),
            "nor one that sent no figures: {out}"
        );
        assert_eq!(out.matches("# TYPE").count(), 5);
    }
}
