//! buildgrid's web pages: server-rendered HTML (maud templates compiled into the binary), one
//! stylesheet and one small script embedded in the binary, and the server-sent event streams
//! that keep running builds live.
//!
//! Handlers are thin: they check who is looking ([`Viewer`]), read the store off the async
//! threads, and hand plain rows to the render functions of their page module. Every page reads
//! a bounded window of rows (keyset paging by build id or log line number), so a page of an app
//! with thousands of builds or of a log with 100,000 lines costs what a small one does.

mod apps;
mod assets;
mod build_now;
mod build_page;
mod deploy_actions;
mod deploys;
mod error;
mod events;
mod format;
mod image;
mod image_tabs;
mod layout;
mod log_lines;
mod repository;
mod session;
mod settings;
mod shared;
mod storage;
mod timeline;
mod viewer;

use std::sync::Arc;

use actix_web::web;
use buildgrid_access::Access;
use buildgrid_store::Store;

pub use deploy_actions::{BoxFuture, Deployer, Running, ServerRunning};
pub use shared::{Limits, Shared};
pub use viewer::Viewer;

/// What the pages need besides the store; the CLI fills it in when wiring.
#[derive(Clone)]
pub struct Settings {
    /// The URL people reach buildgrid at (`http://host:port`, no trailing slash): links and
    /// the registry host of pull commands come from it.
    pub public_url: String,
    /// Wakes the builder's workers after a page queued a build.
    pub wake: Arc<dyn Fn() + Send + Sync>,
    /// Who may read and build what; the sign-in and settings pages manage it.
    pub access: Arc<Access>,
    /// Runs deploys and asks servers what runs there; without it the pages offer no deploys.
    pub deployer: Option<Arc<dyn Deployer>>,
    /// What the HTTP workers share (caps on open streams and archive writers, the servers'
    /// recent answers): make it once per process and give every worker a clone.
    pub shared: Shared,
}

impl Settings {
    /// `host[:port]` as docker names the registry: the public URL without its scheme.
    pub fn registry_host(&self) -> &str {
        let url = self.public_url.trim_end_matches('/');
        url.split_once("://").map_or(url, |(_, rest)| rest)
    }
}

/// The state every handler shares.
pub(crate) struct Web {
    pub store: Arc<Store>,
    pub settings: Settings,
}

/// Mounts the web pages, their event streams and their static files.
///
/// The pages form one scope that answers every path the services mounted before them do not
/// (the CLI mounts them last): an unknown URL gets the 404 page, and every error page keeps
/// the account header ([`error::with_account`]).
pub fn configure(cfg: &mut web::ServiceConfig, store: Arc<Store>, settings: Settings) {
    cfg.app_data(web::Data::new(Web { store, settings }))
        .service(
            web::scope("")
                .wrap(actix_web::middleware::from_fn(error::with_account))
                .default_service(web::to(error::not_found))
                .route("/", web::get().to(apps::page))
                .route("/static/{name}", web::get().to(assets::file))
                .route("/apps/{namespace}/{app}", web::get().to(timeline::page))
                .route(
                    "/apps/{namespace}/{app}/events",
                    web::get().to(timeline::events),
                )
                .route(
                    "/apps/{namespace}/{app}/build",
                    web::post().to(build_now::submit),
                )
                .route(
                    "/apps/{namespace}/{app}/deploy",
                    web::get().to(deploy_actions::confirm),
                )
                .route(
                    "/apps/{namespace}/{app}/deploy",
                    web::post().to(deploy_actions::submit),
                )
                .route("/builds/{id}", web::get().to(build_page::page))
                .route("/builds/{id}/lines", web::get().to(log_lines::fragment))
                .route("/builds/{id}/events", web::get().to(log_lines::events))
                .route("/builds/{id}/log.txt", web::get().to(log_lines::raw))
                .route(
                    "/builds/{id}/first-error",
                    web::get().to(build_page::first_error),
                )
                .route(
                    "/images/{path:.+}",
                    web::get().to(repository::page_or_image),
                )
                .route("/archives/{path:.+}", web::get().to(image_tabs::archive))
                .route("/deploys/{id}", web::get().to(deploys::page))
                .route("/deploys/{id}/log.txt", web::get().to(deploys::raw))
                .route("/deploys/{id}/events", web::get().to(deploys::events))
                .route("/login", web::get().to(session::login_page))
                .route("/login", web::post().to(session::login))
                .route("/logout", web::post().to(session::logout))
                .route("/settings", web::get().to(settings::page))
                .route(
                    "/settings/registry-password",
                    web::post().to(settings::registry_password),
                )
                .route("/settings/tokens", web::post().to(settings::create_token))
                .route(
                    "/settings/tokens/{id}/revoke",
                    web::get().to(settings::confirm_revoke),
                )
                .route(
                    "/settings/tokens/{id}/revoke",
                    web::post().to(settings::revoke_token),
                )
                .route("/settings/users", web::post().to(settings::create_user))
                .route(
                    "/settings/namespaces",
                    web::post().to(settings::change_namespace),
                )
                .route(
                    "/settings/namespaces/{namespace}/make-public",
                    web::get().to(settings::confirm_public),
                ),
        );
}
