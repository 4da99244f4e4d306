//! buildgrid's registry: the pull API of OCI Distribution 1.1 on actix-web.
//!
//! Only GET and HEAD exist here. Every write (uploads, manifest pushes, deletes, mounts) is
//! refused with `405 UNSUPPORTED` and changes nothing: images change only by building code.
//!
//! Architecture invariant: the registry never talks to the Docker engine or to git.

mod auth;
mod blobs;
mod downloads;
mod error;
mod listing;
mod manifests;
mod metrics;
mod route;
mod writes;

use std::sync::Arc;

use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_access::Access;
use buildgrid_core::RepoName;
use buildgrid_store::Store;

pub use auth::AuthSettings;
pub use downloads::Downloads;
pub use error::RegistryError;
pub use route::Route;

/// Shared state of the registry handlers.
pub struct Registry {
    pub store: Arc<Store>,
    pub access: Arc<Access>,
    pub downloads: Downloads,
    auth: AuthSettings,
    /// Requests waiting for a password check of the same credentials (see `auth::principal`).
    checks: auth::PendingChecks,
    manifests: manifests::ManifestCache,
    /// Blob GETs answer `307` to a URL of the object store valid this long (`--blob-redirect`)
    /// rather than streaming the bytes, when the blob store has such URLs.
    blob_redirect: Option<std::time::Duration>,
}

impl Registry {
    pub fn new(store: Arc<Store>, access: Arc<Access>, auth: AuthSettings) -> Registry {
        Registry {
            store,
            access,
            downloads: Downloads::default(),
            auth,
            checks: auth::PendingChecks::default(),
            manifests: manifests::ManifestCache::default(),
            blob_redirect: None,
        }
    }

    /// See [`Registry::blob_redirect`].
    pub fn with_blob_redirect(mut self, lifetime: Option<std::time::Duration>) -> Registry {
        self.blob_redirect = lifetime;
        self
    }

    /// Writes counted downloads and queued audit entries to the store.
    pub fn flush_downloads(&self) {
        self.downloads.flush(&self.store);
        self.access.flush_audit();
    }
}

/// Mounts the registry under `/v2`, and its token endpoint at `/auth/token`.
pub fn configure(cfg: &mut web::ServiceConfig, registry: web::Data<Registry>) {
    cfg.app_data(registry)
        .service(
            web::resource("/auth/token")
                .wrap_fn(metrics::observe)
                .route(web::get().to(auth::token_endpoint))
                .route(web::post().to(auth::token_endpoint)),
        )
        .service(
            web::scope("/v2")
                .wrap_fn(metrics::observe)
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add(("Docker-Distribution-API-Version", "registry/2.0")),
                )
                .default_service(web::to(dispatch)),
        );
}

async fn dispatch(
    request: HttpRequest,
    body: web::Payload,
    registry: web::Data<Registry>,
) -> Result<HttpResponse, RegistryError> {
    let path = request.path();
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let route = Route::parse(rest);
    let method = request.method();
    if method == Method::OPTIONS {
        return Ok(HttpResponse::Ok()
            .insert_header((header::ALLOW, "GET, HEAD"))
            .finish());
    }
    if method != Method::GET && method != Method::HEAD {
        return Ok(writes::refuse(method.as_str(), &route, body).await);
    }
    let head = method == Method::HEAD;
    let principal = auth::principal(&request, &registry).await?;
    if let Some(name) = route.name()
        && let Ok(repo) = RepoName::parse(name)
        && !registry.access.may_pull(&principal, &repo)?
    {
        return Err(auth::refuse(&registry, &principal, &repo)?);
    }
    match route {
        // An anonymous bearer token from the token endpoint is a sign-in too: it pulls what is
        // public, and clients that always fetch one first check it here.
        Route::Base if principal.is_anonymous() && principal.claims.is_none() => {
            Err(RegistryError::new(
                buildgrid_core::ErrorCode::Unauthorized,
                "sign in with `docker login` to use this registry; public images pull without it",
            )
            .with_header("WWW-Authenticate", auth::challenge(&registry.auth, None)))
        }
        Route::Base => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body("{}")),
        Route::Catalog => listing::catalog(&request, &registry, &principal),
        Route::Tags { name } => listing::tags(&request, &registry, &name),
        Route::Referrers { name, digest } => {
            listing::referrers(&request, &registry, &name, &digest)
        }
        Route::Manifest { name, reference } => {
            manifests::get(&request, &registry, &principal, &name, &reference, head).await
        }
        Route::Blob { name, digest } => blobs::get(&request, &registry, &name, &digest, head).await,
        // Reading an upload's state: there are never uploads to read.
        Route::Upload { .. } => Err(RegistryError::new(
            buildgrid_core::ErrorCode::BlobUploadUnknown,
            "there are no uploads: this registry is read-only",
        )),
        Route::Unknown => Err(RegistryError::unknown_route(path)),
    }
}

/// A response to HEAD: the headers of the GET, with the `Content-Length` of the body it would
/// have. (A sized empty body would make actix write `Content-Length: 0`.)
fn head_response(response: &mut actix_web::HttpResponseBuilder, length: u64) -> HttpResponse {
    response
        .no_chunking(length)
        .streaming(futures_util::stream::empty::<
            Result<bytes::Bytes, actix_web::Error>,
        >())
}
