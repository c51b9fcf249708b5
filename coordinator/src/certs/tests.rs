use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::*;

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca.cert_pem())).unwrap();
    Arc::new(roots)
}

#[test]
fn issued_certificates_chain_to_their_ca_only() {
    crate::certs::install_crypto_provider();
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let other = CertificateAuthority::generate("other CA").unwrap();
    let server = ca
        .issue_server(
            &["localhost".into(), "127.0.0.1".into()],
            Validity::days(30),
        )
        .unwrap();
    let agent = ca.issue_agent("node-a", Validity::days(30)).unwrap();
    let now = UnixTime::now();

    let server_verifier = WebPkiServerVerifier::builder(roots(&ca)).build().unwrap();
    for name in ["localhost", "127.0.0.1"] {
        server_verifier
            .verify_server_cert(
                &der(&server.cert_pem),
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                now,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(
        server_verifier
            .verify_server_cert(
                &der(&server.cert_pem),
                &[],
                &ServerName::try_from("evil.example").unwrap(),
                &[],
                now
            )
            .is_err()
    );

    let client_verifier = WebPkiClientVerifier::builder(roots(&ca)).build().unwrap();
    assert!(
        client_verifier
            .verify_client_cert(&der(&agent.cert_pem), &[], now)
            .is_ok()
    );
    let foreign = other.issue_agent("node-a", Validity::days(30)).unwrap();
    assert!(
        client_verifier
            .verify_client_cert(&der(&foreign.cert_pem), &[], now)
            .is_err()
    );
    let expired = ca
        .issue_agent(
            "node-a",
            Validity {
                not_before: (2020, 1, 1),
                not_after: (2020, 2, 1),
            },
        )
        .unwrap();
    assert!(
        client_verifier
            .verify_client_cert(&der(&expired.cert_pem), &[], now)
            .is_err()
    );
}

#[test]
fn init_and_agent_write_the_layout() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let written = init(dir.path(), &["coordinator.knowton.svc".into()], false).unwrap();
    assert_eq!(written.len(), 4);
    for (file, mode) in [
        (CA_CERT, 0o644),
        (CA_KEY, 0o600),
        (SERVER_CERT, 0o644),
        (SERVER_KEY, 0o600),
    ] {
        let meta = std::fs::metadata(dir.path().join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert!(matches!(
        init(dir.path(), &[], false),
        Err(CertError::Exists { .. })
    ));
    let files = agent(dir.path(), "worker-1.cluster.local").unwrap();
    assert!(files[0].ends_with("worker-1.cluster.local.pem"));
    let key_mode = std::fs::metadata(&files[1]).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    assert!(matches!(
        agent(dir.path(), "Bad_Node"),
        Err(CertError::NodeName(_))
    ));
    assert!(matches!(
        agent(tempfile::tempdir().unwrap().path(), "n1"),
        Err(CertError::Read { .. })
    ));
}

#[test]
fn node_names_are_dns_subdomains() {
    for good in ["node-1", "ip-10-0-0-1.ec2.internal", "a"] {
        assert!(validate_node_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "Node",
        "-node",
        "node-",
        "a..b",
        "node_1",
        "../etc/passwd",
    ] {
        assert!(validate_node_name(bad).is_err(), "{bad}");
    }
}

/// Hardening review, finding 12: `certs agent --node ca` overwrote the CA
/// (and `server`, `ca-key`, `server-key` the other files).
#[test]
fn agent_names_that_would_overwrite_the_ca_or_server_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &[], false).unwrap();
    let before: Vec<String> = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY]
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap())
        .collect();
    for node in ["ca", "ca-key", "server", "server-key"] {
        let err = agent(dir.path(), node).unwrap_err();
        assert!(
            matches!(err, CertError::ReservedNodeName(_)),
            "{node}: {err}"
        );
    }
    let after: Vec<String> = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY]
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "nothing was overwritten");
    // Names that merely start like them are ordinary nodes.
    assert_eq!(agent(dir.path(), "ca-1").unwrap().len(), 2);
    assert_eq!(agent(dir.path(), "server-a").unwrap().len(), 2);
}
