//! Agents' passwords: argon2id (RFC 9106) with a random salt, kept as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`: the parameters travel with the hash, so they
//! can be raised later without breaking old accounts). Never stored or logged in clear.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted.
pub const MIN_LEN: usize = 8;
/// Longest (argon2 takes any length; this bounds the work a login form can ask for).
pub const MAX_LEN: usize = 256;

/// Why a password cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password has {MIN_LEN} to {MAX_LEN} characters")]
    Length,
    /// No OS randomness for the salt.
    #[error("no randomness for the salt")]
    NoRandomness,
    /// The hasher failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane (~20 ms here).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string to store for `password`.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let n = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&n) {
        return Err(PasswordError::Length);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| PasswordError::NoRandomness)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// `password` matches `stored` (a PHC string from [`hash`]). A malformed `stored` matches
/// nothing. With `stored` None (no such agent) the same work is done against a fixed hash,
/// so an unknown agent and a wrong password take the same time.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    if password.len() > MAX_LEN * 4 {
        return false;
    }
    let known = stored.is_some();
    let phc = stored.unwrap_or(DUMMY);
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && known
}

/// A hash of a password nobody has, with the same parameters (for unknown agents).
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c3dpdGNoYm9hcmQtZHVtbXk$VGVyZ9M0kCm5Lm4YxDBIW0kUK4ve1vjbcg5W8ie+yUQ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a random salt each time");
        assert!(verify("correct horse", Some(&a)));
        assert!(!verify("correct horsf", Some(&a)));
        assert!(!verify("correct horse", Some("not a hash")));
        assert!(!verify("anything", None));
        assert_eq!(hash("short"), Err(PasswordError::Length));
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY).is_ok());
    }
}
