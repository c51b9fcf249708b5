//! The coordinator replicas the agent streams to: the `--coordinator` list
//! parsed, DNS names resolved to all their addresses (bounded), and what
//! changed from one resolution to the next.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Uri;

/// Most replicas streamed to; further addresses are ignored with a warning.
pub const MAX_REPLICAS: usize = 16;

/// How long one DNS lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One entry of `--coordinator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorUrl {
    /// As given, without surrounding spaces.
    pub url: String,
    pub host: Host,
    pub port: u16,
}

/// The host of a [`CoordinatorUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP literal: connected to as is.
    Ip(IpAddr),
    /// A DNS name: every address it resolves to (its IPv4 ones if it has
    /// both families) is a replica, and each replica's certificate must
    /// carry this name.
    Name(String),
}

/// One coordinator replica: where to connect and what its certificate
/// must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub addr: SocketAddr,
    /// The URL it comes from.
    pub url: String,
    /// The name the server certificate is verified against (and sent as
    /// SNI); `None` for an IP literal, verified against that address.
    pub domain: Option<String>,
}

impl Replica {
    /// The URI to connect to: the URL itself for an IP literal, else the
    /// resolved address.
    pub fn endpoint(&self) -> String {
        match self.domain {
            None => self.url.clone(),
            Some(_) => format!("https://{}", self.addr),
        }
    }
}

/// Parses the comma-separated `--coordinator` list; an error names every
/// bad entry. Empty entries (a trailing comma) are skipped; an empty list
/// is refused.
pub fn parse_list(list: &str) -> Result<Vec<CoordinatorUrl>, String> {
    let mut urls = Vec::new();
    let mut bad = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match parse_url(entry) {
            Ok(url) => urls.push(url),
            Err(why) => bad.push(format!("{entry:?} {why}")),
        }
    }
    if !bad.is_empty() {
        return Err(format!("--coordinator: {}", bad.join("; ")));
    }
    if urls.is_empty() {
        return Err(
            "--coordinator: no URL given (expected https://host:port, comma-separated)".to_owned(),
        );
    }
    Ok(urls)
}

fn parse_url(entry: &str) -> Result<CoordinatorUrl, &'static str> {
    let uri: Uri = entry
        .parse()
        .map_err(|_| "is not a URL (expected https://host:port)")?;
    if uri.scheme_str() != Some("https") {
        return Err("must start with https://");
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must have no path or query");
    }
    let port = uri.port_u16().unwrap_or(443);
    if port == 0 {
        return Err("has port 0");
    }
    let host = authority.host();
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Host::Ip(IpAddr::V6(
            v6.parse().map_err(|_| "has an invalid IPv6 address")?,
        ))
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        Host::Ip(ip)
    } else if is_dns_name(host) {
        Host::Name(host.to_ascii_lowercase())
    } else {
        return Err("has an invalid host name");
    };
    Ok(CoordinatorUrl {
        url: entry.to_owned(),
        host,
        port,
    })
}

/// Letters, digits and `-` in dot-separated labels of at most 63
/// characters, 253 at most in all (a trailing dot allowed).
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What changed between the replicas streamed to and a new resolution:
/// the replicas to add, and the addresses to close.
pub fn diff<'a>(
    current: impl IntoIterator<Item = &'a SocketAddr>,
    resolved: &[Replica],
) -> (Vec<Replica>, Vec<SocketAddr>) {
    let current: BTreeSet<SocketAddr> = current.into_iter().copied().collect();
    let next: BTreeSet<SocketAddr> = resolved.iter().map(|r| r.addr).collect();
    let added = resolved
        .iter()
        .filter(|r| !current.contains(&r.addr))
        .cloned()
        .collect();
    let removed = current.difference(&next).copied().collect();
    (added, removed)
}

/// Resolves the URLs, remembering each name's last good answer: a failed
/// lookup keeps the addresses the name had.
#[derive(Debug)]
pub struct Resolver {
    urls: Vec<CoordinatorUrl>,
    last: Vec<BTreeSet<SocketAddr>>,
}

impl Resolver {
    pub fn new(urls: Vec<CoordinatorUrl>) -> Self {
        let last = vec![BTreeSet::new(); urls.len()];
        Resolver { urls, last }
    }

    /// Whether any URL names a host to resolve.
    pub fn has_names(&self) -> bool {
        self.urls.iter().any(|u| matches!(u.host, Host::Name(_)))
    }

    /// Every replica, at most [`MAX_REPLICAS`], in the order of the URLs
    /// (an address reached by two URLs is taken from the first); and
    /// whether every name resolved this time.
    pub async fn resolve(&mut self) -> (Vec<Replica>, bool) {
        let mut complete = true;
        for (url, last) in self.urls.iter().zip(&mut self.last) {
            let name = match &url.host {
                Host::Ip(ip) => {
                    *last = BTreeSet::from([SocketAddr::new(*ip, url.port)]);
                    continue;
                }
                Host::Name(name) => name,
            };
            match lookup(name, url.port).await {
                Ok(addrs) if !addrs.is_empty() => *last = addrs,
                Ok(_) => {
                    complete = false;
                    tracing::warn!(coordinator = %url.url, kept = last.len(), "the coordinator's name resolved to no address; keeping the last ones");
                }
                Err(err) => {
                    complete = false;
                    tracing::warn!(coordinator = %url.url, kept = last.len(), error = %err, "cannot resolve the coordinator's name; keeping the last addresses");
                }
            }
        }
        (self.replicas(), complete)
    }

    fn replicas(&self) -> Vec<Replica> {
        let mut replicas: Vec<Replica> = Vec::new();
        let mut ignored = 0usize;
        for (url, addrs) in self.urls.iter().zip(&self.last) {
            for addr in addrs {
                if replicas.iter().any(|r| r.addr == *addr) {
                    continue;
                }
                if replicas.len() == MAX_REPLICAS {
                    ignored += 1;
                    continue;
                }
                replicas.push(Replica {
                    addr: *addr,
                    url: url.url.clone(),
                    domain: match &url.host {
                        Host::Ip(_) => None,
                        Host::Name(name) => Some(name.clone()),
                    },
                });
            }
        }
        if ignored > 0 {
            tracing::warn!(
                ignored,
                limit = MAX_REPLICAS,
                "more coordinator addresses than the agent streams to; the others are ignored"
            );
        }
        replicas
    }
}

/// The addresses of `name`: see [`pick`].
async fn lookup(name: &str, port: u16) -> std::io::Result<BTreeSet<SocketAddr>> {
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out"))??;
    Ok(pick(found))
}

/// The replicas among a name's addresses: its IPv4 addresses if it has
/// any, else its IPv6 ones (a dual-stack pod has one of each, and two
/// streams of one agent to the same coordinator would keep replacing each
/// other); the [`MAX_REPLICAS`] lowest at most, so the same ones whatever
/// order the answer comes in, and no more held at a time.
fn pick(found: impl IntoIterator<Item = SocketAddr>) -> BTreeSet<SocketAddr> {
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for addr in found {
        let family = if addr.is_ipv4() { &mut v4 } else { &mut v6 };
        family.insert(addr);
        if family.len() > MAX_REPLICAS {
            family.pop_last();
        }
    }
    if v4.is_empty() { v6 } else { v4 }
}

/// How long until the next resolution: `every` after a complete one;
/// after a failed one `retry`, which doubles up to `every`.
fn next_resolution(complete: bool, retry: &mut Duration, every: Duration) -> Duration {
    if complete {
        *retry = Duration::from_secs(1);
        return every;
    }
    let wait = (*retry).min(every);
    *retry = (*retry * 2).min(every);
    wait
}

/// Publishes the replicas into `replicas` now and after every resolution:
/// every `every`, sooner (from 1 s, doubling) while a name does not
/// resolve. Returns when `replicas` has no receiver left.
pub async fn watch(
    urls: Vec<CoordinatorUrl>,
    every: Duration,
    replicas: watch::Sender<Vec<Replica>>,
) {
    let mut resolver = Resolver::new(urls);
    let mut retry = Duration::from_secs(1);
    loop {
        let (resolved, complete) = resolver.resolve().await;
        replicas.send_if_modified(|current| {
            let changed = *current != resolved;
            *current = resolved;
            changed
        });
        if !resolver.has_names() {
            replicas.closed().await;
            return;
        }
        let wait = next_resolution(complete, &mut retry, every);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = replicas.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests;
