//! Who is let in: strangers, impostors and a stream without a hello are
//! refused; rotated certificates are picked up without a restart.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_impostors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, ca, node) = setup(dir.path()).await;
    let addr = kt.grpc_addr();

    // A certificate for node-a saying it is node-b.
    let err = FakeAgent::open(addr, &ca, Some(&node), hello("node-b"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // No client certificate, another CA's, an expired one: no TLS session at all.
    let other = CertificateAuthority::generate("other")
        .unwrap()
        .issue_agent("node-a", Validity::days(30))
        .unwrap();
    let expired = CertificateAuthority::load(dir.path())
        .unwrap()
        .issue_agent(
            "node-a",
            Validity {
                not_before: (2020, 1, 1),
                not_after: (2021, 1, 1),
            },
        )
        .unwrap();
    for (what, identity) in [
        ("no certificate", None),
        ("another CA", Some(&other)),
        ("expired", Some(&expired)),
    ] {
        let err = FakeAgent::open(addr, &ca, identity, hello("node-a"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} was let in"));
        // With TLS 1.3 the client may only learn of the refusal as a closed connection.
        assert!(
            matches!(
                err.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ),
            "{what}: {err}"
        );
    }
    // The first message must be a hello.
    let err = FakeAgent::open(addr, &ca, Some(&node), batch(1, vec![], None))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);

    let body = agents(&kt).await;
    assert_eq!(body["counters"]["hellosRejected"], 1);
    assert!(
        body["counters"]["handshakesFailed"].as_u64().unwrap() >= 2,
        "{body}"
    );
    assert!(body["agents"].as_array().unwrap().is_empty());
    // A valid agent still gets in.
    assert!(
        FakeAgent::open(addr, &ca, Some(&node), hello("node-a"))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_says_hello_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &[], false).unwrap();
    let db = knowton_tests::TestDb::new(Db::Sqlite).await;
    let mut args = knowton_coordinator::config::ServeArgs::for_dir(db.dir.path());
    args.database_url = db.url.clone();
    args.admin_token = Some(knowton_tests::ADMIN_TOKEN.into());
    args.tls_dir = Some(dir.path().to_owned());
    args.agent_hello_timeout_seconds = 1;
    let kt = TestCoordinator::start_with(db, args).await;
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let node = ca.issue_agent("node-a", Validity::days(30)).unwrap();
    let channel = channel(kt.grpc_addr(), ca.cert_pem(), Some(&node))
        .await
        .unwrap();
    let (_tx, rx) = mpsc::channel::<AgentMessage>(1);
    let err = AgentStreamClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .expect_err("no hello, no stream");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(agents(&kt).await["counters"]["streamsRejected"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (kt, old_ca, old_node) = setup(dir.path()).await;
    let mut established =
        FakeAgent::open(kt.grpc_addr(), &old_ca, Some(&old_node), hello("node-a"))
            .await
            .unwrap();
    established.next().await.unwrap();

    // A new CA and server certificate replace the files in place.
    certs::init(dir.path(), &[], true).unwrap();
    let new_ca = CertificateAuthority::load(dir.path()).unwrap();
    let new_node = new_ca.issue_agent("node-b", Validity::days(30)).unwrap();
    let new_ca_pem = new_ca.cert_pem().to_owned();
    let addr = kt.grpc_addr();
    eventually(
        Duration::from_secs(15),
        "the coordinator to serve the new certificates",
        || {
            let (ca, node) = (new_ca_pem.clone(), new_node.clone());
            async move {
                FakeAgent::open(addr, &ca, Some(&node), hello("node-b"))
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await;
    // Old certificates are no longer accepted for new connections...
    assert!(
        FakeAgent::open(addr, &old_ca, Some(&old_node), hello("node-a"))
            .await
            .is_err()
    );
    // ...and the stream established before the rotation still works.
    established
        .send(batch(1, vec![pod("acme", "acme-0", 1_000)], None))
        .await;
    assert_eq!(established.ack().await, 1);
}
