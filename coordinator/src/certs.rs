//! The mutual-TLS certificates of the agent stream: a private CA, the
//! coordinator's server certificate and one client certificate per node,
//! whose identity (CN and DNS SAN) is the node name. Pure Rust (rcgen).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// Installs the process-wide rustls crypto provider (ring) that every TLS
/// client and server of the process uses. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{path} already exists; pass --force to replace the CA (every agent certificate must then be re-issued)"
    )]
    Exists { path: PathBuf },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid node name {0:?}: expected a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"
    )]
    NodeName(String),
    #[error(
        "node name {0:?} would overwrite the CA's or the server's files ({CA_CERT}, {CA_KEY}, {SERVER_CERT}, {SERVER_KEY})"
    )]
    ReservedNodeName(String),
    #[error("invalid subject alternative name {0:?}")]
    San(String),
    #[error("failed to generate or sign a certificate")]
    Generate(#[from] rcgen::Error),
}

/// Validity of an issued certificate, as calendar dates (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: (i32, u8, u8),
    pub not_after: (i32, u8, u8),
}

impl Validity {
    /// From yesterday (clock skew) for `days` days.
    pub fn days(days: i64) -> Self {
        let ymd = |d: chrono::DateTime<Utc>| (d.year(), d.month() as u8, d.day() as u8);
        let now = Utc::now();
        Validity {
            not_before: ymd(now - Duration::days(1)),
            not_after: ymd(now + Duration::days(days)),
        }
    }

    fn apply(self, params: &mut CertificateParams) {
        let (y, m, d) = self.not_before;
        params.not_before = date_time_ymd(y, m, d);
        let (y, m, d) = self.not_after;
        params.not_after = date_time_ymd(y, m, d);
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued(..)")
    }
}

/// A CA that can issue server and agent certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateAuthority(..)")
    }
}

impl CertificateAuthority {
    /// A new CA (ECDSA P-256), valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "KnowTon");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Validity::days(3650).apply(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            key_pem,
        })
    }

    /// Loads `ca.pem` and `ca-key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_pem = read(&dir.join(CA_CERT))?;
        let key_pem = read(&dir.join(CA_KEY))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(CertificateAuthority {
            cert_pem,
            issuer,
            key_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The coordinator's server certificate for `sans` (DNS names or IPs).
    pub fn issue_server(&self, sans: &[String], validity: Validity) -> Result<Issued, CertError> {
        let mut params =
            CertificateParams::new(sans.to_vec()).map_err(|_| CertError::San(sans.join(",")))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "knowton-coordinator");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity.apply(&mut params);
        self.issue(params)
    }

    /// An agent's client certificate; its identity is `node`.
    pub fn issue_agent(&self, node: &str, validity: Validity) -> Result<Issued, CertError> {
        validate_node_name(node)?;
        let mut params = CertificateParams::new(vec![node.to_owned()])
            .map_err(|_| CertError::NodeName(node.to_owned()))?;
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity.apply(&mut params);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued, CertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn write(&self, dir: &Path) -> Result<(), CertError> {
        write_file(&dir.join(CA_CERT), &self.cert_pem, false)?;
        write_file(&dir.join(CA_KEY), &self.key_pem, true)
    }
}

/// `certs init`: a new CA and a server certificate for localhost,
/// 127.0.0.1 and `extra_sans`. Returns the files written.
pub fn init(dir: &Path, extra_sans: &[String], force: bool) -> Result<Vec<PathBuf>, CertError> {
    let ca_path = dir.join(CA_CERT);
    if ca_path.exists() && !force {
        return Err(CertError::Exists { path: ca_path });
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca = CertificateAuthority::generate("KnowTon agent CA")?;
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for san in extra_sans {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    let server = ca.issue_server(&sans, Validity::days(397))?;
    ca.write(dir)?;
    write_file(&dir.join(SERVER_CERT), &server.cert_pem, false)?;
    write_file(&dir.join(SERVER_KEY), &server.key_pem, true)?;
    Ok([CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY]
        .map(|f| dir.join(f))
        .to_vec())
}

/// `certs agent`: `NODE.pem` and `NODE-key.pem` signed by the CA in `dir`.
/// A node whose files would be the CA's or the server's is refused.
pub fn agent(dir: &Path, node: &str) -> Result<Vec<PathBuf>, CertError> {
    validate_node_name(node)?;
    let reserved = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY];
    let (cert_name, key_name) = (format!("{node}.pem"), format!("{node}-key.pem"));
    if reserved.contains(&cert_name.as_str()) || reserved.contains(&key_name.as_str()) {
        return Err(CertError::ReservedNodeName(node.to_owned()));
    }
    let ca = CertificateAuthority::load(dir)?;
    let issued = ca.issue_agent(node, Validity::days(397))?;
    let cert = dir.join(cert_name);
    let key = dir.join(key_name);
    write_file(&cert, &issued.cert_pem, false)?;
    write_file(&key, &issued.key_pem, true)?;
    Ok(vec![cert, key])
}

/// Node names are DNS-1123 subdomains, as Kubernetes requires.
pub fn validate_node_name(node: &str) -> Result<(), CertError> {
    let ok = !node.is_empty()
        && node.len() <= 253
        && node.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(CertError::NodeName(node.to_owned()))
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes atomically (temporary file, then rename), private keys with mode 0600.
fn write_file(path: &Path, content: &str, private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(content.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests;
