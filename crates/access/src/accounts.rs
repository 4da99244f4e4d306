//! Accounts: users and their passwords, API tokens, web sessions, audit entries written at once,
//! and the first admin.

use buildgrid_store::{AuditEntry, NewToken, Store, StoreError, User};

use crate::{AccessError, Bootstrap, Scope, now, secret, valid_user_name};

/// The names of buildgrid's own users: builds pull as `buildgrid-builder`, deploys as
/// `buildgrid-deployer`. No one else may have these names.
pub const SYSTEM_USERS: [&str; 2] = ["buildgrid-builder", "buildgrid-deployer"];

/// Creates a user with a new web password; returns it with the password (shown once).
pub fn create_user(store: &Store, name: &str, admin: bool) -> Result<(User, String), AccessError> {
    if !valid_user_name(name) {
        return Err(AccessError::InvalidUserName(
            name.chars().take(100).collect(),
        ));
    }
    if SYSTEM_USERS.contains(&name) {
        return Err(AccessError::SystemUser(name.to_owned()));
    }
    let password = secret::new_password();
    let user = store
        .db
        .create_user(name, admin, &secret::hash_password(&password))?;
    audit_now(store, "admin", "user created", name)?;
    Ok((user, password))
}

/// The non-admin user buildgrid's own work pulls as (one of [`SYSTEM_USERS`]), made on first
/// use with a password no one knows. It is listed nowhere (users, members, tokens), and
/// [`user`] refuses it, so no one changes it by hand.
pub fn system_user(store: &Store, name: &str) -> Result<User, AccessError> {
    if let Some(user) = store.db.user_by_name(name)?
        && user.system
    {
        return Ok(user);
    }
    let hash = secret::hash_password(&secret::new_password());
    Ok(store.db.system_user(name, &hash)?)
}

/// The user named `name`, to change or to act for; buildgrid's own users are refused.
pub fn user(store: &Store, name: &str) -> Result<User, AccessError> {
    let user = store
        .db
        .user_by_name(name)?
        .ok_or_else(|| AccessError::NoSuchUser(name.to_owned()))?;
    if user.system {
        return Err(AccessError::SystemUser(user.name));
    }
    Ok(user)
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
