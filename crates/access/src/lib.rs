//! Who may pull what, and who may build: users, their web and registry passwords, scoped API
//! tokens, public and private namespaces, registry bearer tokens, failed sign-in limits and the
//! audit log.
//!
//! Architecture invariant: no HTTP framework here. The registry, the builder and the web crate
//! read credentials off their requests and ask this crate; the rules live in one place.

mod bearer;
mod limiter;
mod scope;
pub mod secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use buildgrid_core::{AppRef, RepoName};
use buildgrid_store::{AuditEntry, NewToken, Store, StoreError, TokenRow, User};
use sha2::{Digest as _, Sha256};

pub use bearer::{BEARER_PREFIX, Claims, Grant};
pub use limiter::LoginLimiter;
pub use scope::{Scope, ScopeError, Target};

/// How long a registry bearer token lives.
pub const REGISTRY_TOKEN_TTL: i64 = 300;
/// Failed sign-ins allowed per client address and per user name within `LOGIN_WINDOW`.
pub const LOGIN_ATTEMPTS: u32 = 10;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
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
    #[error("too many failed sign-ins: try again in {retry_after} s")]
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
    hashing: Mutex<()>,
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
            hashing: Mutex::default(),
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

    /// The principal an `Authorization` header proves; anonymous without one.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        client: &str,
    ) -> Result<Principal, AuthError> {
        let Some(header) = authorization else {
            return Ok(Principal::anonymous());
        };
        let client_key = format!("client:{client}");
        match Credentials::parse(header) {
            None => Err(AuthError::Unauthorized(
                "the Authorization header is neither Basic nor Bearer",
            )),
            Some(Credentials::Bearer(token)) if token.starts_with(BEARER_PREFIX) => {
                self.limit(&[&client_key])?;
                match bearer::verify(&self.key, &token, now()) {
                    Ok(claims) => self.claims_principal(claims),
                    Err(bearer::BearerError::Expired) => Err(AuthError::Unauthorized(
                        "the bearer token has expired: ask the token endpoint for a new one",
                    )),
                    Err(_) => {
                        self.limiter.fail(&[&client_key]);
                        Err(AuthError::Unauthorized("the bearer token is not valid"))
                    }
                }
            }
            Some(Credentials::Bearer(token)) => self.token_principal(&token, &client_key),
            Some(Credentials::Basic { password, .. })
                if password.starts_with(secret::TOKEN_PREFIX) =>
            {
                self.token_principal(&password, &client_key)
            }
            Some(Credentials::Basic { user, password }) => {
                self.password_principal(&user, &password, &client_key)
            }
        }
    }

    fn limit(&self, keys: &[&str]) -> Result<(), AuthError> {
        self.limiter
            .check(keys)
            .map_err(|retry_after| AuthError::TooManyAttempts { retry_after })
    }

    fn token_principal(&self, secret: &str, client_key: &str) -> Result<Principal, AuthError> {
        self.limit(&[client_key])?;
        let row = self.store.db.token_by_hash(&secret::sha256_hex(secret))?;
        let refused = |message| {
            self.limiter.fail(&[client_key]);
            Err(AuthError::Unauthorized(message))
        };
        let Some(row) = row else {
            return refused("unknown token");
        };
        if row.revoked_at.is_some() {
            return refused("the token was revoked");
        }
        if row.expires_at.is_some_and(|at| at <= now()) {
            return refused("the token has expired");
        }
        let Some(user) = self.token_user(&row)? else {
            return refused("the token's user no longer exists");
        };
        self.touch(row.id);
        let scopes = Scope::parse_list(&row.scopes).unwrap_or_default();
        Ok(Principal {
            user: Some(user),
            token: Some((row.id, scopes)),
            claims: None,
        })
    }

    fn token_user(&self, row: &TokenRow) -> Result<Option<User>, StoreError> {
        match row.user_id {
            Some(id) => self.store.db.user_by_id(id),
            None => Ok(None),
        }
    }

    fn touch(&self, token_id: i64) {
        let at = now();
        {
            let mut touched = self.touched.lock().unwrap();
            if touched
                .get(&token_id)
                .is_some_and(|last| at - last < TOUCH_INTERVAL)
            {
                return;
            }
            touched.insert(token_id, at);
        }
        if let Err(error) = self.store.db.touch_token(token_id, at) {
            tracing::warn!(%error, token_id, "cannot record the token's use");
        }
    }

    fn password_principal(
        &self,
        name: &str,
        password: &str,
        client_key: &str,
    ) -> Result<Principal, AuthError> {
        let user_key = format!("user:{name}");
        self.limit(&[client_key, &user_key])?;
        let user = self.store.db.user_by_name(name)?;
        let matched = match user
            .as_ref()
            .and_then(|u| u.registry_password_hash.as_ref())
        {
            Some(hash) => self.registry_password_matches(user.as_ref().unwrap().id, password, hash),
            None => {
                secret::verify_password(password, registry_decoy_hash());
                false
            }
        };
        if !matched {
            self.limiter.fail(&[client_key, &user_key]);
            self.record_as(name, "sign-in refused", "registry", client_key);
            return Err(AuthError::Unauthorized(
                "wrong user name or registry password (the web password does not work here)",
            ));
        }
        Ok(Principal {
            user,
            token: None,
            claims: None,
        })
    }

    fn verified_key(user_id: i64, password: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(user_id.to_be_bytes())
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    fn recently_verified(&self, key: &[u8; 32], hash: &str) -> bool {
        self.verified
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|h| h == hash)
    }

    fn registry_password_matches(&self, user_id: i64, password: &str, hash: &str) -> bool {
        let key = Access::verified_key(user_id, password);
        if self.recently_verified(&key, hash) {
            return true;
        }
        // One argon2 run at a time: each takes 19 MiB and a few milliseconds of a core, so a burst
        // of a client's parallel requests costs one run (the rest find it remembered) and a
        // flood of wrong passwords cannot take every core or much memory.
        let _one_at_a_time = self.hashing.lock().unwrap();
        if self.recently_verified(&key, hash) {
            return true;
        }
        if !secret::verify_password(password, hash) {
            return false;
        }
        let mut verified = self.verified.lock().unwrap();
        if verified.len() > 10_000 {
            verified.clear();
        }
        verified.insert(key, hash.to_owned());
        true
    }

    /// What `authenticate` answers, when that needs no password hashing: `None` when it would
    /// (Basic credentials with a password not verified lately). Lets async callers skip a thread
    /// hop for every request of a pull.
    pub fn authenticate_without_hashing(
        &self,
        authorization: Option<&str>,
        client: &str,
    ) -> Option<Result<Principal, AuthError>> {
        if let Some(Credentials::Basic { user, password }) =
            authorization.and_then(Credentials::parse)
            && !password.starts_with(secret::TOKEN_PREFIX)
        {
            let found = match self.store.db.user_by_name(&user) {
                Ok(found) => found,
                Err(error) => return Some(Err(error.into())),
            };
            let known = found.as_ref().and_then(|u| {
                let hash = u.registry_password_hash.as_ref()?;
                self.recently_verified(&Access::verified_key(u.id, &password), hash)
                    .then_some(())
            });
            let limited = self.limit(&[&format!("client:{client}"), &format!("user:{user}")]);
            return match (known, limited) {
                (_, Err(error)) => Some(Err(error)),
                (Some(()), Ok(())) => Some(Ok(Principal {
                    user: found,
                    token: None,
                    claims: None,
                })),
                (None, Ok(())) => None,
            };
        }
        Some(self.authenticate(authorization, client))
    }

    fn claims_principal(&self, claims: Claims) -> Result<Principal, AuthError> {
        let user = match claims.sub {
            Some(id) => match self.store.db.user_by_id(id)? {
                Some(user) => Some(user),
                None => return Err(AuthError::Unauthorized("the token's user no longer exists")),
            },
            None => None,
        };
        let token = match claims.tok {
            Some(id) => {
                let row = self.store.db.token_by_id(id)?;
                match row {
                    Some(row)
                        if row.revoked_at.is_none()
                            && row.expires_at.is_none_or(|at| at > now()) =>
                    {
                        Some((id, Scope::parse_list(&row.scopes).unwrap_or_default()))
                    }
                    _ => {
                        return Err(AuthError::Unauthorized(
                            "the token this bearer token was issued for is revoked or expired",
                        ));
                    }
                }
            }
            None => None,
        };
        Ok(Principal {
            user,
            token,
            claims: Some(claims),
        })
    }

    /// Signs in to the web pages with the web password.
    pub fn sign_in_web(&self, name: &str, password: &str, client: &str) -> Result<User, AuthError> {
        let client_key = format!("client:{client}");
        let user_key = format!("user:{name}");
        self.limit(&[&client_key, &user_key])?;
        match self.store.db.user_by_name(name)? {
            Some(user) if secret::verify_password(password, &user.password_hash) => {
                self.record_as(&user.name, "sign-in", "web", &client_key);
                Ok(user)
            }
            found => {
                if found.is_none() {
                    secret::verify_password(password, decoy_hash());
                }
                self.limiter.fail(&[&client_key, &user_key]);
                self.record_as(name, "sign-in refused", "web", &client_key);
                Err(AuthError::Unauthorized("wrong user name or password"))
            }
        }
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

/// Creates a user with a new web password; returns it with the password (shown once).
pub fn create_user(store: &Store, name: &str, admin: bool) -> Result<(User, String), AccessError> {
    if !valid_user_name(name) {
        return Err(AccessError::InvalidUserName(
            name.chars().take(100).collect(),
        ));
    }
    let password = secret::new_password();
    let user = store
        .db
        .create_user(name, admin, &secret::hash_password(&password))?;
    audit_now(store, "admin", "user created", name)?;
    Ok((user, password))
}

pub fn user(store: &Store, name: &str) -> Result<User, AccessError> {
    store
        .db
        .user_by_name(name)?
        .ok_or_else(|| AccessError::NoSuchUser(name.to_owned()))
}

/// Gives the user a new web password and returns it (shown once).
pub fn reset_password(store: &Store, user: &User) -> Result<String, StoreError> {
    let password = secret::new_password();
    store
        .db
        .set_password_hash(user.id, &secret::hash_password(&password))?;
    audit_now(store, &user.name, "web password reset", &user.name)?;
    Ok(password)
}

/// Gives the user a new registry password and returns it (shown once); the old one stops working
/// at once.
pub fn regenerate_registry_password(store: &Store, user: &User) -> Result<String, StoreError> {
    let password = secret::new_password();
    store
        .db
        .set_registry_password_hash(user.id, &secret::hash_generated_password(&password))?;
    audit_now(
        store,
        &user.name,
        "registry password regenerated",
        &user.name,
    )?;
    Ok(password)
}

/// Creates a token of `user`; returns its id and secret (shown once).
pub fn create_token(
    store: &Store,
    user: &User,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<i64>,
) -> Result<(i64, String), AccessError> {
    if !user.admin && scopes.contains(&Scope::Admin) {
        return Err(AccessError::NotAdmin(user.name.clone()));
    }
    let secret = secret::new_token_secret();
    let scopes = scopes
        .iter()
        .map(Scope::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let id = store.db.create_token(&NewToken {
        user_id: user.id,
        name,
        hash: &secret::sha256_hex(&secret),
        scopes: &scopes,
        expires_at,
    })?;
    audit_now(
        store,
        &user.name,
        "token created",
        &format!("token {id} ({name}): {scopes}"),
    )?;
    Ok((id, secret))
}

pub fn audit_now(store: &Store, actor: &str, action: &str, target: &str) -> Result<(), StoreError> {
    store.db.append_audit(&[AuditEntry {
        at: now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        client: None,
        count: 1,
    }])
}

/// How long a web session lasts.
pub const SESSION_TTL: i64 = 7 * 86_400;

/// A web session: the secret goes into the cookie, the CSRF token into every form.
pub struct Session {
    pub secret: String,
    pub csrf: String,
}

/// Opens a web session for `user`. Only the SHA-256 of the secret is stored.
pub fn create_session(store: &Store, user: &User) -> Result<Session, StoreError> {
    let session = Session {
        secret: secret::random_hex::<32>(),
        csrf: secret::random_hex::<32>(),
    };
    store.db.create_session(
        &secret::sha256_hex(&session.secret),
        user.id,
        &session.csrf,
        now() + SESSION_TTL,
    )?;
    Ok(session)
}

/// The user and CSRF token of a live session.
pub fn session(store: &Store, secret: &str) -> Result<Option<(User, String)>, StoreError> {
    store.db.session(&secret::sha256_hex(secret))
}

pub fn end_session(store: &Store, secret: &str) -> Result<(), StoreError> {
    store.db.delete_session(&secret::sha256_hex(secret))
}

/// On first start: creates the first admin (name `admin`) and an admin token when none exist,
/// and gives tokens made before users existed to that admin.
pub fn bootstrap(store: &Store) -> Result<Bootstrap, AccessError> {
    let mut made = Bootstrap {
        user: None,
        token: None,
    };
    let admin = if store.db.has_users()? {
        None
    } else {
        let (user, password) = create_user(store, "admin", true)?;
        store.db.adopt_orphan_tokens(user.id)?;
        made.user = Some((user.name.clone(), password));
        Some(user)
    };
    if let Some(admin) = admin
        && !store.db.has_tokens()?
    {
        let (_, secret) = create_token(store, &admin, "admin", &[Scope::Admin], None)?;
        made.token = Some(secret);
    }
    Ok(made)
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
