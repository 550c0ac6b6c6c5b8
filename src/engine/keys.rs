//! Secrets: API keys (stored only as SHA-256 hashes) and execution tokens (found by their
//! SHA-256). Both carry 256 random bits, so a fast hash is enough. Neither is ever compared
//! byte by byte as presented: the database looks up hashes, whose timing tells nothing
//! about the secret, and the last check of a key's hash runs in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// A freshly created API key; `key` is shown once and never stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewApiKey {
    pub id: Uuid,
    pub key: String,
}

impl NewApiKey {
    /// A new random key.
    pub fn generate() -> Self {
        NewApiKey {
            id: Uuid::now_v7(),
            key: format!("sk_{}", random_text()),
        }
    }
}

/// A new execution token.
pub fn token() -> String {
    random_text()
}

fn random_text() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of an API key, and the form an execution token is looked up by: SHA-256
/// in lowercase hex.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compares two key hashes in constant time.
pub fn hashes_match(stored: &str, given: &str) -> bool {
    stored.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_are_long_random_and_distinct() {
        let (first, second) = (NewApiKey::generate(), NewApiKey::generate());

        assert!(first.key.starts_with("sk_"));
        assert_eq!(first.key.len(), 3 + 43);
        assert_ne!(first.key, second.key);
        assert_ne!(token(), token());
    }

    #[test]
    fn hashes_are_stable_hex_and_compared_exactly() {
        let stored = hash("secret");

        assert_eq!(stored.len(), 64);
        assert!(hashes_match(&stored, &hash("secret")));
        assert!(!hashes_match(&stored, &hash("secret2")));
    }
}
