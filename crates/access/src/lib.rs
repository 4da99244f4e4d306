//! Who may pull what, and who may build: users, their web and registry passwords, scoped API
//! tokens, public and private namespaces, registry bearer tokens, failed sign-in limits and the
//! audit log.
//!
//! Architecture invariant: no HTTP framework here. The registry, the builder and the web crate
//! read credentials off their requests and ask this crate; the rules live in one place.

mod accounts;
mod authenticate;
mod bearer;
mod limiter;
mod scope;
pub mod secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use buildgrid_core::{AppRef, RepoName};
use buildgrid_store::{AuditEntry, Store, StoreError, User};

pub use accounts::{
    SESSION_TTL, SYSTEM_USERS, Session, audit_now, bootstrap, create_session, create_token,
    create_user, end_session, regenerate_registry_password, reset_password, session, system_user,
    user,
};
pub use bearer::{BEARER_PREFIX, Claims, Grant};
pub use limiter::{Attempt, Hashing, LoginLimiter};
pub use scope::{Scope, ScopeError, Target};

/// How long a registry bearer token lives.
pub const REGISTRY_TOKEN_TTL: i64 = 300;
/// Failed sign-ins allowed per client address and per user name within `LOGIN_WINDOW`.
pub const LOGIN_ATTEMPTS: u32 = 10;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Password checks (argon2) running at once, on every path (web and registry): each holds
/// 19 MiB (a person's password) or 4 MiB (a registry password) and a core for tens of
/// milliseconds, so a flood of sign-ins costs at most 38 MiB, kept for reuse.
pub const HASHING_PERMITS: usize = 2;
/// How long a password check waits for its turn before it is refused (429 with `Retry-After`).
pub const HASHING_WAIT: Duration = Duration::from_secs(5);
const HASHING_RETRY_AFTER: u64 = 5;
/// How often a token's "last used" time is written, at most.
const TOUCH_INTERVAL: i64 = 60;

/// Who is asking, as far as their credentials prove.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    /// `None` for anonymous requests.
    pub user: Option<User>,
    /// The API token used, with its scopes; `None` when signed in with a password.
    pub token: Option<(i64, Vec<Scope>)>,
    /// The grants of a registry bearer token, which narrow what the request may do.
    pub claims: Option<Claims>,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal::default()
    }

    pub fn is_anonymous(&self) -> bool {
        self.user.is_none()
    }

    /// How the audit log names this principal.
    pub fn actor(&self) -> String {
        match (&self.user, &self.token) {
            (None, _) => "anonymous".to_owned(),
            (Some(user), None) => user.name.clone(),
            (Some(user), Some((id, _))) => format!("{} (token {id})", user.name),
        }
    }
}

/// Credentials as an `Authorization` header carries them.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

impl Credentials {
    pub fn parse(header: &str) -> Option<Credentials> {
        let (scheme, value) = header.trim().split_once(' ')?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Credentials::Bearer(value.to_owned()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Credentials that prove nothing. The message never contains a secret.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Past the failed sign-in limit, or too many sign-ins waiting for their password check.
    #[error("too many failed sign-ins or sign-ins at once: try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "invalid user name {0:?}: use 1 to 64 lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit"
    )]
    InvalidUserName(String),
    #[error("no user is named {0}")]
    NoSuchUser(String),
    #[error(
        "{0} is buildgrid's own user (builds and deploys pull as it): it is not managed by hand; choose another user"
    )]
    SystemUser(String),
    #[error("user {0} is not an admin, so its tokens cannot have the admin scope")]
    NotAdmin(String),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the first start made: shown once.
pub struct Bootstrap {
    pub user: Option<(String, String)>,
    pub token: Option<String>,
}

pub struct Access {
    store: Arc<Store>,
    key: Vec<u8>,
    limiter: LoginLimiter,
    /// Registry passwords checked lately: SHA-256 of (user id, password) → the argon2 hash it
    /// matched. A hit counts only while the user's stored hash is still that one, so argon2 runs
    /// once per password, not on every request of a pull.
    verified: Mutex<HashMap<[u8; 32], String>>,
    hashing: Hashing,
    touched: Mutex<HashMap<i64, i64>>,
    /// (actor, action, target, client) → (order of arrival, first time, count).
    audit: Mutex<HashMap<AuditKey, (usize, i64, u64)>>,
}

type AuditKey = (String, String, String, String);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A hash that no password matches, verified against when the user does not exist so that an
/// unknown name costs as much time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| secret::hash_password(&secret::new_password()))
}

/// The same for registry passwords, which are hashed with other parameters.
fn registry_decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| secret::hash_generated_password(&secret::new_password()))
}

impl Access {
    pub fn new(store: Arc<Store>) -> Result<Access, StoreError> {
        let key = store
            .db
            .setting_or_insert("registry_token_key", secret::random_hex::<32>)?;
        Ok(Access {
            store,
            key: key.into_bytes(),
            limiter: LoginLimiter::new(LOGIN_ATTEMPTS, LOGIN_WINDOW),
            verified: Mutex::default(),
            hashing: Hashing::new(HASHING_PERMITS, HASHING_WAIT),
            touched: Mutex::default(),
            audit: Mutex::default(),
        })
    }

    /// Replaces the failed sign-in limit (tests use a short window).
    pub fn with_login_limit(mut self, max_failures: u32, window: Duration) -> Access {
        self.limiter = LoginLimiter::new(max_failures, window);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the principal may pull from namespace `namespace` (bearer grants aside).
    pub fn may_pull_namespace(
        &self,
        principal: &Principal,
        namespace: &str,
    ) -> Result<bool, StoreError> {
        if self.store.db.namespace_is_public(namespace)? {
            return Ok(true);
        }
        let Some(user) = &principal.user else {
            return Ok(false);
        };
        if !(user.admin || self.store.db.is_member(namespace, user.id)?) {
            return Ok(false);
        }
        Ok(match &principal.token {
            None => true,
            Some((_, scopes)) => scopes.iter().any(|s| s.allows_pull(namespace)),
        })
    }

    /// Whether the principal may pull `repo`.
    pub fn may_pull(&self, principal: &Principal, repo: &RepoName) -> Result<bool, StoreError> {
        if self.store.db.namespace_is_public(repo.namespace())? {
            return Ok(true);
        }
        if let Some(claims) = &principal.claims
            && !claims.allows("repository", repo.as_str(), "pull")
        {
            return Ok(false);
        }
        self.may_pull_namespace(principal, repo.namespace())
    }

    /// Whether the principal may push code to `app` and start its builds.
    pub fn may_build(&self, principal: &Principal, app: &AppRef) -> Result<bool, StoreError> {
        let Some(user) = &principal.user else {
            return Ok(false);
        };
        if principal.claims.is_some() {
            // Registry bearer tokens are for pulling only.
            return Ok(false);
        }
        if !(user.admin || self.store.db.is_member(app.namespace(), user.id)?) {
            return Ok(false);
        }
        Ok(match &principal.token {
            None => true,
            Some((_, scopes)) => scopes.iter().any(|s| s.allows_build(app)),
        })
    }

    /// Whether the principal may read the build logs, deploy logs and running containers of
    /// `namespace`: its members and admins, and whoever may read it when the namespace publishes
    /// its logs (`buildgrid namespace publish-logs`). Public alone means pullable images and
    /// their pages. The web pages and the build API both ask this.
    pub fn may_read_logs(
        &self,
        principal: &Principal,
        namespace: &str,
    ) -> Result<bool, StoreError> {
        // Members and admins, through a token only as far as its scopes reach the namespace
        // (a public namespace alone must not widen a token scoped to another one).
        if let Some(user) = &principal.user
            && (user.admin || self.store.db.is_member(namespace, user.id)?)
            && principal
                .token
                .as_ref()
                .is_none_or(|(_, scopes)| scopes.iter().any(|s| s.allows_pull(namespace)))
        {
            return Ok(true);
        }
        Ok(self.store.db.namespace_logs_public(namespace)?
            && self.may_pull_namespace(principal, namespace)?)
    }

    pub fn is_admin(&self, principal: &Principal) -> bool {
        let Some(user) = &principal.user else {
            return false;
        };
        user.admin
            && principal.claims.is_none()
            && principal
                .token
                .as_ref()
                .is_none_or(|(_, scopes)| scopes.contains(&Scope::Admin))
    }

    /// A registry bearer token for what was asked (`repository:<name>:<actions>` scopes) and is
    /// allowed: pull at most. Asking for more is not an error; the grant is just smaller.
    pub fn issue_registry_token(
        &self,
        principal: &Principal,
        service: &str,
        scopes: &[&str],
    ) -> Result<(String, i64), StoreError> {
        let mut access = Vec::new();
        for scope in scopes {
            let mut parts = scope.splitn(3, ':');
            let (Some(kind), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let kind = kind.split('(').next().unwrap_or(kind);
            let granted: Vec<String> = match kind {
                "repository" => {
                    let asks_pull = actions.split(',').any(|a| a == "pull" || a == "*");
                    match RepoName::parse(name) {
                        Ok(repo) if asks_pull && self.may_pull(principal, &repo)? => {
                            vec!["pull".to_owned()]
                        }
                        _ => Vec::new(),
                    }
                }
                "registry" if name == "catalog" && !principal.is_anonymous() => {
                    vec!["*".to_owned()]
                }
                _ => Vec::new(),
            };
            access.push(Grant {
                kind: kind.to_owned(),
                name: name.to_owned(),
                actions: granted,
            });
        }
        let issued = now();
        let claims = Claims {
            sub: principal.user.as_ref().map(|u| u.id),
            tok: principal.token.as_ref().map(|(id, _)| *id),
            aud: service.to_owned(),
            iat: issued,
            exp: issued + REGISTRY_TOKEN_TTL,
            access,
        };
        Ok((bearer::sign(&self.key, &claims), REGISTRY_TOKEN_TTL))
    }

    /// Queues an audit entry; `flush_audit` writes them.
    pub fn record(&self, principal: &Principal, action: &str, target: &str, client: &str) {
        self.record_as(&principal.actor(), action, target, client);
    }

    /// The same entry repeated before a flush (every request of a pull) becomes one row with a
    /// count, so memory and writes stay bounded under load.
    fn record_as(&self, actor: &str, action: &str, target: &str, client: &str) {
        let client = client.strip_prefix("client:").unwrap_or(client);
        let key = (
            actor.to_owned(),
            action.to_owned(),
            target.to_owned(),
            client.to_owned(),
        );
        let mut pending = self.audit.lock().unwrap();
        let next = pending.len();
        pending.entry(key).or_insert((next, now(), 0)).2 += 1;
    }

    pub fn flush_audit(&self) {
        let pending = std::mem::take(&mut *self.audit.lock().unwrap());
        let mut entries: Vec<(usize, AuditEntry)> = pending
            .into_iter()
            .map(|((actor, action, target, client), (order, at, count))| {
                let entry = AuditEntry {
                    at,
                    actor,
                    action,
                    target,
                    client: Some(client),
                    count,
                };
                (order, entry)
            })
            .collect();
        entries.sort_by_key(|(order, _)| *order);
        let entries: Vec<AuditEntry> = entries.into_iter().map(|(_, e)| e).collect();
        if let Err(error) = self.store.db.append_audit(&entries) {
            tracing::error!(%error, lost = entries.len(), "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authorization_headers() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ann:pa:ss")
        );
        assert_eq!(
            Credentials::parse(&basic),
            Some(Credentials::Basic {
                user: "ann".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            Credentials::parse("bearer abc"),
            Some(Credentials::Bearer("abc".into()))
        );
        assert_eq!(Credentials::parse("Digest x"), None);
        assert_eq!(Credentials::parse("Basic !!!"), None);
    }

    #[test]
    fn user_names_follow_the_rule() {
        assert!(valid_user_name("ann"));
        assert!(valid_user_name("ci-bot.2"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("Ann"));
        assert!(!valid_user_name("-ann"));
        assert!(!valid_user_name("ann smith"));
    }
}
