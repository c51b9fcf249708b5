//! Node metrics (CPU, memory, disk) through sysinfo.

use knowton_proto::agent::v1::NodeMetrics;
use sysinfo::{Disks, MemoryRefreshKind, System};

/// Keeps the sysinfo state between samples (CPU usage is a difference).
#[derive(Debug)]
pub struct NodeSampler {
    system: System,
    disks: Disks,
}

impl NodeSampler {
    pub fn new() -> Result<Self, sysinfo::Error> {
        Ok(NodeSampler {
            system: System::new()?,
            disks: Disks::new_with_refreshed_list()?,
        })
    }

    pub fn sample(&mut self) -> NodeMetrics {
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        self.disks.refresh(true);
        let root = self
            .disks
            .iter()
            .find(|d| d.mount_point() == std::path::Path::new("/"));
        NodeMetrics {
            cpu_percent: f64::from(self.system.global_cpu_usage()),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk_used_bytes: root.map_or(0, |d| d.total_space() - d.available_space()),
            disk_total_bytes: root.map_or(0, |d| d.total_space()),
        }
    }
}
