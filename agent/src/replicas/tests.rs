use super::*;

fn replica(addr: &str, domain: Option<&str>) -> Replica {
    Replica {
        addr: addr.parse().unwrap(),
        url: "https://coordinator:8443".to_owned(),
        domain: domain.map(str::to_owned),
    }
}

#[test]
fn a_list_of_urls_parses_with_ip_literals_and_names() {
    let urls = parse_list(
        "https://127.0.0.1:8443, https://[::1]:9443 ,https://Coordinator.knowton-system.svc:8443,https://c2,",
    )
    .unwrap();
    let hosts: Vec<(&Host, u16)> = urls.iter().map(|u| (&u.host, u.port)).collect();
    assert_eq!(
        hosts,
        [
            (&Host::Ip("127.0.0.1".parse().unwrap()), 8443),
            (&Host::Ip("::1".parse().unwrap()), 9443),
            (&Host::Name("coordinator.knowton-system.svc".into()), 8443),
            (&Host::Name("c2".into()), 443),
        ]
    );
    assert_eq!(urls[1].url, "https://[::1]:9443", "kept as given, trimmed");
    assert_eq!(parse_list("https://127.0.0.1:8443/").unwrap().len(), 1);
}

#[test]
fn bad_urls_are_named_every_one_at_once() {
    let err = parse_list(
        "https://ok:1,http://plain:8443,https://a b:1,https://u:p@host:1,https://h:1/path,ftp:x,https://h:0,https://-bad-:1",
    )
    .unwrap_err();
    for named in [
        "\"http://plain:8443\" must start with https://",
        "\"https://a b:1\" is not a URL",
        "\"https://u:p@host:1\" must not carry credentials",
        "\"https://h:1/path\" must have no path or query",
        "\"ftp:x\"",
        "\"https://h:0\" has port 0",
        "\"https://-bad-:1\" has an invalid host name",
    ] {
        assert!(err.contains(named), "{named} missing from: {err}");
    }
    assert!(err.starts_with("--coordinator: "), "{err}");
    assert!(!err.contains("ok:1"), "{err}");
}

#[test]
fn an_empty_list_is_refused() {
    for empty in ["", " ", ",", " , "] {
        let err = parse_list(empty).unwrap_err();
        assert!(err.contains("no URL given"), "{empty:?}: {err}");
    }
}

#[test]
fn diffing_adds_new_addresses_and_closes_the_gone() {
    let current: Vec<SocketAddr> = ["10.0.0.1:8443", "10.0.0.2:8443"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let resolved = [
        replica("10.0.0.2:8443", Some("c")),
        replica("10.0.0.3:8443", Some("c")),
    ];
    let (added, removed) = diff(&current, &resolved);
    assert_eq!(added, [replica("10.0.0.3:8443", Some("c"))]);
    assert_eq!(removed, ["10.0.0.1:8443".parse::<SocketAddr>().unwrap()]);
    let (added, removed) = diff(&current[..1], &resolved[..0]);
    assert!(added.is_empty());
    assert_eq!(removed, current[..1]);
    let (added, removed) = diff(&[], &resolved);
    assert_eq!((added.len(), removed.len()), (2, 0));
    let same: Vec<SocketAddr> = resolved.iter().map(|r| r.addr).collect();
    let (added, removed) = diff(&same, &resolved);
    assert!(added.is_empty() && removed.is_empty(), "nothing changed");
}

#[tokio::test]
async fn ip_literals_are_used_as_given_and_bounded() {
    let list: Vec<String> = (1..=20)
        .map(|i| format!("https://127.0.0.{i}:8443"))
        .chain(["https://127.0.0.1:8443".to_owned()])
        .collect();
    let mut resolver = Resolver::new(parse_list(&list.join(",")).unwrap());
    assert!(!resolver.has_names());
    let (replicas, complete) = resolver.resolve().await;
    assert!(complete);
    assert_eq!(replicas.len(), MAX_REPLICAS, "the rest is ignored");
    assert_eq!(replicas[0].endpoint(), "https://127.0.0.1:8443");
    assert_eq!(
        replicas[0].domain, None,
        "verified against the IP as before"
    );
    assert_eq!(replicas[15].addr, "127.0.0.16:8443".parse().unwrap());
}

#[tokio::test]
async fn a_name_resolves_to_its_addresses_verified_against_the_name() {
    let mut resolver = Resolver::new(parse_list("https://localhost:8443").unwrap());
    assert!(resolver.has_names());
    let (replicas, complete) = resolver.resolve().await;
    assert!(complete);
    let local = replicas
        .iter()
        .find(|r| r.addr == "127.0.0.1:8443".parse().unwrap())
        .expect("localhost resolves to 127.0.0.1");
    assert_eq!(local.domain.as_deref(), Some("localhost"));
    assert_eq!(local.endpoint(), "https://127.0.0.1:8443");
    assert_eq!(replicas.len(), 1, "not ::1 too: one stream per server");
}

#[tokio::test]
async fn a_name_that_stops_resolving_keeps_its_last_addresses() {
    let mut resolver = Resolver::new(parse_list("https://localhost:8443").unwrap());
    let (before, _) = resolver.resolve().await;
    assert!(!before.is_empty());
    // The name now points nowhere (as a lookup failure would leave it).
    resolver.urls[0].host = Host::Name("knowton-no-such-host.invalid".into());
    let (after, complete) = resolver.resolve().await;
    assert!(!complete);
    let addrs = |r: &[Replica]| r.iter().map(|r| r.addr).collect::<Vec<_>>();
    assert_eq!(addrs(&after), addrs(&before));
}

#[test]
fn a_failed_resolution_is_retried_sooner_then_back_to_the_interval() {
    let every = Duration::from_secs(30);
    let mut retry = Duration::from_secs(1);
    let waits: Vec<u64> = [false, false, false, false, false, false, true, false]
        .into_iter()
        .map(|complete| next_resolution(complete, &mut retry, every).as_secs())
        .collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 1]);
}

#[tokio::test(start_paused = true)]
async fn ip_literals_are_published_once_and_the_watch_ends_with_its_receiver() {
    let (tx, mut rx) = watch::channel(Vec::new());
    let urls = parse_list("https://127.0.0.1:8443,https://127.0.0.2:8443").unwrap();
    let watching = tokio::spawn(super::watch(urls, Duration::from_secs(30), tx));
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().len(), 2);
    drop(rx);
    watching.await.unwrap();
}

#[test]
fn a_name_s_ipv4_addresses_are_used_else_its_ipv6_ones_at_most_the_limit() {
    let addr = |a: &str| a.parse::<SocketAddr>().unwrap();
    let dual = [
        addr("[fd00::2]:8443"),
        addr("10.0.0.2:8443"),
        addr("10.0.0.1:8443"),
    ];
    assert_eq!(
        pick(dual).into_iter().collect::<Vec<_>>(),
        [addr("10.0.0.1:8443"), addr("10.0.0.2:8443")]
    );
    let v6 = [addr("[fd00::2]:8443"), addr("[fd00::1]:8443")];
    assert_eq!(pick(v6).len(), 2);
    // Many answers, in any order: the lowest, never more than the limit.
    let many = (0..=255u8)
        .rev()
        .map(|i| SocketAddr::from(([10, 0, 1, i], 8443)));
    let picked = pick(many);
    assert_eq!(picked.len(), MAX_REPLICAS);
    assert_eq!(picked.first(), Some(&addr("10.0.1.0:8443")));
    assert_eq!(picked.last(), Some(&addr("10.0.1.15:8443")));
}
