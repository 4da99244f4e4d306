//! Webhooks from GitHub, Gitea and GitLab: signature checks and push payloads, as pure
//! functions.

use buildgrid_core::app::MIN_WEBHOOK_SECRET;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
}

impl Provider {
    pub fn parse(text: &str) -> Option<Provider> {
        match text {
            "github" => Some(Provider::GitHub),
            "gitea" => Some(Provider::Gitea),
            "gitlab" => Some(Provider::GitLab),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::Gitea => "gitea",
            Provider::GitLab => "gitlab",
        }
    }
}

/// The request headers a webhook check reads, lower-cased names.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for actix_web::http::header::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        actix_web::http::header::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A push to build: the ref and the commit it points at now.
    Push {
        git_ref: String,
        commit: String,
        delivery: Option<String>,
        /// The URLs the payload gives for the pushed repository (clone, web and SSH forms), so
        /// that a push to the repository of one of the app's services builds that one.
        repository: Vec<String>,
    },
    /// A push that deleted a branch (GitHub's `"deleted": true`, or `after` 40 zeros).
    Deleted {
        /// Without `refs/heads/`.
        branch: String,
        delivery: Option<String>,
        /// As in [`Verdict::Push`].
        repository: Vec<String>,
    },
    /// A valid delivery that asks for nothing (a ping, another event, a deleted tag).
    Ignore(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the webhook signature is missing: set the app's webhook secret in the {0} webhook")]
    MissingSignature(&'static str),
    #[error("the webhook signature does not match the app's webhook secret")]
    BadSignature,
    #[error("the webhook payload is not a push event this builder understands: {0}")]
    Payload(String),
    /// The app's stored secret is too short to prove anything (an app created before secrets
    /// had a minimum length). Shown to the sender as [`WebhookError::BadSignature`].
    #[error(
        "the app's webhook secret is {0} bytes long, under the {MIN_WEBHOOK_SECRET} a delivery needs"
    )]
    WeakSecret(usize),
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    after: Option<String>,
    checkout_sha: Option<String>,
    #[serde(default)]
    deleted: bool,
    /// GitHub and Gitea; GitLab sends `repository` too, with other field names.
    #[serde(default)]
    repository: Option<RepositoryUrls>,
    /// GitLab.
    #[serde(default)]
    project: Option<RepositoryUrls>,
}

#[derive(Deserialize, Default)]
struct RepositoryUrls {
    clone_url: Option<String>,
    html_url: Option<String>,
    ssh_url: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
}

impl RepositoryUrls {
    fn urls(self) -> impl Iterator<Item = String> {
        [
            self.clone_url,
            self.html_url,
            self.ssh_url,
            self.git_http_url,
            self.git_ssh_url,
            self.web_url,
        ]
        .into_iter()
        .flatten()
        .filter(|u| !u.is_empty())
    }
}

const ZERO_COMMIT: &str = "0000000000000000000000000000000000000000";

/// Checks that a delivery carries the header its provider signs it with, before its body is
/// read: a request without one is refused without reading (or buffering) a byte of it.
pub fn require_signature(provider: Provider, headers: &dyn Headers) -> Result<(), WebhookError> {
    match provider {
        Provider::GitHub | Provider::Gitea => signature(provider, headers).map(drop),
        Provider::GitLab => gitlab_token(headers).map(drop),
    }
}

fn signature(provider: Provider, headers: &dyn Headers) -> Result<Vec<u8>, WebhookError> {
    let signature = headers
        .get("x-hub-signature-256")
        .map(|s| s.strip_prefix("sha256=").unwrap_or(s))
        .or_else(|| headers.get("x-gitea-signature"))
        .ok_or(WebhookError::MissingSignature(provider.as_str()))?;
    hex::decode(signature.trim()).map_err(|_| WebhookError::BadSignature)
}

fn gitlab_token(headers: &dyn Headers) -> Result<&str, WebhookError> {
    headers
        .get("x-gitlab-token")
        .ok_or(WebhookError::MissingSignature("gitlab"))
}

/// Checks a delivery's signature with `secret` and reads its push, if it is one. A secret
/// shorter than [`MIN_WEBHOOK_SECRET`] bytes verifies nothing: anyone could sign with it.
pub fn verify(
    provider: Provider,
    headers: &dyn Headers,
    body: &[u8],
    secret: &str,
) -> Result<Verdict, WebhookError> {
    if secret.len() < MIN_WEBHOOK_SECRET {
        return Err(WebhookError::WeakSecret(secret.len()));
    }
    match provider {
        Provider::GitHub | Provider::Gitea => {
            let signature = signature(provider, headers)?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes keys of any length");
            mac.update(body);
            // verify_slice compares in constant time.
            mac.verify_slice(&signature)
                .map_err(|_| WebhookError::BadSignature)?;
        }
        Provider::GitLab => {
            let token = gitlab_token(headers)?;
            if !constant_time_eq(token.as_bytes(), secret.as_bytes()) {
                return Err(WebhookError::BadSignature);
            }
        }
    }
    let event = match provider {
        Provider::GitHub => headers.get("x-github-event"),
        Provider::Gitea => headers
            .get("x-gitea-event")
            .or_else(|| headers.get("x-github-event")),
        Provider::GitLab => headers.get("x-gitlab-event"),
    }
    .unwrap_or("");
    let is_push = matches!(event, "push" | "Push Hook");
    if !is_push {
        return Ok(Verdict::Ignore(format!("event {event:?} is not a push")));
    }
    let delivery = match provider {
        Provider::GitHub => headers.get("x-github-delivery"),
        Provider::Gitea => headers.get("x-gitea-delivery"),
        Provider::GitLab => headers
            .get("x-gitlab-event-uuid")
            .or_else(|| headers.get("x-gitlab-webhook-uuid")),
    }
    .map(str::to_owned);
    let payload: PushPayload =
        serde_json::from_slice(body).map_err(|e| WebhookError::Payload(e.to_string()))?;
    let commit = payload
        .checkout_sha
        .filter(|c| !c.is_empty())
        .or(payload.after)
        .unwrap_or_default();
    let repository = payload
        .repository
        .into_iter()
        .chain(payload.project)
        .flat_map(RepositoryUrls::urls)
        .collect();
    if payload.deleted || commit == ZERO_COMMIT {
        return Ok(match payload.git_ref.strip_prefix("refs/heads/") {
            Some(branch) => Verdict::Deleted {
                branch: branch.to_owned(),
                delivery,
                repository,
            },
            None => Verdict::Ignore(format!("{} was deleted", payload.git_ref)),
        });
    }
    if commit.is_empty() {
        return Ok(Verdict::Ignore(format!(
            "{} names no commit",
            payload.git_ref
        )));
    }
    Ok(Verdict::Push {
        git_ref: payload.git_ref,
        commit,
        delivery,
        repository,
    })
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, String>);

    impl Headers for Map {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    const SECRET: &str = "a-long-enough-s3cret";

    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"0123456789012345678901234567890123456789","deleted":false}"#;

    #[track_caller]
    fn check(
        provider: Provider,
        headers: &[(&'static str, String)],
        body: &[u8],
        expected: Result<Verdict, WebhookError>,
    ) {
        let map = Map(headers.iter().cloned().collect());
        assert_eq!(verify(provider, &map, body, SECRET), expected);
    }

    fn push(delivery: Option<&str>) -> Verdict {
        Verdict::Push {
            git_ref: "refs/heads/main".into(),
            commit: "0123456789012345678901234567890123456789".into(),
            delivery: delivery.map(str::to_owned),
            repository: Vec::new(),
        }
    }

    #[test]
    fn pushes_name_their_repository() {
        let body = br#"{"ref":"refs/heads/main","after":"0123456789012345678901234567890123456789",
            "repository":{"clone_url":"https://git.example.com/acme/api.git","ssh_url":""},
            "project":{"git_ssh_url":"git@git.example.com:acme/api.git"}}"#;
        let headers = [
            (
                "x-hub-signature-256",
                format!("sha256={}", sign(SECRET, body)),
            ),
            ("x-github-event", "push".to_owned()),
        ];
        let map = Map(headers.iter().cloned().collect());
        match verify(Provider::GitHub, &map, body, SECRET) {
            Ok(Verdict::Push { repository, .. }) => assert_eq!(
                repository,
                [
                    "https://git.example.com/acme/api.git",
                    "git@git.example.com:acme/api.git"
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn github() {
        let good = format!("sha256={}", sign(SECRET, BODY));
        check(
            Provider::GitHub,
            &[
                ("x-hub-signature-256", good.clone()),
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d1".into()),
            ],
            BODY,
            Ok(push(Some("d1"))),
        );
        let wrong = format!("sha256={}", sign("another-long-enough-secret", BODY));
        check(
            Provider::GitHub,
            &[
                ("x-hub-signature-256", wrong),
                ("x-github-event", "push".into()),
            ],
            BODY,
            Err(WebhookError::BadSignature),
        );
        check(
            Provider::GitHub,
            &[("x-hub-signature-256", "sha256=zz".into())],
            BODY,
            Err(WebhookError::BadSignature),
        );
        check(
            Provider::GitHub,
            &[],
            BODY,
            Err(WebhookError::MissingSignature("github")),
        );
        check(
            Provider::GitHub,
            &[
                ("x-hub-signature-256", good.clone()),
                ("x-github-event", "ping".into()),
            ],
            BODY,
            Ok(Verdict::Ignore("event \"ping\" is not a push".into())),
        );
        // A body changed after signing.
        check(
            Provider::GitHub,
            &[
                ("x-hub-signature-256", good),
                ("x-github-event", "push".into()),
            ],
            &BODY[1..],
            Err(WebhookError::BadSignature),
        );
    }

    #[test]
    fn empty_and_short_secrets_verify_nothing() {
        for secret in ["", "fifteen-bytes!!"] {
            let headers = [
                (
                    "x-hub-signature-256",
                    format!("sha256={}", sign(secret, BODY)),
                ),
                ("x-github-event", "push".to_owned()),
                ("x-gitlab-token", secret.to_owned()),
                ("x-gitlab-event", "Push Hook".to_owned()),
            ];
            let map = Map(headers.iter().cloned().collect());
            for provider in [Provider::GitHub, Provider::Gitea, Provider::GitLab] {
                assert_eq!(
                    verify(provider, &map, BODY, secret),
                    Err(WebhookError::WeakSecret(secret.len())),
                    "{provider:?} {secret:?}"
                );
            }
        }
    }

    #[test]
    fn the_signature_header_is_required_before_the_body() {
        let none = Map(HashMap::new());
        for provider in [Provider::GitHub, Provider::Gitea, Provider::GitLab] {
            assert_eq!(
                require_signature(provider, &none),
                Err(WebhookError::MissingSignature(provider.as_str()))
            );
        }
        let signed = Map([("x-hub-signature-256", "sha256=00ff".to_owned())].into());
        assert_eq!(require_signature(Provider::GitHub, &signed), Ok(()));
        let garbled = Map([("x-gitea-signature", "zz".to_owned())].into());
        assert_eq!(
            require_signature(Provider::Gitea, &garbled),
            Err(WebhookError::BadSignature)
        );
        let token = Map([("x-gitlab-token", "t".to_owned())].into());
        assert_eq!(require_signature(Provider::GitLab, &token), Ok(()));
    }

    #[test]
    fn gitea_and_gitlab() {
        check(
            Provider::Gitea,
            &[
                ("x-gitea-signature", sign(SECRET, BODY)),
                ("x-gitea-event", "push".into()),
                ("x-gitea-delivery", "g1".into()),
            ],
            BODY,
            Ok(push(Some("g1"))),
        );
        let gitlab = br#"{"ref":"refs/heads/main","after":"x","checkout_sha":"0123456789012345678901234567890123456789"}"#;
        check(
            Provider::GitLab,
            &[
                ("x-gitlab-token", SECRET.into()),
                ("x-gitlab-event", "Push Hook".into()),
            ],
            gitlab,
            Ok(push(None)),
        );
        check(
            Provider::GitLab,
            &[
                ("x-gitlab-token", "a-long-enough-s3cret!".into()),
                ("x-gitlab-event", "Push Hook".into()),
            ],
            gitlab,
            Err(WebhookError::BadSignature),
        );
    }

    #[test]
    fn deleted_branches() {
        let deleted = |branch: &str, delivery: Option<&str>| {
            Ok(Verdict::Deleted {
                branch: branch.into(),
                delivery: delivery.map(str::to_owned),
                repository: Vec::new(),
            })
        };
        let github = br#"{"ref":"refs/heads/feature/x","before":"0123456789012345678901234567890123456789","after":"0000000000000000000000000000000000000000","deleted":true}"#;
        check(
            Provider::GitHub,
            &[
                (
                    "x-hub-signature-256",
                    format!("sha256={}", sign(SECRET, github)),
                ),
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d1".into()),
            ],
            github,
            deleted("feature/x", Some("d1")),
        );
        let gitea =
            br#"{"ref":"refs/heads/old","after":"0000000000000000000000000000000000000000"}"#;
        check(
            Provider::Gitea,
            &[
                ("x-gitea-signature", sign(SECRET, gitea)),
                ("x-gitea-event", "push".into()),
            ],
            gitea,
            deleted("old", None),
        );
        let gitlab = br#"{"ref":"refs/heads/old","after":"0000000000000000000000000000000000000000","checkout_sha":null}"#;
        check(
            Provider::GitLab,
            &[
                ("x-gitlab-token", SECRET.into()),
                ("x-gitlab-event", "Push Hook".into()),
            ],
            gitlab,
            deleted("old", None),
        );
        // A deleted tag is no branch.
        let tag = br#"{"ref":"refs/tags/v1","after":"0000000000000000000000000000000000000000","deleted":true}"#;
        check(
            Provider::GitHub,
            &[
                (
                    "x-hub-signature-256",
                    format!("sha256={}", sign(SECRET, tag)),
                ),
                ("x-github-event", "push".into()),
            ],
            tag,
            Ok(Verdict::Ignore("refs/tags/v1 was deleted".into())),
        );
    }
}
