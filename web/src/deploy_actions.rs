//! Deploying from the web: a "Deploy" button on an app's successful builds ("Roll back" on the
//! ones older than the deployed build), and what runs of the app on its servers. The pages never
//! talk to Docker engines themselves: the process serving them hands in a [`Deployer`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use buildgrid_core::{AppRef, RequestId};
use buildgrid_store::{App, Build, BuildState, Store, StoreError, Undeployable};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::timeline::load_app;
use crate::{Viewer, Web, format, layout};

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
    /// time per app, a newer queued one replacing an older queued one. Its log names
    /// `request`, the HTTP request that asked for it.
    fn deploy(&self, app_id: i64, build: i64, trigger: String, request: Option<RequestId>);
    /// What runs of `app` on the servers of its services.
    fn running(&self, app: AppRef) -> BoxFuture<Vec<ServerRunning>>;
}

/// Whether and how a viewer may deploy the builds of a timeline.
#[derive(Debug, Clone)]
pub struct Buttons {
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
    Ok((services > 0).then_some(Buttons { current }))
}

/// "Deploy" or "Roll back to this" for build `build`, given the deployed build.
fn label(current: Option<i64>, build: i64) -> &'static str {
    match current {
        Some(current) if build < current => "Roll back to this",
        _ => "Deploy",
    }
}

/// The deploy button of one build of the timeline: a link to the confirm step
/// ([`confirm`]), which works without JavaScript.
pub fn button(buttons: &Buttons, app: &App, build: &Build) -> Markup {
    if build.state != BuildState::Succeeded {
        return html! {};
    }
    if buttons.current == Some(build.id) {
        return html! { span.status.ok title="The newest successful deploy installed this build" { "deployed" } };
    }
    html! {
        a.button.deploy href={ "/apps/" (app.app) "/deploy?build=" (build.id) } { (label(buttons.current, build.id)) }
    }
}

#[derive(Deserialize)]
pub struct DeployForm {
    #[serde(default)]
    csrf: String,
    build: i64,
}

#[derive(Deserialize)]
pub struct DeployQuery {
    build: i64,
}

/// What a deploy of build `id` needs, checked: the build, the app's services, the deployed build.
struct Checked {
    build: Build,
    services: Vec<String>,
    current: Option<i64>,
    deployer: Arc<dyn Deployer>,
}

async fn check(
    viewer: &Viewer,
    state: &Web,
    namespace: &str,
    name: &str,
    id: i64,
) -> Result<(App, Checked), PageError> {
    if !viewer.may_read(namespace) {
        return Err(PageError::NotFound(format!(
            "There is no app {namespace}/{name}"
        )));
    }
    let app = load_app(state, namespace, name).await?;
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
    let (checked_app, app_id) = (app.clone(), app.id);
    let (checked, services, current) = blocking(move || {
        let checked = store.db.deployable_build(&checked_app, id);
        let services = store.db.services(app_id)?;
        Ok((checked, services, deployed_build(&store, app_id)?))
    })
    .await?;
    let build = match checked {
        Ok(build) => build,
        Err(error @ Undeployable::NoBuild { .. }) => {
            return Err(PageError::NotFound(capitalized(&error.to_string())));
        }
        Err(Undeployable::Store(error)) => return Err(error.into()),
        Err(error) => return Err(PageError::BadRequest(capitalized(&error.to_string()))),
    };
    if services.is_empty() {
        return Err(PageError::BadRequest(format!(
            "App {} has no services: add one with `buildgrid service add {} <name> --server <server>`",
            app.app, app.app
        )));
    }
    let services = services.into_iter().map(|s| s.name).collect();
    Ok((
        app,
        Checked {
            build,
            services,
            current,
            deployer,
        },
    ))
}

/// Asks before a deploy or a rollback: what will run where instead of what. The answer posts
/// to [`submit`].
pub async fn confirm(
    viewer: Viewer,
    path: web::Path<(String, String)>,
    query: web::Query<DeployQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (namespace, name) = path.into_inner();
    if viewer.user().is_none() {
        let next = format!("/apps/{namespace}/{name}/deploy?build={}", query.build);
        return Ok(HttpResponse::SeeOther()
            .insert_header((
                LOCATION,
                format!("/login?next={}", crate::error::query_value(&next)),
            ))
            .finish());
    }
    let (app, checked) = check(&viewer, &state, &namespace, &name, query.build).await?;
    let build = &checked.build;
    let label = label(checked.current, build.id);
    let title = if label == "Deploy" {
        format!("Deploy build #{}", build.id)
    } else {
        format!("Roll back to build #{}", build.id)
    };
    let question = html! {
        dl.facts {
            dt { "App" } dd { a href={ "/apps/" (app.app) } { (app.app) } }
            dt { "Build" } dd {
                a href={ "/builds/" (build.id) } { "#" (build.id) } " "
                span.branch { (build.git_ref) } " "
                @if let Some(commit) = &build.commit_id { code title=(commit) { (format::short_commit(commit)) } " " }
                @if let Some(message) = &build.commit_message { (format::subject(message)) }
            }
            dt { "Services" } dd { (checked.services.join(", ")) }
            dt { "Deployed now" } dd {
                @match checked.current {
                    Some(current) => { a href={ "/builds/" (current) } { "build #" (current) } }
                    None => { "nothing yet" }
                }
            }
        }
        p {
            "The servers pull the image and start new containers; the old ones stop once every new one is healthy, and keep serving if any fails."
        }
    };
    let action = format!("/apps/{}/deploy", app.app);
    let build_id = build.id.to_string();
    let markup = layout::confirm(
        &viewer,
        &title,
        question,
        &action,
        &[("build", &build_id)],
        if label == "Deploy" {
            "Deploy"
        } else {
            "Roll back"
        },
        &format!("/apps/{}", app.app),
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

/// How long the answer to a deploy waits for the deploy to start, to open its page.
const START_WAIT: Duration = Duration::from_secs(5);

/// Checks the build and queues its deploy; the browser goes to the deploy's page once it has
/// started (within a few seconds), else to the app's deploys.
pub async fn submit(
    request: HttpRequest,
    viewer: Viewer,
    path: web::Path<(String, String)>,
    form: web::Form<DeployForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (namespace, name) = path.into_inner();
    let form = form.into_inner();
    let user = viewer.require_form(&form.csrf)?.name.clone();
    let (app, checked) = check(&viewer, &state, &namespace, &name, form.build).await?;
    let id = checked.build.id;
    let trigger = match checked.current {
        Some(current) if id < current => format!("rollback by {user} (web)"),
        _ => format!("{user} (web)"),
    };
    let store = state.store.clone();
    let app_id = app.id;
    let newest = blocking(move || {
        Ok(store
            .db
            .deploys_of_app(app_id, 1)?
            .first()
            .map_or(0, |d| d.id))
    })
    .await?;
    let request_id = request.extensions().get::<RequestId>().cloned();
    checked
        .deployer
        .deploy(app.id, id, trigger.clone(), request_id);
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let location = loop {
        let store = state.store.clone();
        let trigger = trigger.clone();
        let started = blocking(move || {
            Ok(store
                .db
                .deploys_of_app(app_id, 10)?
                .into_iter()
                .find(|d| d.id > newest && d.build_id == id && d.trigger == trigger)
                .map(|d| d.id))
        })
        .await?;
        if let Some(deploy) = started {
            break format!("/deploys/{deploy}");
        }
        if tokio::time::Instant::now() >= deadline {
            break format!("/apps/{}#deploys", app.app);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, location))
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
                        Ok(containers) => table.list.cards-narrow.running {
                            thead { tr { th { "Service" } th { "Container" } th { "Image" } th { "State" } th { "Address" } } }
                            tbody {
                                @for c in containers {
                                    tr data-server=(server.server) {
                                        td data-label="Service" { (c.service) }
                                        td data-label="Container" { code { (c.name) } " " span.muted { "deploy " a href={ "/deploys/" (c.deploy) } { "#" (c.deploy) } } }
                                        td data-label="Image" { code { (c.image) } }
                                        td data-label="State" { (c.state) }
                                        td data-label="Address" { @if c.addresses.is_empty() { span.muted { "no published port" } } @else { (c.addresses.join(", ")) } }
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
