//! Readings from /proc about this process and the machine: CPU time and
//! resident memory (Linux only; `None` elsewhere).

use serde::Serialize;
use tokio::time::Instant;

/// CPU time used while a phase ran, in cores (1.0 = one CPU all the time).
#[derive(Debug, Clone, Serialize)]
pub struct CpuUsage {
    /// Every process on the machine (PostgreSQL included).
    pub machine_cores: f64,
    /// This process: coordinator and load generator.
    pub process_cores: f64,
    pub cpus: usize,
}

/// Tick counters from /proc, to compare before and after a phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    at: Instant,
    /// Idle and iowait of all CPUs: measured precisely on tickless kernels,
    /// where the busy counters are only sampled at ticks and miss short
    /// bursts.
    machine_idle_ticks: u64,
    process_ticks: u64,
}

impl CpuSnapshot {
    /// Linux only; `None` elsewhere.
    pub fn take() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait …
        let idle = cpu.get(3)? + cpu.get(4)?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command: utime and stime are 12th
        // and 13th (scaled to the precise run time by the kernel).
        let fields: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let process_ticks =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(CpuSnapshot {
            at: Instant::now(),
            machine_idle_ticks: idle,
            process_ticks,
        })
    }

    /// Usage from `self` to now, assuming the usual 100 ticks per second.
    pub fn usage_since(self) -> Option<CpuUsage> {
        let now = CpuSnapshot::take()?;
        let seconds = now.at.duration_since(self.at).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let cores = |ticks: u64| ticks as f64 / 100.0 / seconds;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let idle = cores(
            now.machine_idle_ticks
                .saturating_sub(self.machine_idle_ticks),
        );
        Some(CpuUsage {
            machine_cores: (cpus as f64 - idle).max(0.0),
            process_cores: cores(now.process_ticks.saturating_sub(self.process_ticks)),
            cpus,
        })
    }
}

/// Resets the process's peak RSS so the next reading covers only what
/// follows (Linux 4.0+; best effort).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS (`VmHWM` in /proc/self/status), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// The process's current RSS (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
