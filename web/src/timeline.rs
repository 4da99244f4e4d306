//! An app's timeline (`/apps/{ns}/{app}`): its builds newest first, filtered by branch and
//! status, paged by build id, and kept live by an event stream while builds run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_core::AppRef;
use buildgrid_store::{
    App, Build, BuildFilter, BuildState, Deploy, DeployImage, Page, Store, StoreError,
};
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
    let (builds, branches, recent, badges) = blocking(move || {
        let builds = store.db.timeline(app_id, &filter, page, PAGE_SIZE)?;
        let branches = store.db.build_branches(app_id)?;
        let recent = if newest {
            Some(recent_deploys(&store, app_id)?)
        } else {
            None
        };
        let badges = if operations {
            let ids: Vec<i64> = builds.iter().map(|b| b.id).collect();
            store.db.newest_deploys_of_builds(app_id, &ids)?
        } else {
            Vec::new()
        };
        Ok((builds, branches, recent, badges))
    })
    .await?;
    let buttons = deploy_actions::buttons(&state, &viewer, &app).await?;
    let (operations, deploys_shown) = match recent {
        Some(recent) => (
            operations_markup(&state, &app, &recent, format::now()).await,
            Some(deploys_key(&recent.deploys)),
        ),
        None => (html! {}, None),
    };
    // The moving tags of the app's branches, pullable by anyone who may read the app.
    let operations = html! {
        (crate::repository::app_branch_tags(&state, &app).await?)
        (crate::storage::app_storage(&state, &app.app).await?)
        (operations)
    };
    let view = View {
        app: &app,
        buttons: buttons.as_ref(),
        operations,
        deploys_shown,
        builds: &builds,
        badges: &badges,
        branches: &branches,
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

/// Deploys an app's timeline shows.
const DEPLOYS: usize = 10;

/// The recent deploys of an app, the builds they installed and what each service runs.
struct Recent {
    deploys: Vec<Deploy>,
    deployed: Vec<Build>,
    images: Vec<DeployImage>,
}

fn recent_deploys(store: &Store, app_id: i64) -> Result<Recent, StoreError> {
    let deploys = store.db.deploys_of_app(app_id, DEPLOYS)?;
    let ids: Vec<i64> = deploys.iter().map(|d| d.build_id).collect();
    let deployed = store.db.app_builds_by_id(app_id, &ids)?;
    let deploy_ids: Vec<i64> = deploys.iter().map(|d| d.id).collect();
    let images = store.db.deploy_images(&deploy_ids)?;
    Ok(Recent {
        deploys,
        deployed,
        images,
    })
}

/// What runs of the app on its servers and its recent deploys (nothing before its first
/// deploy), as the page shows them and the event stream replaces them.
async fn operations_markup(web: &Web, app: &App, recent: &Recent, now: i64) -> Markup {
    let running = if recent.deploys.is_empty() {
        None
    } else {
        deploy_actions::running(web, app).await
    };
    html! {
        div #operations {
            (deploy_actions::running_section(running.as_deref().unwrap_or_default()))
            (crate::deploys::recent(&recent.deploys, &recent.deployed, &recent.images, now))
        }
    }
}

struct View<'a> {
    app: &'a App,
    buttons: Option<&'a deploy_actions::Buttons>,
    /// What runs and the recent deploys: empty for viewers who may not see them, and on
    /// older pages.
    operations: Markup,
    /// The recent deploys and their states as shown ([`deploys_key`]), when shown.
    deploys_shown: Option<String>,
    builds: &'a [Build],
    /// The newest deploy of each build shown that was deployed.
    badges: &'a [Deploy],
    branches: &'a [String],
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
        let mut pairs = vec![("after", newest.to_string()), ("watch", watch.join(","))];
        if let Some(shown) = view.deploys_shown.as_ref().filter(|s| !s.is_empty()) {
            pairs.push(("deploys", shown.clone()));
        }
        format!("/apps/{}/events{}", app.app, query.link(&pairs))
    });
    let content = html! {
        div.meta.intro {
            span { "Builds " span.branch { (app.branch) } }
            span { "from " code { (buildgrid_core::app::public_url(&app.git_url)) } }
            span { "Image " a href={ "/images/" (app.image_repo) } { code { (view.host) "/" (app.image_repo) } } }
        }
        (build_now::form(app, viewer))
        (view.operations)
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
                        option value=(status) selected[non_empty(&query.status) == Some(*status)] { (format::status_choice(status)) }
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
                (build_row(build, app, view.host, view.now, view.buttons, badge(view.badges, build)))
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

/// The newest deploy of `build` among `deploys`.
fn badge<'a>(deploys: &'a [Deploy], build: &Build) -> Option<&'a Deploy> {
    deploys.iter().rfind(|d| d.build_id == build.id)
}

/// One build of the timeline; the event stream sends the same markup.
pub fn build_row(
    build: &Build,
    app: &App,
    host: &str,
    now: i64,
    buttons: Option<&deploy_actions::Buttons>,
    deploy: Option<&Deploy>,
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
                (crate::deploys::build_badge(deploy))
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
                span { "by " (format::build_trigger(&build.trigger)) }
                @if let Some(reason) = &build.reason {
                    span { (reason) }
                }
            }
            @if build.state == BuildState::Succeeded && let Some(commit) = &build.commit_id {
                div.row {
                    span.muted { "Image" }
                    @if let Some(digest) = &build.image_digest {
                        span.muted { "digest" }
                        code title=(digest) { (format::short_digest(digest)) }
                    }
                    @if build.image_removed {
                        span.muted.removed #{ "removed-" (build.id) } { "image removed by retention" }
                    } @else {
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
}

#[derive(Deserialize)]
pub struct EventsQuery {
    branch: Option<String>,
    status: Option<String>,
    after: Option<i64>,
    watch: Option<String>,
    /// The deploys the page shows, as [`deploys_key`] writes them: the stream sends them
    /// again only when they differ.
    deploys: Option<String>,
}

/// The recent deploys' ids and states, `12.running,11.failed`: what a page showed, so that its
/// stream sends deploys only when they changed.
fn deploys_key(deploys: &[Deploy]) -> String {
    let pairs: Vec<String> = deploys
        .iter()
        .map(|d| format!("{}.{}", d.id, d.state))
        .collect();
    pairs.join(",")
}

struct Watching {
    viewer: Viewer,
    filter: BuildFilter,
    buttons: Option<deploy_actions::Buttons>,
    after: i64,
    watch: Vec<i64>,
    known: HashMap<i64, BuildState>,
    /// Whether the viewer sees deploys and what runs (the page shows them).
    operations: bool,
    /// The recent deploys ([`deploys_key`]) last sent, or that the page showed; `None` when
    /// unknown, so the first look sends them.
    deploys_sent: Option<String>,
    /// The markup of the deploys and what runs last sent.
    operations_sent: String,
    /// Until when what runs is asked again each look (the servers' answer is shared and kept
    /// a few seconds, so this costs them at most one question per few seconds).
    running_until: Option<Instant>,
}

/// How long after a deploy changed the stream keeps asking what runs: containers start and stop
/// a while after the deploy's row says so.
const RUNNING_FOLLOW: Duration = Duration::from_secs(20);

/// New builds and state changes of the builds a timeline page shows, as `build` events whose
/// data is the row's markup; for viewers who see deploys also the deploys and what runs
/// (`operations`) and, when a deploy changes which build runs, the rows of the builds shown
/// (`row`). The first look sends the current state of all of these.
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
    let operations = viewer.may_read_logs(app.app.namespace());
    let watching = Watching {
        viewer,
        filter: filter.filter()?,
        buttons,
        after,
        watch,
        known: HashMap::new(),
        operations,
        deploys_sent: query.deploys.clone(),
        operations_sent: String::new(),
        running_until: None,
    };
    Ok(events::stream(opened, watching, POLL, move |watching| {
        let state = state.clone();
        let app = app.clone();
        async move { poll(&state, &app, watching).await }
    }))
}

/// What one look at the store found for a timeline.
struct Found {
    new: Vec<Build>,
    watched: Vec<Build>,
    /// The recent deploys, for viewers who see them.
    recent: Option<Recent>,
}

async fn poll(web: &Web, app: &App, mut watching: Watching) -> Result<Poll<Watching>, PageError> {
    let store = web.store.clone();
    let (app_id, filter, after, watch, operations) = (
        app.id,
        watching.filter.clone(),
        watching.after,
        watching.watch.clone(),
        watching.operations,
    );
    let found = blocking(move || {
        let new = store
            .db
            .timeline(app_id, &filter, Page::After(after), PAGE_SIZE)?;
        let watched = store.db.app_builds_by_id(app_id, &watch)?;
        let recent = if operations {
            Some(recent_deploys(&store, app_id)?)
        } else {
            None
        };
        Ok(Found {
            new,
            watched,
            recent,
        })
    })
    .await?;
    let now = format::now();
    let host = web.settings.registry_host();
    let mut events = Vec::new();
    let again = found.new.len() == PAGE_SIZE;
    let deploys = found
        .recent
        .as_ref()
        .map_or_else(String::new, |r| deploys_key(&r.deploys));
    let deploys_changed = watching.operations && watching.deploys_sent.as_ref() != Some(&deploys);
    if deploys_changed {
        // Which build runs may have changed, and with it every row's button.
        watching.buttons = deploy_actions::buttons(web, &watching.viewer, app).await?;
    }
    let changed: Vec<&Build> = found
        .watched
        .iter()
        .chain(found.new.iter().rev())
        .filter(|b| watching.known.get(&b.id) != Some(&b.state))
        .collect();
    let badges = if watching.operations && !changed.is_empty() {
        let ids: Vec<i64> = changed.iter().map(|b| b.id).collect();
        let store = web.store.clone();
        blocking(move || Ok(store.db.newest_deploys_of_builds(app_id, &ids)?)).await?
    } else {
        Vec::new()
    };
    for build in changed {
        watching.known.insert(build.id, build.state);
        watching.after = watching.after.max(build.id);
        if !build.state.is_finished() && !watching.watch.contains(&build.id) {
            watching.watch.push(build.id);
        }
        let row = build_row(
            build,
            app,
            host,
            now,
            watching.buttons.as_ref(),
            badge(&badges, build),
        );
        events.push(Event {
            id: Some(watching.after),
            name: "build",
            data: json!({ "id": build.id, "html": row.0 }),
        });
    }
    // Finished builds change no more; new ones are watched until they finish.
    let finished: Vec<i64> = found
        .watched
        .iter()
        .chain(found.new.iter())
        .filter(|b| b.state.is_finished())
        .map(|b| b.id)
        .collect();
    watching.watch.retain(|id| !finished.contains(id));
    watching.known.retain(|id, _| !finished.contains(id));
    if let Some(recent) = found.recent {
        events.extend(operations_events(web, app, &mut watching, recent, deploys_changed).await?);
        watching.deploys_sent = Some(deploys);
    }
    Ok(Poll::Continue {
        events,
        state: watching,
        again,
    })
}

/// The deploys and what runs, when they changed, and when a deploy changed, the rows of the
/// builds the page shows (their buttons and deploy badges).
async fn operations_events(
    web: &Web,
    app: &App,
    watching: &mut Watching,
    recent: Recent,
    deploys_changed: bool,
) -> Result<Vec<Event>, PageError> {
    let mut events = Vec::new();
    let running = recent.deploys.iter().any(|d| d.state == "running");
    if deploys_changed || running {
        watching.running_until = Some(Instant::now() + RUNNING_FOLLOW);
    }
    let follow = watching
        .running_until
        .is_some_and(|until| Instant::now() < until);
    if !(deploys_changed || follow) {
        return Ok(events);
    }
    let markup = operations_markup(web, app, &recent, format::now()).await.0;
    if markup != watching.operations_sent {
        events.push(Event {
            id: None,
            name: "operations",
            data: json!({ "html": markup }),
        });
        watching.operations_sent = markup;
    }
    if !deploys_changed || watching.deploys_sent.is_none() && recent.deploys.is_empty() {
        return Ok(events);
    }
    // The rows the page shows: the newest page of its filter, up to the builds already sent.
    let store = web.store.clone();
    let (app_id, filter, after) = (app.id, watching.filter.clone(), watching.after);
    let (shown, badges) = blocking(move || {
        let shown: Vec<Build> = store
            .db
            .timeline(app_id, &filter, Page::Newest, PAGE_SIZE)?
            .into_iter()
            .filter(|b| b.id <= after)
            .collect();
        let ids: Vec<i64> = shown.iter().map(|b| b.id).collect();
        let badges = store.db.newest_deploys_of_builds(app_id, &ids)?;
        Ok((shown, badges))
    })
    .await?;
    let (now, host) = (format::now(), web.settings.registry_host());
    for build in shown.iter().filter(|b| b.state == BuildState::Succeeded) {
        let row = build_row(
            build,
            app,
            host,
            now,
            watching.buttons.as_ref(),
            badge(&badges, build),
        );
        events.push(Event {
            id: None,
            name: "row",
            data: json!({ "id": build.id, "html": row.0 }),
        });
    }
    Ok(events)
}
