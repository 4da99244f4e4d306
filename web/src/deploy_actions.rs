//! Deploying from the web: a "Deploy" button on an app's successful builds ("Roll back" on the
//! ones older than the deployed build), and what runs of the app on its servers. The pages never
//! talk to Docker engines themselves: the process serving them hands in a [`Deployer`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use buildgrid_core::AppRef;
use buildgrid_store::{App, Build, BuildState, Store, StoreError, Undeployable};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::timeline::load_app;
use crate::{Viewer, Web};

/// How long the app page waits for its servers to say what runs there.
const RUNNING_WAIT: Duration = Duration::from_secs(2);

/// A container buildgrid runs for an app, as its engine reports it.
#[derive(Debug, Clone)]
pub struct Running {
    pub service: String,
    pub name: String,
    pub image: String,
    pub state: String,
    pub deploy: String,
    /// `host:port` addresses it answers at.
    pub addresses: Vec<String>,
}

/// What one server runs of an app, or why it could not be asked.
#[derive(Debug, Clone)]
pub struct ServerRunning {
    pub server: String,
    pub containers: Result<Vec<Running>, String>,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Deploys and the servers' state, provided by the process that serves the pages.
pub trait Deployer: Send + Sync {
    /// Queues a deploy of build `build` of app `app_id`; it runs in the background, one at a
    /// time per app, a newer queued one replacing an older queued one.
    fn deploy(&self, app_id: i64, build: i64, trigger: String);
    /// What runs of `app` on the servers of its services.
    fn running(&self, app: AppRef) -> BoxFuture<Vec<ServerRunning>>;
}

/// Whether and how a viewer may deploy the builds of a timeline.
#[derive(Debug, Clone)]
pub struct Buttons {
    csrf: String,
    /// The build the newest successful deploy installed.
    current: Option<i64>,
}

/// The build the newest successful deploy of an app installed.
fn deployed_build(store: &Store, app_id: i64) -> Result<Option<i64>, StoreError> {
    Ok(store
        .db
        .deploys_of_app(app_id, 50)?
        .into_iter()
        .find(|d| d.state == "succeeded")
        .map(|d| d.build_id))
}

/// The buttons for `viewer` on `app`'s builds: none unless the viewer may build the app, the app
/// has services and this process deploys.
pub async fn buttons(web: &Web, viewer: &Viewer, app: &App) -> Result<Option<Buttons>, PageError> {
    if web.settings.deployer.is_none() || !viewer.may_build(&app.app) {
        return Ok(None);
    }
    let store = web.store.clone();
    let app_id = app.id;
    let (services, current) = blocking(move || {
        let services = store.db.services(app_id)?.len();
        Ok((services, deployed_build(&store, app_id)?))
    })
    .await?;
    Ok((services > 0).then(|| Buttons {
        csrf: viewer.csrf_token().to_owned(),
        current,
    }))
}

/// The deploy form of one build of the timeline.
pub fn button(buttons: &Buttons, app: &App, build: &Build) -> Markup {
    if build.state != BuildState::Succeeded {
        return html! {};
    }
    if buttons.current == Some(build.id) {
        return html! { span.status.ok title="The newest successful deploy installed this build" { "deployed" } };
    }
    let label = match buttons.current {
        Some(current) if build.id < current => "Roll back to this",
        _ => "Deploy",
    };
    html! {
        form.inline method="post" action={ "/apps/" (app.app) "/deploy" } {
            input type="hidden" name="csrf" value=(buttons.csrf);
            input type="hidden" name="build" value=(build.id);
            button type="submit" { (label) }
        }
    }
}

#[derive(Deserialize)]
pub struct DeployForm {
    #[serde(default)]
    csrf: String,
    build: i64,
}

/// Checks the build and queues its deploy; the browser goes back to the app's deploys.
pub async fn submit(
    viewer: Viewer,
    path: web::Path<(String, String)>,
    form: web::Form<DeployForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (namespace, name) = path.into_inner();
    let form = form.into_inner();
    let user = viewer.require_form(&form.csrf)?.name.clone();
    let app = load_app(&state, &namespace, &name).await?;
    if !viewer.may_build(&app.app) {
        return Err(PageError::Forbidden(format!(
            "You may not deploy {}: that needs membership of namespace {}",
            app.app,
            app.app.namespace()
        )));
    }
    let Some(deployer) = state.settings.deployer.clone() else {
        return Err(PageError::BadRequest(
            "This server does not run deploys".into(),
        ));
    };
    let store = state.store.clone();
    let (checked_app, app_id, id) = (app.clone(), app.id, form.build);
    let (checked, services, current) = blocking(move || {
        let checked = store.db.deployable_build(&checked_app, id);
        let services = store.db.services(app_id)?.len();
        Ok((checked, services, deployed_build(&store, app_id)?))
    })
    .await?;
    match checked {
        Ok(_) => {}
        Err(error @ Undeployable::NoBuild { .. }) => {
            return Err(PageError::NotFound(capitalized(&error.to_string())));
        }
        Err(Undeployable::Store(error)) => return Err(error.into()),
        Err(error) => return Err(PageError::BadRequest(capitalized(&error.to_string()))),
    }
    if services == 0 {
        return Err(PageError::BadRequest(format!(
            "App {} has no services: add one with `buildgrid service add {} <name> --server <server>`",
            app.app, app.app
        )));
    }
    let trigger = match current {
        Some(current) if id < current => format!("rollback by {user} (web)"),
        _ => format!("{user} (web)"),
    };
    deployer.deploy(app.id, id, trigger);
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/apps/{}#deploys", app.app)))
        .finish())
}

/// `text` with its first letter in capitals, as the pages' messages start.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// What runs of the app, per server; nothing when this process does not deploy. The servers are
/// asked at most once per few seconds per app (the answer is shared, see [`crate::Shared`]).
pub async fn running(web: &Web, app: &App) -> Option<Vec<ServerRunning>> {
    let deployer = web.settings.deployer.clone()?;
    let ask = async move {
        match tokio::time::timeout(RUNNING_WAIT, deployer.running(app.app.clone())).await {
            Ok(servers) => servers,
            Err(_) => vec![ServerRunning {
                server: "(all)".into(),
                containers: Err(format!(
                    "the servers did not answer within {} s",
                    RUNNING_WAIT.as_secs()
                )),
            }],
        }
    };
    Some(web.settings.shared.running(app.id, ask).await)
}

pub fn running_section(servers: &[ServerRunning]) -> Markup {
    html! {
        @if !servers.is_empty() {
            h2 { "Running" }
            section #running aria-label="Running containers" {
                @for server in servers {
                    h3 { "Server " (server.server) }
                    @match &server.containers {
                        Err(reason) => p.notice { "Not reachable: " (reason) },
                        Ok(containers) if containers.is_empty() => p.muted { "Nothing of this app runs here." },
                        Ok(containers) => table.files {
                            thead { tr { th { "Service" } th { "Container" } th { "Image" } th { "State" } th { "Address" } } }
                            tbody {
                                @for c in containers {
                                    tr data-server=(server.server) {
                                        td { (c.service) }
                                        td { code { (c.name) } " " span.muted { "deploy " a href={ "/deploys/" (c.deploy) } { "#" (c.deploy) } } }
                                        td { code { (c.image) } }
                                        td { (c.state) }
                                        td { @if c.addresses.is_empty() { span.muted { "no published port" } } @else { (c.addresses.join(", ")) } }
                                    }
                                }
                            }
                        },
                    }
                }
            }
        }
    }
}
