use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn every_non_public_range_is_refused_with_its_reason() {
    let policy = AddressPolicy::default();
    let cases = [
        ("0.0.0.0", Forbidden::Unspecified),
        ("::", Forbidden::Unspecified),
        ("0.1.2.3", Forbidden::ThisNetwork),
        ("127.0.0.1", Forbidden::Loopback),
        ("127.255.255.254", Forbidden::Loopback),
        ("::1", Forbidden::Loopback),
        ("10.0.0.1", Forbidden::PrivateNetwork),
        ("172.16.0.1", Forbidden::PrivateNetwork),
        ("172.31.255.255", Forbidden::PrivateNetwork),
        ("192.168.1.1", Forbidden::PrivateNetwork),
        ("fec0::1", Forbidden::PrivateNetwork),
        ("100.64.0.1", Forbidden::SharedAddressSpace),
        ("100.127.255.255", Forbidden::SharedAddressSpace),
        ("169.254.169.254", Forbidden::LinkLocal),
        ("fe80::1", Forbidden::LinkLocal),
        ("febf::1", Forbidden::LinkLocal),
        ("fc00::1", Forbidden::UniqueLocal),
        ("fd12:3456::1", Forbidden::UniqueLocal),
        ("224.0.0.1", Forbidden::Multicast),
        ("239.255.255.250", Forbidden::Multicast),
        ("ff02::1", Forbidden::Multicast),
        ("255.255.255.255", Forbidden::Broadcast),
        ("240.0.0.1", Forbidden::Reserved),
        ("192.0.0.8", Forbidden::Reserved),
        ("198.18.0.1", Forbidden::Reserved),
        ("203.0.113.9", Forbidden::Reserved),
        ("2001:db8::1", Forbidden::Reserved),
        ("2001::1", Forbidden::Reserved),
        ("100::1", Forbidden::Reserved),
        // IPv4 carried in IPv6: judged by the IPv4 address.
        ("::ffff:127.0.0.1", Forbidden::Loopback),
        ("::ffff:10.0.0.1", Forbidden::PrivateNetwork),
        ("::ffff:169.254.169.254", Forbidden::LinkLocal),
        ("::ffff:0.0.0.0", Forbidden::Unspecified),
        ("::ffff:100.64.1.1", Forbidden::SharedAddressSpace),
        ("::ffff:255.255.255.255", Forbidden::Broadcast),
        ("::ffff:224.0.0.1", Forbidden::Multicast),
        ("::10.0.0.1", Forbidden::PrivateNetwork),
        ("64:ff9b::a9fe:a9fe", Forbidden::LinkLocal),
        ("2002:7f00:1::1", Forbidden::Loopback),
        ("2002:c0a8:101::1", Forbidden::PrivateNetwork),
        // Public IPv4 in a non-routable IPv6 form.
        ("::ffff:8.8.8.8", Forbidden::Reserved),
        ("::8.8.8.8", Forbidden::Reserved),
    ];
    for (addr, reason) in cases {
        assert_eq!(
            policy.check(ip(addr)),
            Err(Refusal {
                addr: ip(addr),
                reason
            }),
            "{addr}"
        );
    }
}

#[test]
fn public_unicast_addresses_pass() {
    let policy = AddressPolicy::default();
    for addr in [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ] {
        assert_eq!(policy.check(ip(addr)), Ok(()), "{addr}");
    }
}

#[test]
fn cluster_ranges_are_refused_and_allowed_ranges_pass_whatever_else_they_are() {
    let policy = AddressPolicy::new(
        nets(&["34.64.0.0/14"]),
        nets(&["34.118.224.0/20", "2600:1900::/44"]),
        nets(&["127.0.0.0/8", "10.20.0.0/16", "34.65.1.0/24"]),
    );
    let refused = |addr: &str| policy.check(ip(addr)).unwrap_err().reason;
    assert_eq!(refused("34.64.3.4"), Forbidden::ClusterPods);
    assert_eq!(refused("::ffff:34.64.3.4"), Forbidden::ClusterPods);
    assert_eq!(refused("34.118.230.1"), Forbidden::ClusterServices);
    assert_eq!(refused("2600:1900::5"), Forbidden::ClusterServices);
    assert_eq!(refused("10.21.0.1"), Forbidden::PrivateNetwork);
    assert_eq!(
        refused("::1"),
        Forbidden::Loopback,
        "only 127.0.0.0/8 opened"
    );
    for open in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "10.20.3.4",
        "34.65.1.7",
        "8.8.8.8",
    ] {
        assert_eq!(policy.check(ip(open)), Ok(()), "{open}");
    }
}

#[test]
fn literal_hosts_of_urls_are_checked_as_the_client_reads_them() {
    let policy = AddressPolicy::default();
    let reason = |url: &str| {
        policy
            .check_url(&Url::parse(url).unwrap())
            .map_err(|r| (r.addr.to_string(), r.reason))
    };
    let loopback = Err(("127.0.0.1".to_owned(), Forbidden::Loopback));
    assert_eq!(reason("https://127.0.0.1/x"), loopback);
    assert_eq!(reason("https://0x7f.1/x"), loopback);
    assert_eq!(reason("https://2130706433/x"), loopback);
    assert_eq!(reason("https://0177.0.0.1:8443/x"), loopback);
    assert_eq!(
        reason("https://[::ffff:10.0.0.1]/x"),
        Err(("::ffff:10.0.0.1".to_owned(), Forbidden::PrivateNetwork))
    );
    assert_eq!(
        reason("https://169.254.169.254/latest/meta-data"),
        Err(("169.254.169.254".to_owned(), Forbidden::LinkLocal))
    );
    // Names are checked when connecting, after resolution.
    assert_eq!(reason("https://localhost/x"), Ok(()));
    assert_eq!(reason("https://hooks.example.com/x"), Ok(()));
    assert_eq!(reason("https://8.8.8.8/x"), Ok(()));
}

#[test]
fn a_refusal_names_the_address_and_the_policy() {
    let refusal = AddressPolicy::default().check(ip("10.1.2.3")).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "address 10.1.2.3 is not allowed for tenant notifications (private network)"
    );
}

#[test]
fn cidr_flags_are_parsed_and_every_bad_one_reported() {
    let mut errors = Vec::new();
    let values = [
        "10.1.2.3/8",
        " fd00::/8 ",
        "192.0.2.7",
        "",
        "nonsense",
        "10.0.0.0/33",
    ]
    .map(str::to_owned);
    let parsed = parse_cidrs("--notify-allow-cidr", &values, &mut errors);
    assert_eq!(parsed, nets(&["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("--notify-allow-cidr \"nonsense\": expected an address range"));
    assert!(errors[1].contains("\"10.0.0.0/33\""));
}

#[test]
fn the_resolver_keeps_allowed_addresses_and_names_the_refused_ones() {
    let resolver = PolicyResolver::new(Arc::new(AddressPolicy::default()));
    let at = |s: &str| SocketAddr::new(ip(s), 0);
    let mixed = resolver
        .filter("mixed.example", [at("10.0.0.1"), at("8.8.8.8")])
        .unwrap();
    assert_eq!(mixed, [at("8.8.8.8")]);

    let err = resolver
        .filter("localhost", [at("::1"), at("127.0.0.1")])
        .unwrap_err();
    let refused = err.downcast_ref::<HostRefused>().expect("a HostRefused");
    assert_eq!(refused.refusals.len(), 2);
    assert_eq!(
        err.to_string(),
        "localhost: address ::1 is not allowed for tenant notifications (loopback); \
         address 127.0.0.1 is not allowed for tenant notifications (loopback)"
    );
    let many = resolver
        .filter("many", (1..=50u8).map(|i| at(&format!("10.0.0.{i}"))))
        .unwrap_err();
    assert_eq!(
        many.downcast_ref::<HostRefused>().unwrap().refusals.len(),
        MAX_NAMED
    );
    let none = resolver.filter("empty", []).unwrap_err();
    assert_eq!(none.to_string(), "empty resolves to no address");
}

#[tokio::test]
async fn resolving_localhost_is_refused_after_resolution() {
    let resolver = PolicyResolver::new(Arc::new(AddressPolicy::default()));
    let err = match resolver.resolve("localhost".parse().unwrap()).await {
        Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        Err(err) => err,
    };
    let refused = err.downcast_ref::<HostRefused>().expect("a HostRefused");
    assert!(
        refused
            .refusals
            .iter()
            .all(|r| r.reason == Forbidden::Loopback)
    );

    let open = PolicyResolver::new(Arc::new(AddressPolicy::new(
        vec![],
        vec![],
        nets(&["127.0.0.0/8"]),
    )));
    let addrs: Vec<_> = open
        .resolve("localhost".parse().unwrap())
        .await
        .unwrap()
        .collect();
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.ip() == ip("127.0.0.1")), "{addrs:?}");
}

proptest! {
    /// An IPv4 address and its IPv4-mapped IPv6 form are judged alike.
    #[test]
    fn mapped_forms_are_judged_as_their_ipv4_address(bits: u32) {
        let policy = AddressPolicy::new(vec![], nets(&["34.118.224.0/20"]), nets(&["10.9.0.0/16"]));
        let v4 = Ipv4Addr::from(bits);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        let reason = |addr| policy.check(addr).map_err(|r| r.reason);
        match reason(IpAddr::V4(v4)) {
            Ok(()) => prop_assert!(matches!(reason(mapped), Ok(()) | Err(Forbidden::Reserved))),
            refused => prop_assert_eq!(reason(mapped), refused),
        }
        // A public address stays reachable only in its own form.
        if reason(IpAddr::V4(v4)).is_ok() && !policy.allowed.iter().any(|n| n.contains(&IpAddr::V4(v4))) {
            prop_assert_eq!(reason(mapped), Err(Forbidden::Reserved));
        }
    }

    /// Nothing in the ranges the issue names ever passes.
    #[test]
    fn named_ranges_never_pass(bits: u32, v6 in any::<u128>()) {
        let policy = AddressPolicy::default();
        for net in ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                    "169.254.0.0/16", "100.64.0.0/10", "0.0.0.0/8", "224.0.0.0/4"] {
            let net: ipnet::Ipv4Net = net.parse().unwrap();
            let host = u32::from(net.hostmask()) & bits;
            let addr = Ipv4Addr::from(u32::from(net.network()) | host);
            prop_assert!(policy.check(IpAddr::V4(addr)).is_err(), "{}", addr);
            prop_assert!(policy.check(IpAddr::V6(addr.to_ipv6_mapped())).is_err(), "{}", addr);
        }
        for net in ["fc00::/7", "fe80::/10", "ff00::/8", "::1/128"] {
            let net: ipnet::Ipv6Net = net.parse().unwrap();
            let host = u128::from(net.hostmask()) & v6;
            let addr = Ipv6Addr::from(u128::from(net.network()) | host);
            prop_assert!(policy.check(IpAddr::V6(addr)).is_err(), "{}", addr);
        }
    }
}
