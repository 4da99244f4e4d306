//! Apps and the image names their builds get: `<namespace>/<app>.<repo>:<commit>`.

use std::fmt;

use crate::{NameError, RepoName, Tag};

/// `<namespace>/<app>`, each part one component of the OCI name grammar.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppRef {
    namespace: String,
    app: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppError {
    #[error("app {0:?} must be written <namespace>/<app>, e.g. acme/shop")]
    Shape(String),
    #[error(
        "{what} {value:?} breaks the OCI name rule: lowercase letters and digits, separated inside by `.`, `_`, `__` or dashes, not starting or ending with a separator"
    )]
    Component { what: &'static str, value: String },
    #[error(
        "app name {0:?} may not contain `.`: the image name puts a `.` between app and repository"
    )]
    DotInApp(String),
    #[error(
        "git URL {0:?} has no host and path to name the image after (e.g. https://github.com/acme/shop.git)"
    )]
    GitUrl(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("commit {0:?} is not a full 40-character hex commit id")]
    Commit(String),
    #[error(
        "the webhook secret is {0} bytes long; it needs at least {MIN_WEBHOOK_SECRET} (leave it out to get a random one)"
    )]
    WebhookSecret(usize),
    #[error(
        "branch {0:?} has no moving tag: after `/` becomes `-` a tag may hold only letters, digits, `_`, `.` and `-`, start with a letter, digit or `_`, and be at most 128 characters"
    )]
    BranchTag(String),
    #[error(
        "branch {0:?} has no moving tag: a tag of 40 hex digits is a commit's, and commit tags never move"
    )]
    BranchLikeCommit(String),
}

/// The shortest webhook secret an app may have, in bytes. Anyone who knows (or guesses) the
/// secret can sign deliveries, so an empty or short one would let anyone queue builds.
pub const MIN_WEBHOOK_SECRET: usize = 16;

/// Refuses a webhook secret shorter than [`MIN_WEBHOOK_SECRET`] bytes (an empty one too).
pub fn check_webhook_secret(secret: &str) -> Result<(), AppError> {
    if secret.len() < MIN_WEBHOOK_SECRET {
        return Err(AppError::WebhookSecret(secret.len()));
    }
    Ok(())
}

impl AppRef {
    pub fn parse(text: &str) -> Result<AppRef, AppError> {
        let Some((namespace, app)) = text.split_once('/') else {
            return Err(AppError::Shape(text.to_owned()));
        };
        if namespace.is_empty() || app.is_empty() || app.contains('/') {
            return Err(AppError::Shape(text.to_owned()));
        }
        for (what, value) in [("namespace", namespace), ("app name", app)] {
            if RepoName::parse(value).is_err() {
                return Err(AppError::Component {
                    what,
                    value: value.to_owned(),
                });
            }
        }
        if app.contains('.') {
            return Err(AppError::DotInApp(app.to_owned()));
        }
        Ok(AppRef {
            namespace: namespace.to_owned(),
            app: app.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// The repository name of the images built from `git_url`: `<namespace>/<app>.<repo slug>`.
    pub fn image_repo(&self, git_url: &str) -> Result<RepoName, AppError> {
        let slug = repo_slug(git_url)?;
        Ok(RepoName::parse(&format!(
            "{}/{}.{slug}",
            self.namespace, self.app
        ))?)
    }
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.app)
    }
}

impl fmt::Debug for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The git URL's host and path as one OCI name component:
/// `https://github.com/cloud66/maestro-demo.git` → `github-com-cloud66-maestro-demo`.
/// Credentials, port, scheme and a trailing `.git` are left out; `git@host:path` works too.
pub fn repo_slug(git_url: &str) -> Result<String, AppError> {
    let error = || AppError::GitUrl(redact_url(git_url));
    let url = git_url.trim();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        // scp-like: user@host:path
        None => url,
    };
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) if !url.contains("://") && host.contains(':') => {
            let (host, first) = host.split_once(':').unwrap();
            (host.to_owned(), format!("{first}/{path}"))
        }
        Some((host, path)) => (host.to_owned(), path.to_owned()),
        None => match rest.split_once(':') {
            Some((host, path)) => (host.to_owned(), path.to_owned()),
            None => return Err(error()),
        },
    };
    let host = host.split(':').next().unwrap_or("");
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let raw = format!("{host}/{path}").to_lowercase();
    let mut slug = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-').to_owned();
    if host.is_empty() || path.is_empty() || slug.is_empty() {
        return Err(error());
    }
    Ok(slug)
}

/// The URL with its user information (user, password or token) replaced by `***`, for logs
/// and messages: `https://ghp_x@github.com/a/b.git` → `https://***@github.com/a/b.git`.
pub fn redact_url(url: &str) -> String {
    match split_user_info(url) {
        Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
        None => url.to_owned(),
    }
}

/// The URL without user information, for labels people read off an image.
pub fn public_url(url: &str) -> String {
    match split_user_info(url) {
        Some((scheme, rest)) => format!("{scheme}://{rest}"),
        None => url.to_owned(),
    }
}

/// `scheme://user-info@rest` → (scheme, rest).
fn split_user_info(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((scheme, &rest[at + 1..]))
}

/// A full commit id as a tag.
pub fn commit_tag(commit: &str) -> Result<Tag, AppError> {
    let ok = commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(AppError::Commit(commit.to_owned()));
    }
    Ok(Tag::parse(&commit.to_ascii_lowercase())?)
}

/// The moving tag of a branch: the branch name with each `/` made a `-` (`feature/login` →
/// `feature-login`), which must then be a valid OCI tag; any other character a tag may not hold
/// refuses the branch (no moving tag), never a silent rewrite. A name of 40 hex digits is
/// refused too, so a branch tag never takes a commit's tag.
pub fn branch_tag(branch: &str) -> Result<Tag, AppError> {
    let name = branch.replace('/', "-");
    if name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::BranchLikeCommit(branch.to_owned()));
    }
    Tag::parse(&name).map_err(|_| AppError::BranchTag(branch.to_owned()))
}

/// The base images of a Dockerfile: the `FROM` images that are not earlier stages or `scratch`.
pub fn base_images(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut bases = Vec::new();
    let mut joined = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            joined.push_str(start);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        let instruction = std::mem::take(&mut joined);
        let mut words = instruction.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let words: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let Some(image) = words.first() else { continue };
        let lower = image.to_lowercase();
        if lower != "scratch" && !stages.contains(&lower) && !bases.contains(&image.to_string()) {
            bases.push(image.to_string());
        }
        if let [_, as_word, name] = words.as_slice()
            && as_word.eq_ignore_ascii_case("AS")
        {
            stages.push(name.to_lowercase());
        }
    }
    bases
}

#[cfg(test)]
mod tests {
    #[test]
    fn branch_tags() {
        let tag = |b: &str| super::branch_tag(b).map(|t| t.as_str().to_owned());
        assert_eq!(tag("main").unwrap(), "main");
        assert_eq!(tag("feature/login").unwrap(), "feature-login");
        assert_eq!(tag("release/1.2_x").unwrap(), "release-1.2_x");
        assert_eq!(tag("Dev").unwrap(), "Dev");
        for refused in [
            "fix+1",
            "caf\u{e9}",
            "/lead",
            ".hidden",
            "-x",
            "a@b",
            &"x".repeat(129),
            "0123456789abcdef0123456789abcdef01234567",
            "0123456789ABCDEF0123456789abcdef01234567",
        ] {
            assert!(tag(refused).is_err(), "{refused:?} has no moving tag");
        }
    }

    use super::*;

    #[track_caller]
    fn check_slug(url: &str, expected: Result<&str, ()>) {
        assert_eq!(
            repo_slug(url).map_err(|_| ()),
            expected.map(str::to_owned),
            "{url}"
        );
    }

    #[test]
    fn slugs() {
        check_slug(
            "https://github.com/cloud66/maestro-demo.git",
            Ok("github-com-cloud66-maestro-demo"),
        );
        check_slug("git@github.com:acme/Shop.git", Ok("github-com-acme-shop"));
        check_slug(
            "ssh://git@gitlab.example.com:2222/a/b/c",
            Ok("gitlab-example-com-a-b-c"),
        );
        check_slug(
            "https://user:secret@git.example.com/acme/shop/",
            Ok("git-example-com-acme-shop"),
        );
        check_slug("file:///srv/git/shop.git", Err(()));
        check_slug(
            "file://localhost/srv/git/shop.git",
            Ok("localhost-srv-git-shop"),
        );
        check_slug(
            "http://127.0.0.1:3000/acme/app.git",
            Ok("127-0-0-1-acme-app"),
        );
        check_slug("nonsense", Err(()));
        check_slug("https://github.com/", Err(()));
    }

    #[test]
    fn apps() {
        let app = AppRef::parse("acme/shop").unwrap();
        assert_eq!(
            app.image_repo("https://github.com/acme/shop.git")
                .unwrap()
                .as_str(),
            "acme/shop.github-com-acme-shop"
        );
        for bad in [
            "acme",
            "acme/",
            "/shop",
            "a/b/c",
            "Acme/shop",
            "acme/sh op",
            "acme/-x",
        ] {
            assert!(AppRef::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AppRef::parse("acme/shop.v2"),
            Err(AppError::DotInApp("shop.v2".into()))
        );
        let message = AppRef::parse("Acme/shop").unwrap_err().to_string();
        assert!(message.contains("OCI name rule"), "{message}");
    }

    #[test]
    fn redacts_credentials() {
        for url in [
            "https://bot:ghp_secret@github.com/a/b.git",
            "https://ghp_secret@github.com/a/b.git",
            "https://x:y:z@github.com/a/b.git",
        ] {
            assert_eq!(redact_url(url), "https://***@github.com/a/b.git", "{url}");
            assert_eq!(public_url(url), "https://github.com/a/b.git", "{url}");
        }
        assert_eq!(
            redact_url("https://github.com/a/b@c.git"),
            "https://github.com/a/b@c.git"
        );
        assert_eq!(
            redact_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(redact_url("ssh://git@host/a.git"), "ssh://***@host/a.git");
    }

    #[test]
    fn webhook_secrets() {
        assert_eq!(check_webhook_secret(""), Err(AppError::WebhookSecret(0)));
        assert_eq!(
            check_webhook_secret("fifteen-bytes!!"),
            Err(AppError::WebhookSecret(15))
        );
        assert_eq!(check_webhook_secret("sixteen-bytes!!!"), Ok(()));
        let message = check_webhook_secret("s3cret").unwrap_err().to_string();
        assert!(message.contains("at least 16"), "{message}");
    }

    #[test]
    fn commits() {
        assert!(commit_tag(&"a".repeat(40)).is_ok());
        assert!(commit_tag("abc").is_err());
        assert!(commit_tag(&"g".repeat(40)).is_err());
    }

    #[track_caller]
    fn check_bases(dockerfile: &str, expected: &[&str]) {
        assert_eq!(base_images(dockerfile), expected);
    }

    #[test]
    fn bases() {
        check_bases("FROM scratch\nCOPY x /x\n", &[]);
        check_bases("FROM alpine:3.19\n", &["alpine:3.19"]);
        check_bases(
            "# syntax\nFROM --platform=$BUILDPLATFORM golang:1.22 AS build\nRUN x\nFROM build AS test\nFROM gcr.io/distroless/static\nCOPY --from=build /a /a\n",
            &["golang:1.22", "gcr.io/distroless/static"],
        );
        check_bases("from \\\n  debian:12 as base\nFROM base\n", &["debian:12"]);
        check_bases("ARG BASE=busybox\nFROM ${BASE}\n", &["${BASE}"]);
    }
}
