//! Which IP addresses a tenant-set notification URL may reach: the policy
//! (pure), and the DNS resolver that applies it when connecting.
//!
//! A tenant chooses its webhook and Slack URLs, and the coordinator POSTs
//! to them from inside the cluster: without a policy a tenant could make
//! it reach the cloud's metadata endpoint, the database, the Kubernetes
//! API or any pod (server-side request forgery). [`AddressPolicy::check`]
//! refuses every address that is not a public unicast one, plus the
//! cluster's pod and service ranges, unless the operator opened a range
//! (`--notify-allow-cidr`). [`PolicyResolver`] applies it to the
//! addresses a name resolves to, at each connection (so a name that
//! resolves to a public address when the URL is set and to a private one
//! later, DNS rebinding, is refused too); literal addresses in a URL never
//! reach a resolver and are checked with [`AddressPolicy::check_url`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused: the rule it falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8`.
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`; `fec0::/10`.
    PrivateNetwork,
    /// `100.64.0.0/10` (carrier-grade NAT, often cluster networks).
    SharedAddressSpace,
    /// `169.254.0.0/16` (cloud metadata endpoints), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Special-purpose ranges no receiver lives in (`240.0.0.0/4`,
    /// benchmarking, documentation, IETF protocol assignments, `::/8`,
    /// Teredo, local-use NAT64, discard-only).
    Reserved,
    /// `--cluster-pod-cidr`.
    ClusterPods,
    /// `--cluster-service-cidr`.
    ClusterServices,
}

impl Forbidden {
    pub fn as_str(self) -> &'static str {
        match self {
            Forbidden::Unspecified => "unspecified address",
            Forbidden::ThisNetwork => "this network, 0.0.0.0/8",
            Forbidden::Loopback => "loopback",
            Forbidden::PrivateNetwork => "private network",
            Forbidden::SharedAddressSpace => "shared address space, 100.64.0.0/10",
            Forbidden::LinkLocal => "link-local",
            Forbidden::UniqueLocal => "unique local, fc00::/7",
            Forbidden::Multicast => "multicast",
            Forbidden::Broadcast => "broadcast",
            Forbidden::Reserved => "reserved range",
            Forbidden::ClusterPods => "cluster pod network",
            Forbidden::ClusterServices => "cluster service network",
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address the policy refuses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("address {addr} is not allowed for tenant notifications ({reason})")]
pub struct Refusal {
    pub addr: IpAddr,
    pub reason: Forbidden,
}

/// The addresses tenant notifications may reach: public unicast only,
/// outside the cluster's ranges, except what the operator allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pod_cidrs: Vec<IpNet>,
    service_cidrs: Vec<IpNet>,
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// The built-in rules plus the cluster's pod and service ranges;
    /// `allowed` ranges pass whatever else they fall in.
    pub fn new(pod_cidrs: Vec<IpNet>, service_cidrs: Vec<IpNet>, allowed: Vec<IpNet>) -> Self {
        AddressPolicy {
            pod_cidrs,
            service_cidrs,
            allowed,
        }
    }

    /// Whether a tenant's notification may connect to `addr`. An IPv6
    /// address that carries an IPv4 one (mapped `::ffff:a.b.c.d`, NAT64
    /// `64:ff9b::/96`, 6to4 `2002::/16`) is judged by that IPv4 address too.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refusal> {
        let embedded = embedded_v4(addr).map(IpAddr::V4);
        // The IPv4 part first: its reason is the telling one.
        let forms = || embedded.into_iter().chain(std::iter::once(addr));
        if forms().any(|a| self.allowed.iter().any(|net| net.contains(&a))) {
            return Ok(());
        }
        let cluster = |a: IpAddr| {
            if self.pod_cidrs.iter().any(|net| net.contains(&a)) {
                Some(Forbidden::ClusterPods)
            } else if self.service_cidrs.iter().any(|net| net.contains(&a)) {
                Some(Forbidden::ClusterServices)
            } else {
                None
            }
        };
        match forms().find_map(|a| builtin(a).or_else(|| cluster(a))) {
            Some(reason) => Err(Refusal { addr, reason }),
            None => Ok(()),
        }
    }

    /// Checks the host of `url` when it is a literal address (those never
    /// go through a resolver); a name passes here and is checked by
    /// [`PolicyResolver`] when connecting.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        // The URL parser has normalised literal addresses (`0x7f.1` is
        // `127.0.0.1`, IPv6 in brackets), as the client will connect.
        let host = url.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(addr) => self.check(addr),
            Err(_) => Ok(()),
        }
    }
}

/// The IPv4 address an IPv6 one stands for, if it embeds one.
fn embedded_v4(addr: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = addr else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // NAT64 well-known prefix: the last 32 bits.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        // 6to4: bits 16 to 48.
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        // IPv4-compatible (deprecated), apart from :: and ::1.
        [0, 0, 0, 0, 0, 0, hi, lo] if u32::from(hi) << 16 | u32::from(lo) > 1 => Some(low(hi, lo)),
        _ => None,
    }
}

/// The built-in rule `addr` falls under, if any.
fn builtin(addr: IpAddr) -> Option<Forbidden> {
    match addr {
        IpAddr::V4(v4) => builtin_v4(v4),
        IpAddr::V6(v6) => builtin_v6(v6),
    }
}

fn builtin_v4(v4: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = v4.octets();
    Some(if v4.is_unspecified() {
        Forbidden::Unspecified
    } else if a == 0 {
        Forbidden::ThisNetwork
    } else if v4.is_loopback() {
        Forbidden::Loopback
    } else if v4.is_private() {
        Forbidden::PrivateNetwork
    } else if a == 100 && (b & 0xc0) == 64 {
        Forbidden::SharedAddressSpace
    } else if v4.is_link_local() {
        Forbidden::LinkLocal
    } else if v4.is_multicast() {
        Forbidden::Multicast
    } else if v4.is_broadcast() {
        Forbidden::Broadcast
    } else if a >= 240
        || (a, b, c) == (192, 0, 0)
        || (a, b, c) == (192, 0, 2)
        || (a, b & 0xfe) == (198, 18)
        || (a, b, c) == (198, 51, 100)
        || (a, b, c) == (203, 0, 113)
    {
        Forbidden::Reserved
    } else {
        return None;
    })
}

fn builtin_v6(v6: Ipv6Addr) -> Option<Forbidden> {
    let s = v6.segments();
    Some(if v6.is_unspecified() {
        Forbidden::Unspecified
    } else if v6.is_loopback() {
        Forbidden::Loopback
    } else if v6.is_multicast() {
        Forbidden::Multicast
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Forbidden::UniqueLocal
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Forbidden::LinkLocal
    } else if (s[0] & 0xffc0) == 0xfec0 {
        // Site-local (deprecated): a private network.
        Forbidden::PrivateNetwork
    } else if matches!(s, [0x64, 0xff9b, 0, 0, 0, 0, _, _]) {
        // NAT64 (well-known prefix): judged by its IPv4 part alone.
        return None;
    } else if (s[0] & 0xff00) == 0
        // ::/8 (holds ::ffff:0:0/96, the IPv4-compatible addresses and
        // local-use NAT64, whose IPv4 part was judged first), Teredo,
        // documentation, discard-only.
        || (s[0], s[1]) == (0x2001, 0)
        || (s[0], s[1]) == (0x2001, 0xdb8)
        || (s[0], s[1], s[2], s[3]) == (0x100, 0, 0, 0)
    {
        Forbidden::Reserved
    } else {
        return None;
    })
}

/// Parses address ranges given to `flag` (`10.0.0.0/8`, `fd00::/8`, or
/// one address), adding a message for each bad one to `errors`. Host bits
/// are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_cidrs(flag: &str, values: &[String], errors: &mut Vec<String>) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let net = value
            .parse::<IpNet>()
            .or_else(|_| value.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(net) => out.push(net.trunc()),
            Err(_) => errors.push(format!(
                "{flag} {value:?}: expected an address range such as 10.0.0.0/8 or fd00::/8"
            )),
        }
    }
    out
}

/// Every address a name resolved to was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host}: {}", list(.refusals))]
pub struct HostRefused {
    pub host: String,
    /// The first few refused addresses (never empty).
    pub refusals: Vec<Refusal>,
}

/// Most refused addresses named in one error.
const MAX_NAMED: usize = 4;

fn list(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A name resolved to no address at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to no address")]
pub struct NoAddress {
    pub host: String,
}

/// A DNS resolver (the system's, through `getaddrinfo`) that keeps only the
/// addresses the policy allows, and fails with [`HostRefused`] when none is
/// left. Used by the client of tenant notifications only.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        PolicyResolver { policy }
    }

    /// The addresses of `addrs` the policy allows, or why there is none.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let mut allowed = Vec::new();
        let mut refusals = Vec::new();
        for addr in addrs {
            match self.policy.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(refusal) if refusals.len() < MAX_NAMED => refusals.push(refusal),
                Err(_) => {}
            }
        }
        match (allowed.is_empty(), refusals.is_empty()) {
            (false, _) => Ok(allowed),
            (true, false) => Err(Box::new(HostRefused {
                host: host.to_owned(),
                refusals,
            })),
            (true, true) => Err(Box::new(NoAddress {
                host: host.to_owned(),
            })),
        }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = resolver.filter(&host, addrs)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests;
