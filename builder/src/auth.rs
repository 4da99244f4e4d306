//! API tokens: random secrets shown once and stored as their SHA-256.

use actix_web::HttpRequest;
use actix_web::http::header;
use base64::Engine as _;
use buildgrid_store::Store;
use sha2::{Digest as _, Sha256};

/// A new token secret: `bg_` and 64 hex characters.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!("bg_{}", hex::encode(bytes))
}

pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates an admin token and returns its secret.
pub fn create_admin_token(
    store: &Store,
    name: &str,
) -> Result<String, buildgrid_store::StoreError> {
    let secret = new_secret();
    store.db.create_token(name, &token_hash(&secret), "admin")?;
    Ok(secret)
}

/// The token a request carries: `Authorization: Bearer <token>`, or Basic with the token as
/// password (what git and docker send).
pub fn request_token(request: &HttpRequest) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// Whether `token` is a live token allowed to build.
pub fn may_build(store: &Store, token: Option<&str>) -> Result<bool, buildgrid_store::StoreError> {
    let Some(token) = token else {
        return Ok(false);
    };
    let scopes = store.db.use_token(&token_hash(token))?;
    Ok(scopes.is_some_and(|s| {
        s.split(',')
            .any(|scope| scope == "admin" || scope == "build")
    }))
}
