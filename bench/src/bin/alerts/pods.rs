//! The simulated pods, in processes of their own: one per agent, as the
//! pods of a node run beside that node's agent. A process holds a node's
//! listeners and the agent's connections to them (three descriptors or so
//! a pod), so 10,000 pods fit under a descriptor limit of 20,000 however
//! many there are.
//!
//! The bench starts each pod host as `knowton-bench-alerts --pod-host K`
//! and talks to it over its standard input and output, a line each way:
//! the host prints its pods' URLs, one a line, then `ready`; each command
//! (`<pod> healthy`, `<pod> jitter <ms>`, `<pod> slow <ms>`,
//! `<pod> status <code>`, `<pod> crash`, `<pod>` the pod's place in the
//! host) is answered `ok` once applied, or `error <why>`. The host exits at
//! the end of its input, so a bench that dies leaves none behind.
//!
//! A host runs at a lower priority (nice 10). The pods stand for tenant
//! workloads on other machines; here they share two cores with the
//! coordinator and the agent, and a probe round makes a thousand of them
//! answer at once: at equal priority that burst would be counted against
//! the coordinator's and the agent's latencies.

use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use knowton_coordinator::sim::{Behaviour, SimPod};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{Mutex, mpsc};

/// Pod `i`'s address: its own loopback address, 250 to a /24.
pub fn address(i: usize) -> anyhow::Result<Ipv4Addr> {
    Ok(Ipv4Addr::new(
        127,
        0,
        u8::try_from(1 + i / 250).context("too many pods for 127.0.0.0/8")?,
        u8::try_from(1 + i % 250)?,
    ))
}

/// How much lower a pod host's priority is than the bench's.
const POD_NICE: i32 = 10;

/// What a pod is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Set(Behaviour),
    /// Its listener closes and its connections are reset.
    Crash,
}

impl Command {
    fn render(self) -> anyhow::Result<String> {
        let ms = |d: Duration| d.as_millis();
        Ok(match self {
            Command::Set(Behaviour::Healthy) => "healthy".into(),
            Command::Set(Behaviour::Jitter(d)) => format!("jitter {}", ms(d)),
            Command::Set(Behaviour::Slow(d)) => format!("slow {}", ms(d)),
            Command::Set(Behaviour::Status(code)) => format!("status {code}"),
            Command::Crash => "crash".into(),
            Command::Set(other) => bail!("a pod host is not told {other:?}"),
        })
    }

    fn parse(words: &[&str]) -> anyhow::Result<Command> {
        let millis = |s: Option<&&str>| -> anyhow::Result<Duration> {
            let s = s.context("milliseconds missing")?;
            Ok(Duration::from_millis(
                s.parse()
                    .with_context(|| format!("{s:?}: not milliseconds"))?,
            ))
        };
        Ok(match words {
            ["healthy"] => Command::Set(Behaviour::Healthy),
            ["jitter", rest @ ..] => Command::Set(Behaviour::Jitter(millis(rest.first())?)),
            ["slow", rest @ ..] => Command::Set(Behaviour::Slow(millis(rest.first())?)),
            ["status", code] => Command::Set(Behaviour::Status(
                code.parse()
                    .with_context(|| format!("{code:?}: not a status"))?,
            )),
            ["crash"] => Command::Crash,
            _ => bail!("unknown command {:?}", words.join(" ")),
        })
    }
}

/// The pods of host `host` of `hosts`: every `hosts`-th of `pods`.
fn members(host: usize, hosts: usize, pods: usize) -> impl Iterator<Item = usize> {
    (host..pods).step_by(hosts.max(1))
}

/// The host's side: starts its pods, prints their URLs, then applies
/// commands until its input ends.
pub async fn serve(
    host: usize,
    hosts: usize,
    pods: usize,
    healthy: Behaviour,
) -> anyhow::Result<()> {
    rustix::process::nice(POD_NICE).context("lower the pod host's priority")?;
    let mut held = Vec::new();
    let mut out = std::io::stdout().lock();
    for i in members(host, hosts, pods) {
        let ip = address(i)?;
        let pod = SimPod::try_start(ip, 0).with_context(|| format!("bind a pod on {ip}"))?;
        pod.set(healthy).await;
        // Well within every plan's users.
        pod.update_metrics(|m| m.users = Some(1.0));
        writeln!(out, "{}", pod.url())?;
        held.push(pod);
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    // Standard input is read on a thread of its own: a line at a time,
    // and its end ends the host.
    let (tx, mut rx) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let reply = match apply(&held, &line).await {
            Ok(()) => "ok".to_owned(),
            Err(err) => format!("error {err:#}"),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

async fn apply(pods: &[SimPod], line: &str) -> anyhow::Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (pod, command) = words.split_first().context("empty command")?;
    let pod: usize = pod.parse().with_context(|| format!("{pod:?}: not a pod"))?;
    let pod = pods
        .get(pod)
        .with_context(|| format!("no pod {pod} (of {})", pods.len()))?;
    match Command::parse(command)? {
        Command::Set(behaviour) => pod.set(behaviour).await,
        Command::Crash => pod.crash().await,
    }
    Ok(())
}

/// One pod host, seen from the bench.
struct Host {
    _child: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
}

impl Host {
    async fn line(&mut self) -> anyhow::Result<String> {
        self.output
            .next_line()
            .await?
            .context("the pod host exited (see its log)")
    }
}

/// Every simulated pod, across its hosts.
pub struct Pods {
    hosts: Vec<Mutex<Host>>,
    /// Pod `i`'s URL.
    pub urls: Vec<String>,
}

impl Pods {
    /// Starts `hosts` pod hosts (this same binary with `--pod-host`) for
    /// `pods` pods, each answering as `healthy`; their errors go to
    /// `log_dir/pods-K.log`.
    pub async fn start(
        hosts: usize,
        pods: usize,
        healthy: Behaviour,
        log_dir: &Path,
    ) -> anyhow::Result<Pods> {
        let exe = std::env::current_exe().context("this binary's path")?;
        let mut started = Vec::with_capacity(hosts);
        let mut urls = vec![String::new(); pods];
        for k in 0..hosts {
            let log = std::fs::File::create(log_dir.join(format!("pods-{k}.log")))?;
            let mut command = tokio::process::Command::new(&exe);
            command
                .args(["--pod-host", &k.to_string()])
                .args(["--agents", &hosts.to_string()])
                .args(["--pods", &pods.to_string()]);
            if let Behaviour::Jitter(most) = healthy {
                command.args(["--jitter", &format!("{}ms", most.as_millis())]);
            }
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("start pod host {k}"))?;
            let input = child.stdin.take().context("pod host input")?;
            let output = BufReader::new(child.stdout.take().context("pod host output")?).lines();
            let mut host = Host {
                _child: child,
                input,
                output,
            };
            for i in members(k, hosts, pods) {
                let url = host.line().await.with_context(|| format!("pod host {k}"))?;
                urls[i] = url;
            }
            let ready = host.line().await?;
            anyhow::ensure!(ready == "ready", "pod host {k}: {ready:?} instead of ready");
            started.push(Mutex::new(host));
        }
        Ok(Pods {
            hosts: started,
            urls,
        })
    }

    /// Applies `command` to pod `i`, returning once its host has.
    pub async fn send(&self, i: usize, command: Command) -> anyhow::Result<()> {
        let n = self.hosts.len();
        let mut host = self.hosts[i % n].lock().await;
        let line = format!("{} {}\n", i / n, command.render()?);
        host.input.write_all(line.as_bytes()).await?;
        host.input.flush().await?;
        match host.line().await?.as_str() {
            "ok" => Ok(()),
            other => bail!("pod {i}: {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_back() {
        for command in [
            Command::Set(Behaviour::Healthy),
            Command::Set(Behaviour::Jitter(Duration::from_millis(500))),
            Command::Set(Behaviour::Slow(Duration::from_millis(1500))),
            Command::Set(Behaviour::Status(503)),
            Command::Crash,
        ] {
            let line = command.render().unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(Command::parse(&words).unwrap(), command, "{line}");
        }
        assert!(Command::Set(Behaviour::Refuse).render().is_err());
        assert!(Command::parse(&["slow"]).is_err());
        assert!(Command::parse(&["status", "x"]).is_err());
    }

    #[test]
    fn hosts_share_out_every_pod_once() {
        let mut seen: Vec<usize> = (0..3).flat_map(|k| members(k, 3, 10)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // Pod i is the (i / hosts)-th of host i % hosts, as `send` finds it.
        for i in 0..10 {
            assert_eq!(members(i % 3, 3, 10).nth(i / 3), Some(i));
        }
    }
}
