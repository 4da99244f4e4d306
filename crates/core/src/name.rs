use std::fmt;

use crate::{Digest, DigestError};

/// A repository name as the OCI distribution spec defines it: path components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`, at most 255 characters in all.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

pub const REPO_NAME_MAX_LEN: usize = 255;
pub const TAG_MAX_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name is empty")]
    EmptyName,
    #[error(
        "repository name {name:?} is longer than {REPO_NAME_MAX_LEN} characters",
        name = shorten(.0)
    )]
    NameTooLong(String),
    #[error(
        "repository name {name:?} breaks the OCI name rule: each `/`-separated part is lowercase letters and digits, separated inside by `.`, `_`, `__` or dashes, and neither starts nor ends with a separator",
        name = shorten(.0)
    )]
    InvalidName(String),
    #[error(
        "tag {tag:?} breaks the OCI tag rule: 1 to 128 of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
        tag = shorten(.0)
    )]
    InvalidTag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

fn shorten(text: &str) -> String {
    text.chars().take(100).collect()
}

impl RepoName {
    pub fn parse(text: &str) -> Result<RepoName, NameError> {
        if text.is_empty() {
            return Err(NameError::EmptyName);
        }
        if text.len() > REPO_NAME_MAX_LEN {
            return Err(NameError::NameTooLong(text.to_owned()));
        }
        if !text.split('/').all(is_path_component) {
            return Err(NameError::InvalidName(text.to_owned()));
        }
        Ok(RepoName(text.to_owned()))
    }

    /// The namespace that access rules apply to: the first path component.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            expect_alnum = false;
            i += 1;
            continue;
        }
        if expect_alnum {
            return false;
        }
        let run = bytes[i..].iter().take_while(|&&c| c == b).count();
        let separator_ok = match b {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !separator_ok {
            return false;
        }
        i += run;
        expect_alnum = true;
    }
    !bytes.is_empty() && !expect_alnum
}

impl Tag {
    pub fn parse(text: &str) -> Result<Tag, NameError> {
        let bytes = text.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= TAG_MAX_LEN
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(NameError::InvalidTag(text.to_owned()));
        }
        Ok(Tag(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Reference {
    /// A reference containing `:` is a digest, anything else a tag.
    pub fn parse(text: &str) -> Result<Reference, NameError> {
        if text.contains(':') {
            return Ok(Reference::Digest(Digest::parse(text)?));
        }
        Ok(Reference::Tag(Tag::parse(text)?))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => tag.fmt(f),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_name(input: &str, valid: bool) {
        assert_eq!(RepoName::parse(input).is_ok(), valid, "{input:?}");
    }

    #[test]
    fn repo_names() {
        for good in [
            "a",
            "library/busybox",
            "acme/shop.github-com-acme-shop",
            "a__b",
            "a---b",
            "a.b_c/d9",
            "0/1/2",
        ] {
            check_name(good, true);
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a..b", "a___b", "-a", "a-", "a b",
            "a%2fb", "é",
        ] {
            check_name(bad, false);
        }
        check_name(&"a".repeat(255), true);
        assert_eq!(
            RepoName::parse(&"a".repeat(256)),
            Err(NameError::NameTooLong("a".repeat(256)))
        );
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.0", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(Tag::parse(good).is_ok(), "{good:?}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("v1").unwrap(),
            Reference::Tag(Tag::parse("v1").unwrap())
        );
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            Reference::parse(&digest).unwrap(),
            Reference::Digest(Digest::parse(&digest).unwrap())
        );
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(NameError::Digest(_))
        ));
    }

    #[test]
    fn error_names_the_rule() {
        let message = RepoName::parse("Shop").unwrap_err().to_string();
        assert!(message.contains("OCI name rule"), "{message}");
    }
}
