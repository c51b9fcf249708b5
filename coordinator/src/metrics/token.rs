//! The metrics bearer token: where it comes from, and its constant-time check.

use std::path::PathBuf;

/// Where the metrics token comes from. `Debug` never shows an inline token.
#[derive(Clone)]
pub enum MetricsTokenSource {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for MetricsTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsTokenSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            MetricsTokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Shortest metrics token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum MetricsTokenError {
    #[error("failed to read the metrics token file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics token file {path} is empty or shorter than 16 characters")]
    TooShort { path: String },
}

/// The metrics bearer token, kept as its SHA-256 digest and compared in
/// constant time.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

impl MetricsToken {
    pub fn new(token: &str) -> Self {
        use sha2::Digest;
        MetricsToken(sha2::Sha256::digest(token.as_bytes()).into())
    }

    /// Reads the token from its source.
    pub fn load(source: &MetricsTokenSource) -> Result<Self, MetricsTokenError> {
        match source {
            MetricsTokenSource::Inline(token) => Ok(Self::new(token)),
            MetricsTokenSource::File(path) => {
                let token =
                    std::fs::read_to_string(path).map_err(|source| MetricsTokenError::Read {
                        path: path.display().to_string(),
                        source,
                    })?;
                let token = token.trim();
                if token.len() < MIN_TOKEN_LEN {
                    return Err(MetricsTokenError::TooShort {
                        path: path.display().to_string(),
                    });
                }
                Ok(Self::new(token))
            }
        }
    }

    /// Whether `presented` is the token (digests compared in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(Self::new(presented).0.ct_eq(&self.0))
    }
}
