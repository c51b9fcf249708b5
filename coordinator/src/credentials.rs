//! Generation and hashing of credentials: API keys, temporary passwords and
//! deployment secrets. Nothing here logs or stores a plaintext value.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::RngExt;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which kind of API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Production,
    Development,
}

impl KeyKind {
    pub const ALL: [KeyKind; 2] = [KeyKind::Production, KeyKind::Development];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Production => "production",
            KeyKind::Development => "development",
        }
    }

    /// The visible prefix of keys of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Production => "kt_live_",
            KeyKind::Development => "kt_test_",
        }
    }
}

impl FromStr for KeyKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "production" => Ok(KeyKind::Production),
            "development" => Ok(KeyKind::Development),
            other => Err(format!(
                "unknown key kind {other:?}: expected production or development"
            )),
        }
    }
}

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
    knowton_common::hex(&Sha256::digest(key.as_bytes()))
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
/// Slow by design: call from a blocking thread, or use [`PasswordHasherPool`].
pub fn hash_password(password: &str) -> Result<String, argon2::Error> {
    hash_with_memory(password, &mut WorkingMemory::new().blocks)
}

fn hash_with_memory(password: &str, memory: &mut [Block]) -> Result<String, argon2::Error> {
    let params = Params::DEFAULT;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let mut hash = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2.hash_password_into_with_memory(password.as_bytes(), &salt, &mut hash, memory)?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash),
    ))
}

/// One hash's 19 MiB of argon2 working memory, given back to the operating
/// system when dropped.
///
/// glibc's malloc serves a block this large with its own mmap, but when
/// one is freed it raises its mmap threshold to that size (dynamically,
/// up to 32 MiB on 64-bit), so every later 19 MiB block came from a
/// thread's arena and stayed resident there after the hash: 19 MiB per
/// arena that ever hashed. Reserving more than that 32 MiB ceiling keeps
/// every block mmapped (the threshold never moves past it), and the
/// `munmap` on drop returns it; only the 19 MiB the hash uses is ever
/// touched, so the larger reservation costs address space, not memory.
struct WorkingMemory {
    blocks: Vec<Block>,
}

impl WorkingMemory {
    /// Above glibc's `DEFAULT_MMAP_THRESHOLD_MAX` (32 MiB on 64-bit).
    const RESERVED_BYTES: usize = 33 << 20;

    fn new() -> Self {
        let len = Params::DEFAULT.block_count();
        let mut blocks = Vec::with_capacity((Self::RESERVED_BYTES / Block::SIZE).max(len));
        blocks.resize(len, Block::new());
        WorkingMemory { blocks }
    }
}

/// Hashes passwords on at most `concurrency` blocking threads at a time,
/// each with working memory of its own that is returned to the operating
/// system after the hash ([`WorkingMemory`]): a burst of provisioning
/// requests costs `concurrency` × 19 MiB while it lasts, and nothing after.
#[derive(Debug, Clone)]
pub struct PasswordHasherPool {
    permits: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2 failed: {0}")]
    Argon2(argon2::Error),
    #[error("the hashing task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl PasswordHasherPool {
    pub fn new(concurrency: usize) -> Self {
        PasswordHasherPool {
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        }
    }

    /// One hash at a time per CPU.
    pub fn per_cpu() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || hash_password(&password).map_err(HashError::Argon2))
            .await?
    }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_hashes_concurrent_passwords() {
        let pool = PasswordHasherPool::new(2);
        let hashes: Vec<String> = futures_join_all(&pool, 6).await;
        for (i, phc) in hashes.iter().enumerate() {
            assert!(verify_password(&format!("password-{i}"), phc), "{phc}");
        }
        assert_eq!(pool.permits.available_permits(), 2);
    }

    /// The working memory is a mapping of its own (so dropping it unmaps
    /// it), even after blocks of its size were freed before.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn working_memory_is_mapped_on_its_own() {
        for _ in 0..3 {
            let memory = WorkingMemory::new();
            assert_eq!(memory.blocks.len(), Params::DEFAULT.block_count());
            let at = memory.blocks.as_ptr() as usize;
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let span = maps
                .lines()
                .filter_map(|line| {
                    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
                    let start = usize::from_str_radix(start, 16).ok()?;
                    let end = usize::from_str_radix(end, 16).ok()?;
                    (start..end).contains(&at).then_some(end - start)
                })
                .next()
                .expect("the working memory is mapped");
            // At least its own reservation: the kernel may merge it with
            // a neighbouring mapping (another test's hash), never shrink
            // it; in an arena it would sit in one of about its 19 MiB.
            assert!(
                span >= WorkingMemory::RESERVED_BYTES,
                "the working memory sits in a mapping of {span} bytes, not one of its own"
            );
        }
    }

    async fn futures_join_all(pool: &PasswordHasherPool, n: usize) -> Vec<String> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.hash(format!("password-{i}")).await.unwrap() })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
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
