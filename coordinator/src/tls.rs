//! The mutual-TLS configuration of the agent stream, re-read when its files
//! change (Kubernetes rotates mounted secrets) without a restart: new
//! connections get the new configuration, established streams keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::watch;

/// Where the CA, certificate and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The `certs init` layout of `dir`: ca.pem, server.pem, server-key.pem.
    pub fn server_in(dir: &Path) -> Self {
        TlsFiles {
            ca: dir.join(crate::certs::CA_CERT),
            cert: dir.join(crate::certs::SERVER_CERT),
            key: dir.join(crate::certs::SERVER_KEY),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("the CA in {path} is not usable")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("failed to build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the certificate and key do not make a usable TLS identity")]
    Identity(#[source] rustls::Error),
}

/// The bytes last loaded, to notice a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loaded {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Loaded {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Loaded {
            ca: read(&files.ca)?,
            cert: read(&files.cert)?,
            key: read(&files.key)?,
        })
    }

    fn certificates(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_owned(),
            });
        }
        Ok(certs)
    }

    fn server_config(&self, files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in Self::certificates(&self.ca, &files.ca)? {
            roots.add(ca).map_err(|source| TlsError::Ca {
                path: files.ca.clone(),
                source,
            })?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(TlsError::Verifier)?;
        let chain = Self::certificates(&self.cert, &files.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|_| TlsError::NoKey {
            path: files.key.clone(),
        })?;
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(TlsError::Identity)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The server side: a current `rustls::ServerConfig` that requires a client
/// certificate chaining to the CA, and a task that reloads it.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: watch::Sender<Arc<rustls::ServerConfig>>,
    loaded: std::sync::Mutex<Loaded>,
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        crate::certs::install_crypto_provider();
        let loaded = Loaded::read(&files)?;
        let config = Arc::new(loaded.server_config(&files)?);
        Ok(Arc::new(ServerTls {
            files,
            current: watch::Sender::new(config),
            loaded: std::sync::Mutex::new(loaded),
        }))
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.borrow().clone()
    }

    /// Re-reads the files; swaps the configuration if they changed and are
    /// valid. Returns whether it swapped. On error the old one stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let fresh = Loaded::read(&self.files)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == fresh {
            return Ok(false);
        }
        let config = fresh.server_config(&self.files)?;
        *loaded = fresh;
        self.current.send_replace(Arc::new(config));
        Ok(true)
    }

    /// Checks the files every `every` until `stop` is set.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match tls.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %tls.files.cert.display(), "reloaded the agent stream's TLS certificates")
                    }
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "TLS files changed but cannot be used; keeping the previous certificates")
                    }
                }
            }
        });
    }
}

/// The identity of a client certificate: its subject CN.
pub fn certificate_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}
