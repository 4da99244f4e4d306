//! The registry's series, recorded through the `metrics` facade (the binary exports them).
//! Labels are kinds, methods and statuses only, never a repository or user name.

use std::future::Future;
use std::time::Instant;

use actix_web::Error;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::Method;

use crate::Route;

/// What kind of endpoint a path is, for the `route` label.
fn route_kind(path: &str) -> &'static str {
    if path.starts_with("/auth/token") {
        return "token";
    }
    let Some(rest) = path.strip_prefix("/v2") else {
        return "other";
    };
    match Route::parse(rest) {
        Route::Base => "base",
        Route::Catalog => "catalog",
        Route::Tags { .. } => "tags",
        Route::Manifest { .. } => "manifest",
        Route::Blob { .. } => "blob",
        Route::Referrers { .. } => "referrers",
        Route::Upload { .. } | Route::Unknown => "other",
    }
}

/// The `method` label: the methods of HTTP, anything else as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// Middleware of the registry's routes: counts each request by route kind, method and status,
/// times it to its answer's head, and counts the body bytes of GET answers.
pub(crate) fn observe<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    let route = route_kind(request.path());
    let method = method_label(request.method());
    let started = Instant::now();
    let call = service.call(request);
    async move {
        let result = call.await;
        let status = match &result {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        metrics::counter!(
            "buildgrid_registry_requests_total",
            "route" => route,
            "method" => method,
            "status" => status.as_str().to_owned(),
        )
        .increment(1);
        metrics::histogram!(
            "buildgrid_registry_request_duration_seconds",
            "route" => route,
            "method" => method,
        )
        .record(started.elapsed().as_secs_f64());
        if method == "GET"
            && let Ok(response) = &result
            && let BodySize::Sized(bytes) = response.response().body().size()
            && bytes > 0
        {
            metrics::counter!("buildgrid_registry_bytes_served_total", "route" => route)
                .increment(bytes);
        }
        result
    }
}

/// A credential that did not verify (a wrong password, an unknown or revoked token).
pub(crate) fn auth_failed() {
    metrics::counter!("buildgrid_registry_auth_failures_total").increment(1);
}

/// A sign-in refused by the limits on attempts (`429`).
pub(crate) fn rate_limited() {
    metrics::counter!("buildgrid_registry_rate_limited_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::route_kind;

    #[track_caller]
    fn check(path: &str, kind: &str) {
        assert_eq!(route_kind(path), kind, "{path}");
    }

    #[test]
    fn paths_have_kinds() {
        check("/v2/", "base");
        check("/v2", "base");
        check("/v2/_catalog", "catalog");
        check("/v2/acme/shop.repo/tags/list", "tags");
        check("/v2/acme/shop.repo/manifests/latest", "manifest");
        check("/v2/acme/shop.repo/blobs/sha256:00", "blob");
        check("/v2/acme/shop.repo/referrers/sha256:00", "referrers");
        check("/v2/acme/shop.repo/blobs/uploads/", "other");
        check("/auth/token", "token");
        check("/v2/nonsense", "other");
    }
}
