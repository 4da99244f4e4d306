//! Who is asking, on every `/v2/` request, and the Docker token endpoint.
//!
//! Basic credentials (registry password or API token) are accepted on every request. Clients
//! that follow the challenge get a short-lived bearer token from `/auth/token` for what they asked
//! and may have: pull at most.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use buildgrid_access::{AuthError, Principal};
use buildgrid_core::{ErrorCode, RepoName};
use buildgrid_store::StoreError;
use serde_json::json;

use crate::{Registry, RegistryError};

/// Where the challenge sends clients for a token, and the name of this registry in it.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// e.g. `http://127.0.0.1:5000/auth/token`.
    pub realm: String,
    /// e.g. `127.0.0.1:5000`.
    pub service: String,
}

impl AuthSettings {
    /// The settings for a registry reached at `public_url` (scheme and host, no path).
    pub fn for_public_url(public_url: &str) -> AuthSettings {
        let public_url = public_url.trim_end_matches('/');
        let service = public_url
            .split_once("://")
            .map_or(public_url, |(_, rest)| rest)
            .to_owned();
        AuthSettings {
            realm: format!("{public_url}/auth/token"),
            service,
        }
    }
}

pub(crate) fn client(request: &HttpRequest) -> String {
    request
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string())
}

/// Password checks in progress, by a hash of the `Authorization` header they check: the
/// parallel first requests of a pull wait for one check and then find the password remembered,
/// while requests with other credentials never wait behind them (a flood of wrong passwords
/// waits in `Access`, whose bound on argon2 runs every caller shares).
#[derive(Default)]
pub(crate) struct PendingChecks {
    keys: RandomState,
    running: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl PendingChecks {
    fn gate(&self, header: &str) -> (u64, Arc<tokio::sync::Mutex<()>>) {
        let key = self.keys.hash_one(header);
        let gate = self.running.lock().unwrap().entry(key).or_default().clone();
        (key, gate)
    }

    fn done(&self, key: u64, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut running = self.running.lock().unwrap();
        // The map's reference and this one: no one else waits.
        if Arc::strong_count(&gate) <= 2 {
            running.remove(&key);
        }
    }
}

/// The principal of a request. Checking a password not seen lately runs argon2, so that goes to
/// a blocking thread; everything else is an indexed lookup or two and stays here.
pub(crate) async fn principal(
    request: &HttpRequest,
    registry: &web::Data<Registry>,
) -> Result<Principal, RegistryError> {
    let header = match request.headers().get(header::AUTHORIZATION) {
        None => return Ok(Principal::anonymous()),
        Some(value) => value.to_str().unwrap_or("").to_owned(),
    };
    let client = client(request);
    let fast = |registry: &Registry| {
        registry
            .access
            .authenticate_without_hashing(Some(&header), &client)
    };
    let result = match fast(registry) {
        Some(result) => result,
        None => {
            let (key, gate) = registry.checks.gate(&header);
            let result = {
                let _turn = gate.lock().await;
                match fast(registry) {
                    Some(result) => Ok(result),
                    None => {
                        let access = registry.access.clone();
                        let (header, client) = (header.clone(), client.clone());
                        web::block(move || access.authenticate(Some(&header), &client)).await
                    }
                }
            };
            registry.checks.done(key, gate);
            result.map_err(|e| RegistryError::internal(&e))?
        }
    };
    let principal = result.map_err(|error| auth_error(registry, error, None))?;
    // For the request log.
    if !principal.is_anonymous() {
        request
            .extensions_mut()
            .insert(buildgrid_core::RequestUser(principal.actor()));
    }
    Ok(principal)
}

pub(crate) fn auth_error(
    registry: &Registry,
    error: AuthError,
    scope: Option<&str>,
) -> RegistryError {
    match error {
        AuthError::Unauthorized(message) => {
            crate::metrics::auth_failed();
            RegistryError::new(ErrorCode::Unauthorized, message).with_header(
                header::WWW_AUTHENTICATE.as_str(),
                challenge(&registry.auth, scope),
            )
        }
        AuthError::TooManyAttempts { retry_after } => {
            crate::metrics::rate_limited();
            RegistryError::new(ErrorCode::TooManyRequests, error.to_string())
                .with_header(header::RETRY_AFTER.as_str(), retry_after.to_string())
        }
        AuthError::Store(error) => error.into(),
    }
}

pub(crate) fn challenge(settings: &AuthSettings, scope: Option<&str>) -> String {
    let mut value = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        settings.realm, settings.service
    );
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    value
}

/// The refusal for a principal that may not pull `repo`: a challenge for anonymous callers
/// (they may have credentials to send) and for a bearer token that does not name the repository
/// its user may pull (`insufficient_scope`: the client asks for a new token), `DENIED` for
/// callers whose credentials do not reach.
pub(crate) fn refuse(
    registry: &Registry,
    principal: &Principal,
    repo: &RepoName,
) -> Result<RegistryError, StoreError> {
    let name = repo.as_str();
    let scope = format!("repository:{name}:pull");
    let grant_too_narrow = principal.claims.is_some()
        && !principal.is_anonymous()
        && registry.access.may_pull(
            &Principal {
                claims: None,
                ..principal.clone()
            },
            repo,
        )?;
    let message = if grant_too_narrow {
        format!(
            "the bearer token does not grant pull on {name}: ask the token endpoint for one that does"
        )
    } else if principal.is_anonymous() {
        format!("authentication required to pull {name}: `docker login` first")
    } else {
        return Ok(RegistryError::new(
            ErrorCode::Denied,
            format!(
                "{} may not pull {name}: ask an admin for membership of its namespace or for a token with pull on it",
                principal.actor()
            ),
        )
        .with_detail(json!({ "repository": name })));
    };
    let mut challenge = challenge(&registry.auth, Some(&scope));
    // Only where a new token helps: docker prints its own "access denied" for this error, where
    // an anonymous caller is better served by the message saying to sign in.
    if grant_too_narrow {
        challenge.push_str(",error=\"insufficient_scope\"");
    }
    Ok(RegistryError::new(ErrorCode::Unauthorized, message)
        .with_detail(json!({ "repository": name }))
        .with_header(header::WWW_AUTHENTICATE.as_str(), challenge))
}

/// `GET /auth/token?service=…&scope=…`, and the OAuth2 form POST (`grant_type=password`).
pub(crate) async fn token_endpoint(
    request: HttpRequest,
    registry: web::Data<Registry>,
    form: Option<web::Form<Vec<(String, String)>>>,
) -> Result<HttpResponse, RegistryError> {
    let mut params: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(request.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default();
    if let Some(form) = form {
        params.extend(form.into_inner());
    }
    let value = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let service = value("service").unwrap_or_else(|| registry.auth.service.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    // The form POST carries the password in the body instead of a header.
    let header = match (value("grant_type").as_deref(), value("password")) {
        (Some("password"), Some(password)) => Some(format!(
            "Basic {}",
            base64_basic(&value("username").unwrap_or_default(), &password)
        )),
        _ => request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let client = client(&request);
    let access = registry.access.clone();
    let issued = web::block(move || {
        let principal = access.authenticate(header.as_deref(), &client)?;
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        Ok::<_, AuthError>(access.issue_registry_token(&principal, &service, &scopes)?)
    })
    .await
    .map_err(|e| RegistryError::internal(&e))?;
    let (token, expires_in) = issued.map_err(|error| auth_error(&registry, error, None))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(
            json!({ "token": token, "access_token": token, "expires_in": expires_in }).to_string(),
        ))
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
