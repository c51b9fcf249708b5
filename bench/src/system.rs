//! Readings from /proc about a process (this one or another) and the
//! machine: CPU time and resident memory (Linux only; `None` elsewhere).

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
        Some(CpuSnapshot {
            at: Instant::now(),
            machine_idle_ticks: machine_idle_ticks()?,
            process_ticks: cpu_ticks(Proc::Own)?,
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

/// A process to read from /proc: this one, or another by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Own,
    Pid(u32),
}

impl Proc {
    fn file(self, name: &str) -> String {
        match self {
            Proc::Own => format!("/proc/self/{name}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{name}"),
        }
    }
}

/// The tick counters of all CPUs together (the `cpu` line of /proc/stat):
/// user nice system idle iowait irq softirq steal …
fn machine_ticks() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(
        stat.lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect(),
    )
}

/// Ticks every CPU spent idle or waiting for I/O.
pub fn machine_idle_ticks() -> Option<u64> {
    let cpu = machine_ticks()?;
    Some(cpu.get(3)? + cpu.get(4)?)
}

/// User plus system ticks (1/100 s) a process has used, all its threads
/// together.
pub fn cpu_ticks(proc: Proc) -> Option<u64> {
    cpu_ticks_split(proc).map(|(user, system)| user + system)
}

/// User and system ticks (1/100 s) a process has used, all its threads
/// together.
pub fn cpu_ticks_split(proc: Proc) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(proc.file("stat")).ok()?;
    // Fields after the parenthesised command: utime and stime are 12th
    // and 13th (scaled to the precise run time by the kernel).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// CPU seconds between two tick readings, at the usual 100 ticks a second.
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / 100.0
}

/// Peak RSS (`VmHWM`) of a process, in bytes.
pub fn peak_rss_bytes_of(proc: Proc) -> Option<u64> {
    status_bytes(proc, "VmHWM:")
}

/// Current RSS (`VmRSS`) of a process, in bytes.
pub fn rss_bytes_of(proc: Proc) -> Option<u64> {
    status_bytes(proc, "VmRSS:")
}

/// Of a process's current RSS, the anonymous part (heap, stacks) and the
/// part mapped from files (the binary's and libraries' pages), in bytes.
pub fn rss_parts_of(proc: Proc) -> Option<RssParts> {
    Some(RssParts {
        anon_bytes: status_bytes(proc, "RssAnon:")?,
        file_bytes: status_bytes(proc, "RssFile:")?,
    })
}

/// A process's resident memory by kind ([`rss_parts_of`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RssParts {
    pub anon_bytes: u64,
    pub file_bytes: u64,
}

impl std::ops::Add for RssParts {
    type Output = RssParts;

    fn add(self, o: RssParts) -> RssParts {
        RssParts {
            anon_bytes: self.anon_bytes + o.anon_bytes,
            file_bytes: self.file_bytes + o.file_bytes,
        }
    }
}

/// Resets the process's peak RSS so the next reading covers only what
/// follows (Linux 4.0+; best effort).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS (`VmHWM` in /proc/self/status), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    peak_rss_bytes_of(Proc::Own)
}

/// The process's current RSS (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    rss_bytes_of(Proc::Own)
}

fn status_bytes(proc: Proc, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(proc.file("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU counters of the machine and of some processes at one moment.
#[derive(Debug, Clone)]
pub struct Meter {
    at: Instant,
    machine_idle_ticks: u64,
    process_ticks: Vec<u64>,
}

/// CPU used between a [`Meter`] reading and now.
#[derive(Debug, Clone, Serialize)]
pub struct Spent {
    pub seconds: f64,
    /// Busy cores of the whole machine on average (idle time subtracted).
    pub machine_cores: f64,
    pub cpus: usize,
    /// CPU seconds of each process, in the order they were given.
    pub process_cpu_seconds: Vec<f64>,
}

impl Spent {
    /// Process `i`'s average busy cores over the window.
    pub fn cores(&self, i: usize) -> f64 {
        self.process_cpu_seconds[i] / self.seconds.max(f64::EPSILON)
    }
}

impl Meter {
    /// Reads the machine and `procs`; `None` if any cannot be read.
    pub fn take(procs: &[Proc]) -> Option<Self> {
        Some(Meter {
            at: Instant::now(),
            machine_idle_ticks: machine_idle_ticks()?,
            process_ticks: procs.iter().map(|&p| cpu_ticks(p)).collect::<Option<_>>()?,
        })
    }

    /// What was used from `self` to `later` (taken for the same processes).
    pub fn until(&self, later: &Meter) -> Spent {
        let seconds = later.at.duration_since(self.at).as_secs_f64();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let idle = ticks_to_seconds(
            later
                .machine_idle_ticks
                .saturating_sub(self.machine_idle_ticks),
        );
        Spent {
            seconds,
            machine_cores: (cpus as f64 - idle / seconds.max(f64::EPSILON)).max(0.0),
            cpus,
            process_cpu_seconds: self
                .process_ticks
                .iter()
                .zip(&later.process_ticks)
                .map(|(before, after)| ticks_to_seconds(after.saturating_sub(*before)))
                .collect(),
        }
    }
}

/// Stops a child process: SIGTERM, then up to `grace` to exit, then SIGKILL.
pub async fn terminate(
    child: &mut std::process::Child,
    grace: std::time::Duration,
    what: &str,
) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| anyhow::anyhow!("{what} has no process id"))?;
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            eprintln!(
                "warning: {what} did not stop within {} s; killing it",
                grace.as_secs()
            );
            child.kill()?;
            child.wait()?;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}
