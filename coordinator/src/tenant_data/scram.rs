//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) as PostgreSQL stores them
//! in `pg_authid.rolpassword`: a tenant role's password is set by its
//! verifier, so the password itself never reaches the server (nor its
//! statement log), as libpq's `PQencryptPasswordConn` does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default iteration count (`scram_iterations`).
const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` of
/// `password`, with a fresh random salt.
pub fn verifier(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt);
    verifier_with(password, &salt, ITERATIONS)
}

/// The verifier of `password` for `salt` and `iterations`. (PostgreSQL
/// prepares the password with SASLprep first; ours are ASCII letters and
/// digits, which it leaves as they are.)
pub fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let key = |name: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&salted).expect("HMAC takes any key length");
        mac.update(name);
        mac.finalize().into_bytes()
    };
    let stored_key = Sha256::digest(key(b"Client Key"));
    let server_key = key(b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// (PostgreSQL's own verifier of a password is the reference: the store
/// tests compare ours with it, salt for salt.)
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verifier_has_its_own_salt() {
        assert_ne!(verifier("pencil"), verifier("pencil"));
    }
}
