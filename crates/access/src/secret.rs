//! Making, hashing and comparing secrets.
//!
//! People's passwords (web and registry) are hashed with argon2id. Token secrets are 256 random
//! bits, so a SHA-256 of them is enough to store and lets a request find its token by one lookup.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of API token secrets, so they are recognisable (and scannable) wherever they leak.
pub const TOKEN_PREFIX: &str = "bg_";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes
}

/// A new API token secret: `bg_` and 64 hex characters.
pub fn new_token_secret() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(random_bytes::<32>()))
}

/// A new random password of 24 letters and digits (about 143 bits).
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut password = String::with_capacity(24);
    while password.len() < 24 {
        for byte in random_bytes::<32>() {
            // Rejection sampling keeps every character equally likely.
            let limit = 256 - 256 % ALPHABET.len();
            if (byte as usize) < limit && password.len() < 24 {
                password.push(ALPHABET[byte as usize % ALPHABET.len()] as char);
            }
        }
    }
    password
}

/// A random hex string of `N` bytes, for session ids, CSRF secrets and signing keys.
pub fn random_hex<const N: usize>() -> String {
    hex::encode(random_bytes::<N>())
}

/// SHA-256 of a secret, hex: how tokens and sessions are stored.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// An argon2id PHC string of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password with default parameters")
        .to_string()
}

/// An argon2id PHC string of a password buildgrid generated (a registry password: 143 random
/// bits). Guessing is hopeless whatever the cost, so it takes 4 MiB instead of the default
/// 19 MiB a person's password gets: the peak memory of a server answering many first pulls stays
/// small. The parameters are in the string, so `verify_password` handles both.
pub fn hash_generated_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes make a valid salt");
    let params = argon2::Params::new(4096, 3, 1, None).expect("valid argon2 parameters");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// Whether `password` matches an argon2id PHC string (constant time in the password).
pub fn verify_password(password: &str, phc: &str) -> bool {
    verify_password_in(password, phc, &mut Vec::new())
}

/// `verify_password` with argon2's working memory in `memory`, grown to what the hash's
/// parameters need and kept for the next call, so repeated checks allocate nothing.
pub fn verify_password_in(password: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(params), Ok(algorithm), Some(salt), Some(expected)) = (
        Params::try_from(&hash),
        Algorithm::try_from(hash.algorithm),
        hash.salt,
        hash.hash,
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let mut output = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut output, &mut memory[..])
        .is_ok()
        && output.ct_eq(expected.as_bytes()).into()
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horse ", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        let generated = hash_generated_password("Zx7");
        assert!(
            generated.starts_with("$argon2id$v=19$m=4096,t=3,p=1$"),
            "{generated}"
        );
        assert!(verify_password("Zx7", &generated));
        assert!(!verify_password("Zx8", &generated));
        let mut memory = Vec::new();
        assert!(verify_password_in("correct horse", &hash, &mut memory));
        assert_eq!(memory.len(), 19 * 1024, "default parameters take 19 MiB");
        assert!(verify_password_in("Zx7", &generated, &mut memory));
        assert!(!verify_password_in("Zx8", &generated, &mut memory));
        assert_eq!(memory.len(), 19 * 1024, "the memory is kept");
    }

    #[test]
    fn generated_secrets_have_their_shape() {
        let password = new_password();
        assert_eq!(password.len(), 24);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(password, new_password());
        let token = new_token_secret();
        assert!(token.starts_with("bg_") && token.len() == 67, "{token}");
    }

    #[test]
    fn same_secret_compares_whole_strings() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
