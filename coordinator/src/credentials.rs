//! Generation and hashing of credentials: API keys, temporary passwords and
//! deployment secrets. Nothing here logs or stores a plaintext value.

use argon2::password_hash::PasswordHasher;
use argon2::{Argon2, PasswordVerifier};
use rand::RngExt;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::store::KeyKind;

/// Random characters after an API key's `kt_live_` / `kt_test_` prefix.
pub const API_KEY_RANDOM_LEN: usize = 40;
/// Random characters of the key shown after its prefix in listings.
const DISPLAY_RANDOM_LEN: usize = 6;
pub const TEMP_PASSWORD_LEN: usize = 20;
pub const DATABASE_PASSWORD_LEN: usize = 32;
pub const JWT_SECRET_LEN: usize = 64;

/// A freshly generated API key: shown once, stored as `hash` and `display_prefix`.
#[derive(Clone)]
pub struct GeneratedKey {
    pub plaintext: String,
    pub hash: String,
    pub display_prefix: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("display_prefix", &self.display_prefix)
            .finish_non_exhaustive()
    }
}

/// Base62 from the thread-local CSPRNG (ChaCha seeded from the OS).
pub fn random_base62(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

pub fn generate_api_key(kind: KeyKind) -> GeneratedKey {
    let random = random_base62(API_KEY_RANDOM_LEN);
    let plaintext = format!("{}{random}", kind.prefix());
    GeneratedKey {
        hash: hash_api_key(&plaintext),
        display_prefix: format!("{}{}", kind.prefix(), &random[..DISPLAY_RANDOM_LEN]),
        plaintext,
    }
}

/// SHA-256, hex. API keys carry 238 bits of entropy, so a fast hash is the
/// right tool: lookups stay O(1) and brute force stays hopeless.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` has the shape of one of our API keys.
pub fn looks_like_api_key(token: &str) -> bool {
    KeyKind::ALL.iter().any(|k| token.starts_with(k.prefix()))
}

/// A temporary password: letters, digits and symbols that survive e-mail and
/// shells, from the CSPRNG.
pub fn generate_password() -> String {
    const CHARSET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!@#%^*-_=+";
    let mut rng = rand::rng();
    (0..TEMP_PASSWORD_LEN)
        .map(|_| char::from(CHARSET[rng.random_range(0..CHARSET.len())]))
        .collect()
}

/// Argon2id (v19, m=19 MiB, t=2, p=1: the OWASP baseline) PHC string.
/// Slow by design: call from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes())?
        .to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    argon2::password_hash::phc::PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_have_prefix_length_and_stable_hash() {
        let key = generate_api_key(KeyKind::Production);
        assert!(key.plaintext.starts_with("kt_live_"));
        let random = &key.plaintext["kt_live_".len()..];
        assert!(random.len() >= 32 && random.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(key.hash, hash_api_key(&key.plaintext));
        assert_eq!(key.hash.len(), 64);
        assert!(key.plaintext.starts_with(&key.display_prefix));
        assert!(!format!("{key:?}").contains(&key.plaintext));
        let dev = generate_api_key(KeyKind::Development);
        assert!(dev.plaintext.starts_with("kt_test_"));
        assert_ne!(key.plaintext[8..], dev.plaintext[8..]);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let password = generate_password();
        assert!(password.chars().count() >= 16);
        let phc = hash_password(&password).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains(&password));
        assert!(verify_password(&password, &phc));
        assert!(!verify_password("wrong", &phc));
    }
}
