use std::fmt;
use std::io;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A content digest, `sha256:<64 lowercase hex>`. The only algorithm buildgrid stores.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm: write it as sha256:<64 hex characters>")]
    MissingAlgorithm(String),
    #[error("digest algorithm {0:?} is not supported: only sha256 is")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} is malformed: sha256 digests are 64 lowercase hex characters")]
    Malformed(String),
}

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, encoded)) = text.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(shorten(text)));
        };
        // The OCI grammar allows other algorithms; a registry may refuse them.
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if !algorithm_ok {
            return Err(DigestError::Malformed(shorten(text)));
        }
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(shorten(algorithm)));
        }
        if encoded.len() != 64
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Malformed(shorten(text)));
        }
        Ok(Digest {
            hex: encoded.to_owned(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    pub fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest {
            hex: hex::encode(raw),
        }
    }

    /// The 64 hex characters without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(100).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An `io::Write` sink that hashes and counts what passes through it.
#[derive(Default)]
pub struct Sha256Writer {
    hasher: Sha256,
    len: u64,
}

impl Sha256Writer {
    pub fn new() -> Sha256Writer {
        Sha256Writer::default()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(self.hasher.finalize().into()), self.len)
    }
}

impl io::Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Result<&str, DigestError>) {
        let actual = Digest::parse(input).map(|d| d.to_string());
        assert_eq!(actual, expected.map(str::to_owned));
    }

    #[test]
    fn parse() {
        let good = format!("sha256:{}", "ab".repeat(32));
        check(&good, Ok(&good));
        check(
            "sha256:abc",
            Err(DigestError::Malformed("sha256:abc".into())),
        );
        let upper = format!("sha256:{}", "AB".repeat(32));
        check(&upper, Err(DigestError::Malformed(upper.clone())));
        check(
            &format!("sha512:{}", "ab".repeat(64)),
            Err(DigestError::UnsupportedAlgorithm("sha512".into())),
        );
        check(
            "latest",
            Err(DigestError::MissingAlgorithm("latest".into())),
        );
        check("../x:y", Err(DigestError::Malformed("../x:y".into())));
        let traversal = format!("sha256:../../{}", "a".repeat(58));
        check(&traversal, Err(DigestError::Malformed(traversal.clone())));
    }

    #[test]
    fn of_empty() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
