//! `s3://<bucket>[/<prefix>]`, as `--blob-store` and `BUILDGRID_BLOB_STORE` take it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing slashes; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<S3Location, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            format!("{url:?} is not an object store address: write s3://<bucket>[/<prefix>]")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(format!(
                "{url:?}: {bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' and '.')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Err(format!(
                "{url:?}: the prefix {prefix:?} is not a plain key prefix"
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix as keys start with it: empty, or ending in `/`.
    pub fn key_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_into_bucket_and_prefix() {
        let plain = S3Location::parse("s3://blobs").unwrap();
        assert_eq!(
            (plain.bucket.as_str(), plain.key_prefix()),
            ("blobs", String::new())
        );
        let nested = S3Location::parse("s3://my.bucket/team/a/").unwrap();
        assert_eq!(nested.bucket, "my.bucket");
        assert_eq!(nested.key_prefix(), "team/a/");
        assert_eq!(nested.to_string(), "s3://my.bucket/team/a");
    }

    #[test]
    fn bad_addresses_are_refused_with_what_to_write() {
        for (url, says) in [
            ("blobs", "s3://<bucket>"),
            ("https://x/y", "s3://<bucket>"),
            ("s3://", "not a bucket name"),
            ("s3://Upper", "not a bucket name"),
            ("s3://ab", "not a bucket name"),
            ("s3://bucket/../x", "not a plain key prefix"),
            ("s3://bucket/a//b", "not a plain key prefix"),
        ] {
            let error = S3Location::parse(url).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
    }
}
