//! Encryption at rest for deployment secrets and sealed notification bodies.
//!
//! Values are sealed with XChaCha20-Poly1305 (random 192-bit nonces, so no
//! nonce bookkeeping) under a 32-byte key from `KNOWTON_SECRET_KEY` or a key
//! file. The associated data binds each value to where it is stored (tenant
//! and secret name), so a sealed value copied to another row fails to open.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const VERSION: &str = "v1";
/// Sealed value the store keeps to recognise the key it was written with.
const KEY_CHECK_CONTEXT: &str = "knowton/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"knowton secret key check";
pub const KEY_CHECK_META: &str = "secret_key_check";

#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error(
        "KNOWTON_SECRET_KEY is not valid: expected 32 bytes encoded as base64 (head -c 32 /dev/urandom | base64)"
    )]
    InvalidEnvKey,
    #[error("secret key file {path} is not valid: expected 32 bytes encoded as base64")]
    InvalidKeyFile { path: PathBuf },
    #[error("failed to read secret key file {path}")]
    ReadKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create secret key file {path}")]
    CreateKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret key file {path} is readable by other users (mode {mode:o}); run chmod 600 {path}"
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error(
        "sealed value does not open with this key (wrong key, or the value was moved or altered)"
    )]
    Authentication,
}

/// Where the key comes from. `Debug` never shows an inline key.
#[derive(Clone)]
pub enum KeySource {
    /// Base64 text (from `KNOWTON_SECRET_KEY`).
    Inline(String),
    /// A key file that must exist.
    File(PathBuf),
    /// A key file created with mode 0600 on first use.
    FileCreate(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Inline(_) => f.write_str("Inline(<redacted>)"),
            KeySource::File(path) => f.debug_tuple("File").field(path).finish(),
            KeySource::FileCreate(path) => f.debug_tuple("FileCreate").field(path).finish(),
        }
    }
}

/// Seals and opens values with the coordinator's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// Kept for [`SecretBox::derive_key`] alone.
    key: [u8; 32],
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.into()),
            key: *key,
        }
    }

    /// A key of its own for `purpose` (HMAC-SHA256 of the purpose under
    /// the coordinator's key, as HKDF-Expand does for one block): what one
    /// use of it reveals says nothing of the coordinator's key or of
    /// another purpose's.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::{KeyInit as _, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(b"knowton derived key\0");
        mac.update(purpose.as_bytes());
        mac.update(&[1]);
        mac.finalize().into_bytes().into()
    }

    /// Loads (or, for [`KeySource::FileCreate`], creates) the key.
    pub fn load(source: &KeySource) -> Result<Self, SecretKeyError> {
        match source {
            KeySource::Inline(text) => decode_key(text)
                .map(|k| Self::from_key(&k))
                .ok_or(SecretKeyError::InvalidEnvKey),
            KeySource::File(path) => Self::read_file(path),
            KeySource::FileCreate(path) => {
                if !path.exists() {
                    create_key_file(path)?;
                }
                Self::read_file(path)
            }
        }
    }

    fn read_file(path: &Path) -> Result<Self, SecretKeyError> {
        let read_err = |source| SecretKeyError::ReadKeyFile {
            path: path.to_owned(),
            source,
        };
        if let Some(mode) = open_to_others(path).map_err(read_err)? {
            return Err(SecretKeyError::KeyFilePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        decode_key(&text)
            .map(|k| Self::from_key(&k))
            .ok_or_else(|| SecretKeyError::InvalidKeyFile {
                path: path.to_owned(),
            })
    }

    /// Encrypts `plaintext`, bound to `context`. Output: `v1.<base64(nonce || ciphertext)>`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let nonce = XNonce::generate();
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(nonce.len() + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        format!("{VERSION}.{}", B64.encode(out))
    }

    /// Decrypts a value produced by [`SecretBox::seal`] with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, OpenError> {
        let body = sealed
            .strip_prefix(VERSION)
            .and_then(|s| s.strip_prefix('.'))
            .ok_or(OpenError::Malformed)?;
        let raw = B64.decode(body).map_err(|_| OpenError::Malformed)?;
        if raw.len() < 24 {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(24);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::Malformed)?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Authentication)
    }

    /// A sealed constant that [`SecretBox::matches_check`] recognises.
    pub fn key_check(&self) -> String {
        self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_CONTEXT)
    }

    /// Whether `check` was produced by [`SecretBox::key_check`] under this key.
    pub fn matches_check(&self, check: &str) -> bool {
        self.open(check, KEY_CHECK_CONTEXT)
            .is_ok_and(|p| p == KEY_CHECK_PLAINTEXT)
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    B64.decode(text.trim()).ok()?.try_into().ok()
}

fn create_key_file(path: &Path) -> Result<(), SecretKeyError> {
    let err = |source| SecretKeyError::CreateKeyFile {
        path: path.to_owned(),
        source,
    };
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    writeln!(file, "{}", B64.encode(key)).map_err(err)?;
    file.sync_all().map_err(err)
}

/// The permission bits of a secret file (key, token) that group or others
/// may read or write, `None` if only its owner may: such a file is refused.
pub fn open_to_others(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).map(|_| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_box() -> SecretBox {
        SecretBox::from_key(&[7u8; 32])
    }

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let b = secret_box();
        let sealed = b.seal(b"hunter2-database-password", "tenant-a/database_password");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            b.open(&sealed, "tenant-a/database_password").unwrap(),
            b"hunter2-database-password"
        );
        assert!(matches!(
            b.open(&sealed, "tenant-b/database_password"),
            Err(OpenError::Authentication)
        ));
        assert_ne!(
            sealed,
            b.seal(b"hunter2-database-password", "tenant-a/database_password")
        );
    }

    #[test]
    fn a_different_key_fails_the_check() {
        let check = secret_box().key_check();
        assert!(secret_box().matches_check(&check));
        assert!(!SecretBox::from_key(&[8u8; 32]).matches_check(&check));
        assert!(matches!(
            secret_box().open("v1.???", "x"),
            Err(OpenError::Malformed)
        ));
    }

    #[test]
    fn inline_keys_must_be_32_bytes() {
        assert!(SecretBox::load(&KeySource::Inline(B64.encode([1u8; 32]))).is_ok());
        assert!(matches!(
            SecretBox::load(&KeySource::Inline("short".into())),
            Err(SecretKeyError::InvalidEnvKey)
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("knowton-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("knowton.key");
        let first = SecretBox::load(&KeySource::FileCreate(path.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SecretBox::load(&KeySource::File(path.clone())).unwrap();
        assert!(again.matches_check(&first.key_check()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretBox::load(&KeySource::File(path)),
            Err(SecretKeyError::KeyFilePermissions { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
