//! Each pod's idle keep-alive connections, one of which is watched between
//! rounds so that a pod closing or resetting it is noticed at once.
//!
//! A probe takes up to [`MAX_IDLE_PER_POD`] connections (API health and
//! its confirmation, liveness, metrics) and gives them back when done. The
//! first one given back is watched: a small task waits for it to become
//! readable, which an idle HTTP/1.1 connection only does when the pod
//! closes it (FIN), resets it (RST) or sends something unasked. The task
//! holds the bare socket and no buffer; taking the connection for the next
//! probe stops it and hands the socket back.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::http::{Closed, Conn};

/// Idle connections kept per pod: the most one probe uses at once.
pub(crate) const MAX_IDLE_PER_POD: usize = 4;

/// A pod's kept connection was closed by the pod while idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleClosed {
    /// The pod's URL, as in its [`crate::discover::Target`].
    pub url: String,
    /// Reset (RST), or an error reading it: the pod's process may be gone.
    /// Otherwise a clean close (FIN, or data then FIN), as a pod's
    /// keep-alive timeout does.
    pub reset: bool,
}

/// The idle connections of every pod, by URL.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    pods: Mutex<HashMap<String, Pool>>,
    /// Where watched connections report their closing; none: not watched.
    events: Option<mpsc::UnboundedSender<IdleClosed>>,
}

#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Conn>,
    watched: Option<Watched>,
}

/// A connection handed to a watching task.
#[derive(Debug)]
struct Watched {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Option<Conn>>,
}

impl Pools {
    pub(crate) fn watching(events: mpsc::UnboundedSender<IdleClosed>) -> Self {
        Pools {
            pods: Mutex::default(),
            events: Some(events),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pool>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `n` idle connections of the pod at `url` (the watched one
    /// last), each still usable.
    pub(crate) async fn take(&self, url: &str, n: usize) -> Vec<Conn> {
        let (mut conns, watched) = {
            let mut pods = self.lock();
            let Some(pool) = pods.get_mut(url) else {
                return Vec::new();
            };
            let keep = pool.idle.len().saturating_sub(n);
            let conns: Vec<Conn> = pool.idle.drain(keep..).collect();
            let watched = if conns.len() < n {
                pool.watched.take()
            } else {
                None
            };
            (conns, watched)
        };
        if let Some(watched) = watched {
            let _ = watched.stop.send(());
            if let Ok(Some(conn)) = watched.task.await {
                conns.push(conn);
            }
        }
        conns.retain(Conn::usable);
        conns
    }

    /// Keeps `conn` for the pod at `url`: watched if no other connection
    /// of the pod is, idle otherwise (up to [`MAX_IDLE_PER_POD`]).
    pub(crate) fn put(&self, url: &str, conn: Conn) {
        let mut pods = self.lock();
        let pool = pods.entry(url.to_owned()).or_default();
        if let Some(events) = &self.events
            && pool.watched.as_ref().is_none_or(|w| w.task.is_finished())
        {
            pool.watched = Some(watch(conn, url.to_owned(), events.clone()));
            return;
        }
        let room = MAX_IDLE_PER_POD - usize::from(self.events.is_some());
        if pool.idle.len() < room {
            pool.idle.push(conn);
        }
    }

    /// Closes the connections of pods whose URL `keep` rejects.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|url, _| keep(url));
    }

    /// Idle connections kept, watched ones included.
    pub(crate) fn len(&self) -> usize {
        self.lock()
            .values()
            .map(|p| {
                p.idle.len()
                    + usize::from(p.watched.as_ref().is_some_and(|w| !w.task.is_finished()))
            })
            .sum()
    }
}

/// Waits for `conn` to be closed by the pod, or to be taken back (or its
/// pool dropped: then the connection is closed).
fn watch(conn: Conn, url: String, events: mpsc::UnboundedSender<IdleClosed>) -> Watched {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = stopped => Some(conn),
            closed = conn.closed() => {
                // A connection a re-check opened and that no probe used
                // since: this pod closes idle connections sooner than it
                // is probed, so a clean close of it is no news.
                let routine = closed == Closed::Clean && conn.quiet();
                if !routine {
                    let _ = events.send(IdleClosed { url, reset: closed == Closed::Reset });
                }
                None
            }
        }
    });
    Watched { stop, task }
}
