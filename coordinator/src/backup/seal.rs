//! How everything in the backup repository is sealed: compressed with
//! zstd when that makes it smaller (stored as is otherwise: most tenant
//! files are compressed already), then encrypted and authenticated with
//! XChaCha20-Poly1305 under the backup key (derived from the
//! coordinator's secret key, a key of its own), a fresh random nonce per
//! sealed piece, and associated data naming what the piece is, so a piece
//! moved elsewhere (another path, another tenant's chunk, another
//! repository's) fails to open instead of being read as this one.
//!
//! A sealed piece is nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes); its
//! plaintext is one byte saying how the rest is stored (0: as is, 1:
//! zstd) and the rest. An object on its own (a manifest, an index, a
//! mark) is `KNB2` ‖ one sealed piece whose associated data is its path;
//! a pack ([`super::pack`]) holds many chunks, each sealed on its own.
//!
//! Chunks are named by a keyed hash of their plaintext (HMAC-SHA256 under
//! an id key, also derived): equal content dedupes, and a name says
//! nothing about the content to whoever reads the bucket without the key.

use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secrets::SecretBox;

const MAGIC: &[u8; 4] = b"KNB2";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// What sealing adds to a plaintext: nonce, tag and the storage byte.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN + 1;
/// zstd's level: 3 (its default) compresses well at a few hundred MB/s.
const LEVEL: i32 = 3;
/// How a plaintext is stored.
const STORED: u8 = 0;
const ZSTD: u8 = 1;
/// Bytes sampled (from the start, the middle and the end, a third each)
/// to tell whether a large plaintext compresses at all: compressing
/// random-looking data costs time and gains nothing.
const SAMPLE: usize = 3 * 8 * 1024;
/// A sample that zstd shrinks by less than this is taken as
/// incompressible (parts per 64).
const WORTH_IT: usize = 62;
/// The most a sealed piece opens to: chunks are at most
/// [`super::chunk::MAX_SIZE`], manifests are bounded by the data they
/// describe; anything larger is refused before it is decompressed.
pub const MAX_PLAINTEXT: usize = 256 * 1024 * 1024;

/// Why an object did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("not a backup object (no KNB2 header)")]
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

    /// `plain` as the object at `path`.
    pub fn seal(&self, path: &str, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + OVERHEAD + plain.len());
        out.extend_from_slice(MAGIC);
        self.seal_into(&mut out, path.as_bytes(), plain);
        out
    }

    /// Appends `plain` sealed under the associated data `aad` to `out`;
    /// returns the sealed piece's length.
    pub fn seal_into(&self, out: &mut Vec<u8>, aad: &[u8], plain: &[u8]) -> usize {
        let start = out.len();
        let nonce = XNonce::generate();
        out.extend_from_slice(&nonce);
        let body = out.len();
        match compress(plain) {
            Some(compressed) => {
                out.push(ZSTD);
                out.extend_from_slice(&compressed);
            }
            None => {
                out.push(STORED);
                out.extend_from_slice(plain);
            }
        }
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, (&mut out[body..]).into())
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        out.extend_from_slice(&tag);
        out.len() - start
    }

    /// The plaintext of the object `sealed` read from `path`.
    pub fn open(&self, path: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let piece = sealed.strip_prefix(MAGIC).ok_or(OpenError::NotSealed)?;
        self.open_piece(path.as_bytes(), piece)
    }

    /// The plaintext of one sealed piece under the associated data `aad`.
    pub fn open_piece(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD {
            return Err(OpenError::NotSealed);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::NotSealed)?;
        let tag = Tag::try_from(tag).map_err(|_| OpenError::NotSealed)?;
        let mut plain = ciphertext.to_vec();
        self.cipher
            .decrypt_inout_detached(&nonce, aad, (&mut plain[..]).into(), &tag)
            .map_err(|_| OpenError::Authentication)?;
        match plain.first() {
            Some(&STORED) => {
                plain.remove(0);
                Ok(plain)
            }
            Some(&ZSTD) => decompress(&plain[1..]),
            _ => Err(OpenError::Decompress("unknown storage method".to_owned())),
        }
    }

    /// [`Self::open_piece`] of a chunk, checked against its name `id`.
    pub fn open_chunk(&self, aad: &[u8], id: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let plain = self.open_piece(aad, sealed)?;
        if self.chunk_id(&plain) != id {
            return Err(OpenError::WrongContent);
        }
        Ok(plain)
    }
}

/// `plain` compressed, or `None` when compressing does not make it
/// smaller (a large plaintext is judged by a sample first, so that
/// incompressible data costs almost nothing).
fn compress(plain: &[u8]) -> Option<Vec<u8>> {
    if plain.len() > 2 * SAMPLE {
        let third = SAMPLE / 3;
        let middle = plain.len() / 2 - third / 2;
        let mut sample = Vec::with_capacity(SAMPLE);
        sample.extend_from_slice(&plain[..third]);
        sample.extend_from_slice(&plain[middle..middle + third]);
        sample.extend_from_slice(&plain[plain.len() - third..]);
        let squeezed = zstd::bulk::compress(&sample, 1)
            .expect("zstd compresses an in-memory buffer at a valid level");
        if squeezed.len() * 64 > sample.len() * WORTH_IT {
            return None;
        }
    }
    let compressed = zstd::bulk::compress(plain, LEVEL)
        .expect("zstd compresses an in-memory buffer at a valid level");
    (compressed.len() < plain.len()).then_some(compressed)
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
        assert_eq!(ours.open("a/b", b"KNB2short"), Err(OpenError::NotSealed));
    }

    /// Incompressible data is stored as is (a sample says so before the
    /// whole is tried); compressible data is compressed, both round-trip.
    #[test]
    fn only_what_compresses_is_compressed() {
        let s = sealer(1);
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for plain in [noise.clone(), noise[..100].to_vec(), Vec::new()] {
            let sealed = s.seal("n", &plain);
            assert_eq!(sealed.len(), 4 + OVERHEAD + plain.len(), "stored as is");
            assert_eq!(s.open("n", &sealed).unwrap(), plain);
        }
        let text = b"row 1, some text; ".repeat(20_000);
        let sealed = s.seal("t", &text);
        assert!(sealed.len() < text.len() / 10, "{}", sealed.len());
        assert_eq!(s.open("t", &sealed).unwrap(), text);
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
        let mut sealed = Vec::new();
        ours.seal_into(&mut sealed, b"c", b"other");
        assert_eq!(
            ours.open_chunk(b"c", &id, &sealed),
            Err(OpenError::WrongContent)
        );
        let mut right = Vec::new();
        ours.seal_into(&mut right, b"c", b"chunk");
        assert_eq!(ours.open_chunk(b"c", &id, &right).unwrap(), b"chunk");
        assert_eq!(
            ours.open_chunk(b"d", &id, &right),
            Err(OpenError::Authentication),
            "bound to its associated data"
        );
    }
}
