//! How every object of the backup repository is written: compressed with
//! zstd, then encrypted and authenticated with XChaCha20-Poly1305 under
//! the backup key (derived from the coordinator's secret key, a key of its
//! own), a fresh random nonce per object, and the object's path as
//! associated data, so an object moved to another path (or another
//! repository's) fails to open instead of being read as this one.
//!
//! Layout: `KNB1` ‖ nonce (24 bytes) ‖ ciphertext and tag.
//!
//! Chunks are named by a keyed hash of their plaintext (HMAC-SHA256 under
//! an id key, also derived): equal content dedupes, and a name says
//! nothing about the content to whoever reads the bucket without the key.

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secrets::SecretBox;

const MAGIC: &[u8; 4] = b"KNB1";
const NONCE_LEN: usize = 24;
/// zstd's level: 3 (its default) compresses well at a few hundred MB/s.
const LEVEL: i32 = 3;
/// The most a sealed object opens to: chunks are at most
/// [`super::chunk::MAX_SIZE`], manifests are bounded by the data they
/// describe; anything larger is refused before it is decompressed.
pub const MAX_PLAINTEXT: usize = 256 * 1024 * 1024;

/// Why an object did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("not a backup object (no KNB1 header)")]
    NotSealed,
    #[error("does not authenticate: written under another key, for another path, or altered since")]
    Authentication,
    #[error("does not decompress: {0}")]
    Decompress(String),
    #[error("holds a chunk whose content does not match its name")]
    WrongContent,
}

/// The keys of one installation's backups.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    id_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(secrets: &SecretBox) -> Self {
        Sealer {
            cipher: XChaCha20Poly1305::new(&secrets.derive_key("backup encryption v1").into()),
            id_key: secrets.derive_key("backup chunk ids v1"),
        }
    }

    /// The name of a chunk holding `plain`: 64 hex digits.
    pub fn chunk_id(&self, plain: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.id_key)
            .expect("HMAC takes a key of any length");
        mac.update(plain);
        knowton_common::hex(&mac.finalize().into_bytes())
    }

    /// `plain` compressed and encrypted for the object at `path`.
    pub fn seal(&self, path: &str, plain: &[u8]) -> Vec<u8> {
        let compressed = zstd::bulk::compress(plain, LEVEL)
            .expect("zstd compresses an in-memory buffer at a valid level");
        let nonce = XNonce::generate();
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &compressed,
                    aad: path.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// The plaintext of the object `sealed` read from `path`.
    pub fn open(&self, path: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let body = sealed.strip_prefix(MAGIC).ok_or(OpenError::NotSealed)?;
        if body.len() < NONCE_LEN {
            return Err(OpenError::NotSealed);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::NotSealed)?;
        let compressed = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: path.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Authentication)?;
        decompress(&compressed)
    }

    /// [`Self::open`] of a chunk, checked against its name `id`.
    pub fn open_chunk(&self, path: &str, id: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let plain = self.open(path, sealed)?;
        if self.chunk_id(&plain) != id {
            return Err(OpenError::WrongContent);
        }
        Ok(plain)
    }
}

/// zstd's frame, refused when it would open to more than
/// [`MAX_PLAINTEXT`] (authenticated, so only our own writer made it; the
/// bound keeps a bug from becoming an allocation of any size).
fn decompress(compressed: &[u8]) -> Result<Vec<u8>, OpenError> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| OpenError::Decompress(e.to_string()))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_PLAINTEXT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| OpenError::Decompress(e.to_string()))?;
    if out.len() > MAX_PLAINTEXT {
        return Err(OpenError::Decompress(format!(
            "opens to more than {MAX_PLAINTEXT} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(key: u8) -> Sealer {
        Sealer::new(&SecretBox::from_key(&[key; 32]))
    }

    #[test]
    fn an_object_opens_only_with_its_key_at_its_path() {
        let (ours, theirs) = (sealer(1), sealer(2));
        let plain = b"tenant data ".repeat(1000);
        let sealed = ours.seal("a/b", &plain);
        assert!(
            sealed.len() < plain.len() / 4,
            "compressed: {}",
            sealed.len()
        );
        assert_eq!(ours.open("a/b", &sealed).unwrap(), plain);
        assert_eq!(ours.open("a/c", &sealed), Err(OpenError::Authentication));
        assert_eq!(theirs.open("a/b", &sealed), Err(OpenError::Authentication));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 20;
        flipped[last] ^= 1;
        assert_eq!(ours.open("a/b", &flipped), Err(OpenError::Authentication));
        assert_eq!(ours.open("a/b", b"plain text"), Err(OpenError::NotSealed));
        assert_eq!(ours.open("a/b", b"KNB1short"), Err(OpenError::NotSealed));
    }

    #[test]
    fn the_same_plaintext_is_sealed_under_fresh_nonces() {
        let s = sealer(1);
        assert_ne!(s.seal("p", b"x"), s.seal("p", b"x"));
    }

    #[test]
    fn chunk_names_are_keyed_and_checked() {
        let (ours, theirs) = (sealer(1), sealer(2));
        let id = ours.chunk_id(b"chunk");
        assert_eq!(id.len(), 64);
        assert_ne!(id, theirs.chunk_id(b"chunk"));
        let sealed = ours.seal("c", b"other");
        assert_eq!(
            ours.open_chunk("c", &id, &sealed),
            Err(OpenError::WrongContent)
        );
    }
}
