//! An app's timeline (`/apps/{ns}/{app}`): its builds newest first, filtered by branch and
//! status, paged by build id, and kept live by an event stream while builds run.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_core::AppRef;
use buildgrid_store::{App, Build, BuildFilter, BuildState, Page};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use crate::error::{PageError, blocking};
use crate::events::{self, Event, Poll};
use crate::{Viewer, Web, build_now, deploy_actions, format, layout};

/// Builds on one page of a timeline.
pub const PAGE_SIZE: usize = 50;
const POLL: Duration = Duration::from_secs(1);

#[derive(Deserialize, Default)]
pub struct TimelineQuery {
    branch: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    after: Option<i64>,
}

/// The status filter's choices: a name and the build states it stands for.
const STATUSES: &[(&str, &[BuildState])] = &[
    ("queued", &[BuildState::Queued]),
    (
        "running",
        &[
            BuildState::Fetching,
            BuildState::Building,
            BuildState::Storing,
        ],
    ),
    ("succeeded", &[BuildState::Succeeded]),
    ("failed", &[BuildState::Failed]),
    ("cancelled", &[BuildState::Cancelled]),
    ("skipped", &[BuildState::Skipped]),
];

fn non_empty(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

impl TimelineQuery {
    fn filter(&self) -> Result<BuildFilter, PageError> {
        let states = match non_empty(&self.status) {
            None => Vec::new(),
            Some(status) => STATUSES
                .iter()
                .find(|(name, _)| *name == status)
                .map(|(_, states)| states.to_vec())
                .ok_or_else(|| {
                    PageError::BadRequest(format!(
                        "unknown status {status:?}: use queued, running, succeeded, failed, cancelled or skipped"
                    ))
                })?,
        };
        Ok(BuildFilter {
            branch: non_empty(&self.branch).map(str::to_owned),
            states,
        })
    }

    /// The query string of this filter with extra pairs, starting with `?`.
    fn link(&self, extra: &[(&str, String)]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(branch) = non_empty(&self.branch) {
            query.append_pair("branch", branch);
        }
        if let Some(status) = non_empty(&self.status) {
            query.append_pair("status", status);
        }
        for (key, value) in extra {
            query.append_pair(key, value);
        }
        format!("?{}", query.finish())
    }
}

/// The app a path names, or 404.
/// What a viewer who may not read a namespace is told: the same as for an app that does not
/// exist, so private apps stay unknown, with a hint to sign in.
fn not_visible(viewer: &Viewer, namespace: &str, name: &str) -> PageError {
    let hint = if viewer.user().is_none() {
        " (sign in to see private apps)"
    } else {
        ""
    };
    PageError::NotFound(format!("There is no app {namespace}/{name}{hint}"))
}

pub async fn load_app(web: &Web, namespace: &str, name: &str) -> Result<App, PageError> {
    let app = AppRef::parse(&format!("{namespace}/{name}"))
        .map_err(|e| PageError::NotFound(e.to_string()))?;
    let store = web.store.clone();
    let wanted = app.clone();
    blocking(move || Ok(store.db.app(&wanted)?))
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no app {app}")))
}

pub async fn page(
    viewer: Viewer,
    path: web::Path<(String, String)>,
    query: web::Query<TimelineQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (namespace, name) = path.into_inner();
    if !viewer.may_read(&namespace) {
        return Err(not_visible(&viewer, &namespace, &name));
    }
    let app = load_app(&state, &namespace, &name).await?;
    let filter = query.filter()?;
    let page = match (query.before, query.after) {
        (Some(before), _) => Page::Before(before),
        (None, Some(after)) => Page::After(after),
        (None, None) => Page::Newest,
    };
    let store = state.store.clone();
    let app_id = app.id;
    // Deploys and what runs on the servers are shown like logs: to members, or to everyone
    // who may read a namespace that publishes its logs. Others cost no server a connection.
    let operations = viewer.may_read_logs(app.app.namespace());
    let newest = page == Page::Newest && operations;
    let (builds, branches, (deploys, deployed, images)) = blocking(move || {
        let builds = store.db.timeline(app_id, &filter, page, PAGE_SIZE)?;
        let branches = store.db.build_branches(app_id)?;
        let deploys = if newest {
            store.db.deploys_of_app(app_id, 10)?
        } else {
            Vec::new()
        };
        let ids: Vec<i64> = deploys.iter().map(|d| d.build_id).collect();
        let deployed = store.db.app_builds_by_id(app_id, &ids)?;
        let deploy_ids: Vec<i64> = deploys.iter().map(|d| d.id).collect();
        let images = store.db.deploy_images(&deploy_ids)?;
        Ok((builds, branches, (deploys, deployed, images)))
    })
    .await?;
    let buttons = deploy_actions::buttons(&state, &viewer, &app).await?;
    let running = if newest && !deploys.is_empty() {
        deploy_actions::running(&state, &app).await
    } else {
        None
    };
    let view = View {
        app: &app,
        buttons: buttons.as_ref(),
        running: running.as_deref().unwrap_or_default(),
        builds: &builds,
        branches: &branches,
        deploys: &deploys,
        deployed: &deployed,
        images: &images,
        query: &query,
        page,
        host: state.settings.registry_host(),
        now: format::now(),
    };
    Ok(layout::html_response(
        StatusCode::OK,
        &render(&view, &viewer),
    ))
}

struct View<'a> {
    app: &'a App,
    buttons: Option<&'a deploy_actions::Buttons>,
    running: &'a [deploy_actions::ServerRunning],
    builds: &'a [Build],
    branches: &'a [String],
    deploys: &'a [buildgrid_store::Deploy],
    /// The builds the deploys installed.
    deployed: &'a [Build],
    /// What each service of those deploys runs.
    images: &'a [buildgrid_store::DeployImage],
    query: &'a TimelineQuery,
    page: Page,
    host: &'a str,
    now: i64,
}

fn render(view: &View<'_>, viewer: &Viewer) -> Markup {
    let app = view.app;
    let query = view.query;
    let live = (view.page == Page::Newest).then(|| {
        let newest = view.builds.first().map_or(0, |b| b.id);
        let watch: Vec<String> = view
            .builds
            .iter()
            .filter(|b| !b.state.is_finished())
            .map(|b| b.id.to_string())
            .collect();
        format!(
            "/apps/{}/events{}",
            app.app,
            query.link(&[("after", newest.to_string()), ("watch", watch.join(","))])
        )
    });
    let content = html! {
        div.meta.intro {
            span { "Builds " span.branch { (app.branch) } }
            span { "from " code { (buildgrid_core::app::public_url(&app.git_url)) } }
            span { "Image " code { (view.host) "/" (app.image_repo) } }
        }
        (build_now::form(app, viewer))
        (deploy_actions::running_section(view.running))
        (crate::deploys::recent(view.deploys, view.deployed, view.images, view.now))
        form.bar method="get" action={ "/apps/" (app.app) } {
            label { "Branch"
                select name="branch" {
                    option value="" { "All branches" }
                    @for branch in view.branches {
                        option value=(branch) selected[non_empty(&query.branch) == Some(branch.as_str())] { (branch) }
                    }
                }
            }
            label { "Status"
                select name="status" {
                    option value="" { "Any status" }
                    @for (status, _) in STATUSES {
                        option value=(status) selected[non_empty(&query.status) == Some(*status)] { (status) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if non_empty(&query.branch).is_some() || non_empty(&query.status).is_some() {
                a href={ "/apps/" (app.app) } { "Clear" }
            }
        }
        p #no-builds.notice hidden[!view.builds.is_empty()] {
            @if view.page == Page::Newest { "No builds yet." } @else { "No more builds." }
        }
        ol #timeline.cards aria-label="Builds" aria-live="polite" data-events=[live] {
            @for build in view.builds {
                (build_row(build, app, view.host, view.now, view.buttons))
            }
        }
        nav.pager aria-label="Pages" {
            @if view.page != Page::Newest {
                a href=(query.link(&[])) { "Newest" }
                @if let Some(first) = view.builds.first() {
                    a href=(query.link(&[("after", first.id.to_string())])) rel="prev" { "← Newer" }
                }
            }
            @if view.builds.len() == PAGE_SIZE && let Some(last) = view.builds.last() {
                a href=(query.link(&[("before", last.id.to_string())])) rel="next" { "Older →" }
            }
        }
    };
    layout::page_for(viewer, &app.app.to_string(), &[], content)
}

/// One build of the timeline; the event stream sends the same markup.
pub fn build_row(
    build: &Build,
    app: &App,
    host: &str,
    now: i64,
    buttons: Option<&deploy_actions::Buttons>,
) -> Markup {
    // A build of one of the app's sources made an image of another repository.
    let repo = build
        .image_ref
        .as_deref()
        .and_then(|r| r.split_once('/'))
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .map_or(app.image_repo.as_str(), |(repo, _)| repo);
    html! {
        li #{ "b" (build.id) } {
            div.row {
                (layout::status(build.state))
                a.title href={ "/builds/" (build.id) } { "#" (build.id) }
                span.branch { (build.git_ref) }
                @if let Some(commit) = &build.commit_id {
                    code title=(commit) { (format::short_commit(commit)) }
                }
                @if let Some(message) = &build.commit_message {
                    span.message title=(message) { (format::subject(message)) }
                }
                @if let Some(author) = &build.commit_author {
                    span.muted { (author) }
                }
            }
            div.meta {
                span { "queued " (layout::ago(now, build.queued_at)) }
                @if let Some(seconds) = format::build_duration(build, now) {
                    span { @if build.state.is_finished() { "took " } @else { "running for " } (format::duration(seconds)) }
                }
                span { "by " (build.trigger) }
                @if let Some(reason) = &build.reason {
                    span { (reason) }
                }
            }
            @if build.state == BuildState::Succeeded && let Some(commit) = &build.commit_id {
                div.row {
                    span.muted { "Image" }
                    @if let Some(digest) = &build.image_digest {
                        code title=(digest) { (format::short_digest(digest)) }
                    }
                    (layout::copyable(&format!("pull-{}", build.id), &format::pull_reference(host, repo, commit)))
                    a href={ "/images/" (repo) "/" (commit) } { "Image page" }
                    @if let Some(buttons) = buttons {
                        (deploy_actions::button(buttons, app, build))
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    branch: Option<String>,
    status: Option<String>,
    after: Option<i64>,
    watch: Option<String>,
}

struct Watching {
    filter: BuildFilter,
    buttons: Option<deploy_actions::Buttons>,
    after: i64,
    watch: Vec<i64>,
    known: HashMap<i64, BuildState>,
}

/// New builds and state changes of the builds a timeline page shows, as `build` events whose
/// data is the row's markup.
pub async fn events(
    viewer: Viewer,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<EventsQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let opened = events::open(&state, &request)?;
    let (namespace, name) = path.into_inner();
    if !viewer.may_read(&namespace) {
        return Err(not_visible(&viewer, &namespace, &name));
    }
    let app = load_app(&state, &namespace, &name).await?;
    let after = query
        .after
        .unwrap_or(0)
        .max(events::last_event_id(&request).unwrap_or(0));
    let watch = query
        .watch
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .take(PAGE_SIZE)
        .collect();
    let filter = TimelineQuery {
        branch: query.branch.clone(),
        status: query.status.clone(),
        ..TimelineQuery::default()
    };
    let buttons = deploy_actions::buttons(&state, &viewer, &app).await?;
    let watching = Watching {
        filter: filter.filter()?,
        buttons,
        after,
        watch,
        known: HashMap::new(),
    };
    Ok(events::stream(opened, watching, POLL, move |watching| {
        let state = state.clone();
        let app = app.clone();
        async move { poll(&state, &app, watching).await }
    }))
}

async fn poll(web: &Web, app: &App, mut watching: Watching) -> Result<Poll<Watching>, PageError> {
    let store = web.store.clone();
    let (app_id, filter, after, watch) = (
        app.id,
        watching.filter.clone(),
        watching.after,
        watching.watch.clone(),
    );
    let (new, watched) = blocking(move || {
        let new = store
            .db
            .timeline(app_id, &filter, Page::After(after), PAGE_SIZE)?;
        let watched = store.db.app_builds_by_id(app_id, &watch)?;
        Ok((new, watched))
    })
    .await?;
    let now = format::now();
    let host = web.settings.registry_host();
    let mut events = Vec::new();
    let again = new.len() == PAGE_SIZE;
    for build in watched.iter().chain(new.iter().rev()) {
        if watching.known.get(&build.id) == Some(&build.state) {
            continue;
        }
        watching.known.insert(build.id, build.state);
        watching.after = watching.after.max(build.id);
        if !build.state.is_finished() && !watching.watch.contains(&build.id) {
            watching.watch.push(build.id);
        }
        events.push(Event {
            id: Some(watching.after),
            name: "build",
            data: json!({ "id": build.id, "html": build_row(build, app, host, now, watching.buttons.as_ref()).0 }),
        });
    }
    // Finished builds change no more; new ones are watched until they finish.
    let finished: Vec<i64> = watched
        .iter()
        .chain(new.iter())
        .filter(|b| b.state.is_finished())
        .map(|b| b.id)
        .collect();
    watching.watch.retain(|id| !finished.contains(id));
    watching.known.retain(|id, _| !finished.contains(id));
    Ok(Poll::Continue {
        events,
        state: watching,
        again,
    })
}
