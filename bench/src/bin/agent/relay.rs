//! Counting TCP relays between the agent and the coordinator replicas, one
//! per replica: the agent's `--coordinator` names the relays, which pass
//! the bytes through unchanged (mutual TLS stays end to end) and count
//! them each way.
//!
//! That counts exactly what the agent sends its coordinators as it is on
//! the wire (TLS records: HTTP/2 frames, protobuf and TLS overhead; TCP/IP
//! headers excluded) and nothing else: not its probes of the pods, not its
//! log. `/proc/PID/io` `wchar` would not: it counts `write(2)` and
//! `writev(2)` but not `send(2)` or `sendmsg(2)` (which Rust's `TcpStream`
//! uses for a single buffer), and it counts the log and the probes too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A listener on a loopback port that relays every connection to one
/// coordinator replica; stops (connections and all) when dropped.
#[derive(Debug)]
pub struct Relay {
    /// Where the agent connects instead of the replica.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Counts {
    to_coordinator: AtomicU64,
    from_coordinator: AtomicU64,
    connections: AtomicU64,
}

/// Bytes through a relay so far, and the connections it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub to_coordinator: u64,
    pub from_coordinator: u64,
    pub connections: u64,
}

impl Traffic {
    pub fn since(self, before: Traffic) -> Traffic {
        Traffic {
            to_coordinator: self.to_coordinator - before.to_coordinator,
            from_coordinator: self.from_coordinator - before.from_coordinator,
            connections: self.connections - before.connections,
        }
    }

    /// The sum over relays.
    pub fn total(all: &[Traffic]) -> Traffic {
        all.iter().fold(Traffic::default(), |sum, t| Traffic {
            to_coordinator: sum.to_coordinator + t.to_coordinator,
            from_coordinator: sum.from_coordinator + t.from_coordinator,
            connections: sum.connections + t.connections,
        })
    }
}

impl Relay {
    /// Listens on a free loopback port and relays to `upstream`. Call
    /// within a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("failed to bind a relay")?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(accept(listener, upstream, counts.clone()));
        Ok(Relay { addr, counts, task })
    }

    pub fn traffic(&self) -> Traffic {
        let c = &self.counts;
        Traffic {
            to_coordinator: c.to_coordinator.load(Ordering::Relaxed),
            from_coordinator: c.from_coordinator.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes connections until aborted; the connections go with it.
async fn accept(listener: TcpListener, upstream: SocketAddr, counts: Arc<Counts>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((agent, _)) = accepted {
                    counts.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(relay(agent, upstream, counts.clone()));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Passes one connection's bytes both ways until both sides have closed.
async fn relay(agent: TcpStream, upstream: SocketAddr, counts: Arc<Counts>) {
    // The agent sees the refusal as the replica's.
    let Ok(coordinator) = TcpStream::connect(upstream).await else {
        return;
    };
    // No delay added: the agent's and the coordinator's sockets do the same.
    let _ = agent.set_nodelay(true);
    let _ = coordinator.set_nodelay(true);
    let (agent_read, agent_write) = agent.into_split();
    let (coordinator_read, coordinator_write) = coordinator.into_split();
    tokio::join!(
        copy(agent_read, coordinator_write, &counts.to_coordinator),
        copy(coordinator_read, agent_write, &counts.from_coordinator),
    );
}

/// Copies until end of file or an error, counting; then closes the
/// writing side so the other end sees the close.
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counter: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_are_passed_through_and_counted_each_way() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut socket, _) = upstream.accept().await.unwrap();
            let mut request = [0u8; 5];
            socket.read_exact(&mut request).await.unwrap();
            socket.write_all(b"pong!!!").await.unwrap();
            request
        });
        let relay = Relay::start(upstream_addr).await.unwrap();
        let mut client = TcpStream::connect(relay.addr).await.unwrap();
        client.write_all(b"ping!").await.unwrap();
        let mut reply = [0u8; 7];
        client.read_exact(&mut reply).await.unwrap();

        assert_eq!(&echo.await.unwrap(), b"ping!");
        assert_eq!(&reply, b"pong!!!");
        assert_eq!(
            relay.traffic(),
            Traffic {
                to_coordinator: 5,
                from_coordinator: 7,
                connections: 1
            }
        );
    }
}
