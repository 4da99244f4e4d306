//! Rights on the builder's endpoints: pushing code and starting or cancelling builds needs
//! `build` on the app; reading a build needs pull on its namespace. Webhooks carry their own
//! per-app secrets instead. A build's log needs membership too, unless its namespace publishes
//! its logs. A build the request may not read is answered as a missing one.

use actix_web::HttpRequest;
use actix_web::http::{StatusCode, header};
use buildgrid_access::{AuthError, Principal};
use buildgrid_core::AppRef;

use crate::Builder;
use crate::routes::{ApiError, blocking};

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        match error {
            AuthError::Unauthorized(message) => ApiError::new(StatusCode::UNAUTHORIZED, message)
                .with_header(header::WWW_AUTHENTICATE.as_str(), BASIC_CHALLENGE),
            AuthError::TooManyAttempts { retry_after } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
                    .with_header(header::RETRY_AFTER.as_str(), retry_after.to_string())
            }
            AuthError::Store(error) => error.into(),
        }
    }
}

/// Git asks for a user name and password when it sees this.
const BASIC_CHALLENGE: &str = "Basic realm=\"buildgrid\", charset=\"UTF-8\"";

/// Who sent the request (anonymous without credentials).
pub(crate) async fn principal(
    builder: &Builder,
    request: &HttpRequest,
) -> Result<Principal, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(Principal::anonymous());
    };
    let value = value.to_str().unwrap_or("").to_owned();
    let client = request
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string());
    let access = builder.access.clone();
    blocking(move || access.authenticate(Some(&value), &client)).await
}

/// The principal, when it may build `app`.
pub(crate) async fn require_build(
    builder: &Builder,
    request: &HttpRequest,
    app: &AppRef,
) -> Result<Principal, ApiError> {
    let principal = principal(builder, request).await?;
    check_build(builder, &principal, app).await?;
    Ok(principal)
}

/// Refuses `principal` unless it may build `app`.
pub(crate) async fn check_build(
    builder: &Builder,
    principal: &Principal,
    app: &AppRef,
) -> Result<(), ApiError> {
    if principal.is_anonymous() {
        return Err(unauthorized(format!(
            "building {app} needs credentials: a token with build on it, or your user name and registry password"
        )));
    }
    let access = builder.access.clone();
    let (checked, target) = (principal.clone(), app.clone());
    if !blocking(move || access.may_build(&checked, &target)).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not build {app}: that needs membership of namespace {} and, for a token, the scope build:{app}",
                principal.actor(),
                app.namespace(),
            ),
        ));
    }
    Ok(())
}

/// Whether `principal` may read builds of namespace `namespace`.
pub(crate) async fn may_read(
    builder: &Builder,
    principal: &Principal,
    namespace: &str,
) -> Result<bool, ApiError> {
    let access = builder.access.clone();
    let (checked, namespace) = (principal.clone(), namespace.to_owned());
    blocking(move || access.may_pull_namespace(&checked, &namespace)).await
}

/// Whether `principal` may read the build logs of `namespace` (`Access::may_read_logs`, the
/// web pages' rule too).
pub(crate) async fn may_read_logs(
    builder: &Builder,
    principal: &Principal,
    namespace: &str,
) -> Result<bool, ApiError> {
    let access = builder.access.clone();
    let (checked, namespace) = (principal.clone(), namespace.to_owned());
    blocking(move || access.may_read_logs(&checked, &namespace)).await
}

/// 401 with the challenge that makes clients send credentials.
pub(crate) fn unauthorized(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
        .with_header(header::WWW_AUTHENTICATE.as_str(), BASIC_CHALLENGE)
}
