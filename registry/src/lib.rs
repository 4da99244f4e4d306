//! buildgrid's registry: the pull API of OCI Distribution 1.1 on actix-web.
//!
//! Only GET and HEAD exist here. Every write (uploads, manifest pushes, deletes, mounts) is
//! refused with `405 UNSUPPORTED` and changes nothing: images change only by building code.
//!
//! Architecture invariant: the registry never talks to the Docker engine or to git.

mod blobs;
mod downloads;
mod error;
mod listing;
mod manifests;
mod route;

use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_store::Store;

pub use downloads::Downloads;
pub use error::RegistryError;
pub use route::Route;

/// Shared state of the registry handlers.
pub struct Registry {
    pub store: Arc<Store>,
    pub downloads: Downloads,
    manifests: manifests::ManifestCache,
}

impl Registry {
    pub fn new(store: Arc<Store>) -> Registry {
        Registry {
            store,
            downloads: Downloads::default(),
            manifests: manifests::ManifestCache::default(),
        }
    }

    /// Writes counted downloads to the store.
    pub fn flush_downloads(&self) {
        self.downloads.flush(&self.store);
    }
}

/// Mounts the registry under `/v2`.
pub fn configure(cfg: &mut web::ServiceConfig, registry: web::Data<Registry>) {
    cfg.app_data(registry).service(
        web::scope("/v2")
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("Docker-Distribution-API-Version", "registry/2.0")),
            )
            .default_service(web::to(dispatch)),
    );
}

async fn dispatch(
    request: HttpRequest,
    registry: web::Data<Registry>,
) -> Result<HttpResponse, RegistryError> {
    let path = request.path();
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let route = Route::parse(rest);
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(RegistryError::read_only(method.as_str(), &route));
    }
    let head = method == Method::HEAD;
    match route {
        Route::Base => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body("{}")),
        Route::Catalog => listing::catalog(&request, &registry),
        Route::Tags { name } => listing::tags(&request, &registry, &name),
        Route::Referrers { name, digest } => {
            listing::referrers(&request, &registry, &name, &digest)
        }
        Route::Manifest { name, reference } => {
            manifests::get(&request, &registry, &name, &reference, head)
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
