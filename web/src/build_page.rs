//! A build's page (`/builds/{id}`): what was built, a window of its log (the tail by default,
//! filtered by text and step on the server), and the image it made at the end. While the
//! build runs, the page's script follows the log through `/builds/{id}/events`.

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use buildgrid_store::{App, Build, BuildState, Deploy, LogLine, LogStep};
use maud::{Markup, html};

use crate::error::{PageError, blocking};
use crate::log_lines::{self, ERROR_PATTERNS, LogQuery, WINDOW};
use crate::{Viewer, Web, format, layout};

/// The build and its app, if the viewer may see them.
pub async fn load_build(web: &Web, viewer: &Viewer, id: i64) -> Result<(Build, App), PageError> {
    let store = web.store.clone();
    let found = blocking(move || {
        let Some(build) = store.db.build(id)? else {
            return Ok(None);
        };
        let app = store.db.app_by_id(build.app_id)?;
        Ok(app.map(|app| (build, app)))
    })
    .await?;
    match found {
        Some((build, app)) if viewer.may_read(app.app.namespace()) => Ok((build, app)),
        _ => Err(PageError::NotFound(format!("There is no build {id}"))),
    }
}

/// The build and its app, if the viewer may also read its log (see [`Viewer::may_read_logs`]).
pub async fn load_build_log(
    web: &Web,
    viewer: &Viewer,
    id: i64,
) -> Result<(Build, App), PageError> {
    let (build, app) = load_build(web, viewer, id).await?;
    if !viewer.may_read_logs(app.app.namespace()) {
        return Err(PageError::Forbidden(
            viewer.logs_hidden(app.app.namespace()),
        ));
    }
    Ok((build, app))
}

/// Which lines a page shows.
enum Window {
    Tail,
    Before(i64),
    After(i64),
}

struct LogView {
    lines: Vec<LogLine>,
    steps: Vec<LogStep>,
    total: i64,
    /// Whether a line looks like an error, so that "First error" leads somewhere.
    has_error: bool,
}

pub async fn page(
    viewer: Viewer,
    path: web::Path<i64>,
    query: web::Query<LogQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (build, app) = load_build(&state, &viewer, path.into_inner()).await?;
    let logs = viewer.may_read_logs(app.app.namespace());
    let window = match (query.before, query.after) {
        (Some(before), _) => Window::Before(before),
        (None, Some(after)) => Window::After(after),
        (None, None) => Window::Tail,
    };
    let filter = query.filter();
    let store = state.store.clone();
    let (id, state_now) = (build.id, build.state);
    let read = match window {
        Window::Tail => (true, i64::MAX),
        Window::Before(before) => (true, before),
        Window::After(after) => (false, after),
    };
    let view = blocking(move || {
        if !logs {
            return Ok(None);
        }
        let lines = match read {
            (true, before) => store.db.log_before(id, before, &filter, WINDOW)?,
            (false, after) => store.db.log_after(id, after, &filter, WINDOW)?,
        };
        // A failed build's error is mostly in its last lines: the whole log is searched only
        // when the window shows none.
        let has_error = state_now != BuildState::Succeeded
            && (lines.iter().any(|l| log_lines::is_error(&l.line))
                || store.db.first_log_match(id, ERROR_PATTERNS)?.is_some());
        Ok(Some(LogView {
            lines,
            steps: store.db.log_steps(id)?,
            total: store.db.last_log_seq(id)?,
            has_error,
        }))
    })
    .await?;
    let deploy = newest_deploy(&state, &viewer, &build, &app).await?;
    let shown = Shown {
        build: &build,
        app: &app,
        deploy: deploy.as_ref(),
    };
    let markup = match view {
        Some(view) => render(&viewer, &shown, &view, &window, &query, &state),
        None => render_without_log(&viewer, &shown, &state),
    };
    Ok(layout::html_response(StatusCode::OK, &markup))
}

/// The newest deploy of a build, for viewers who may see deploys.
pub async fn newest_deploy(
    web: &Web,
    viewer: &Viewer,
    build: &Build,
    app: &App,
) -> Result<Option<Deploy>, PageError> {
    if build.state != BuildState::Succeeded || !viewer.may_read_logs(app.app.namespace()) {
        return Ok(None);
    }
    let store = web.store.clone();
    let (app_id, id) = (app.id, build.id);
    blocking(move || Ok(store.db.newest_deploys_of_builds(app_id, &[id])?.pop())).await
}

/// The build a page is about, its app and its newest deploy (when the viewer may see it).
struct Shown<'a> {
    build: &'a Build,
    app: &'a App,
    deploy: Option<&'a Deploy>,
}

fn render(
    viewer: &Viewer,
    shown: &Shown<'_>,
    view: &LogView,
    window: &Window,
    query: &LogQuery,
    state: &Web,
) -> Markup {
    let (build, app) = (shown.build, shown.app);
    let host = state.settings.registry_host();
    let filter = query.filter();
    let base = query.base();
    let full = view.lines.len() == WINDOW;
    let first = view.lines.first().map(|l| l.seq);
    let last = view.lines.last().map(|l| l.seq);
    let (earlier, later, at_tail) = match *window {
        Window::Tail => (full, false, true),
        Window::Before(_) => (full, true, false),
        Window::After(after) => (after > 0, full, !full),
    };
    let earlier_from = first.unwrap_or(match *window {
        Window::After(after) => after + 1,
        _ => 1,
    });
    let live = (!build.state.is_finished() && at_tail).then(|| {
        let after = last.or(match *window {
            Window::After(after) => Some(after),
            _ => None,
        });
        format!(
            "/builds/{}/events{base}after={}",
            build.id,
            after.unwrap_or(0)
        )
    });
    let id = build.id;
    let filtered = filter != Default::default();
    let content = html! {
        p { (status(build)) " " (crate::deploys::build_badge(shown.deploy)) }
        (facts(build, app, host, format::now()))
        form.bar method="get" action={ "/builds/" (id) } role="search" {
            label { "Text"
                input type="search" name="q" value=[filter.text.as_deref()] placeholder="Filter lines";
            }
            label { "Step"
                select name="step" {
                    option value="" { "All steps" }
                    @for step in &view.steps {
                        option value=(step.step) selected[filter.step.as_deref() == Some(step.step.as_str())] { (step.step) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if filter != Default::default() {
                a href={ "/builds/" (id) } { "Clear" }
            }
            @if view.has_error {
                a #first-error href={ "/builds/" (id) "/first-error" } { "First error" }
            }
            a href={ "/builds/" (id) "/log.txt" } download { "Download raw" }
        }
        (steps(id, &view.steps))
        div.window {
            span #log-count data-filtered[filtered] {
                @if let (Some(first), Some(last)) = (first, last) {
                    "Lines " (first) "–" (last) " of " (view.total) @if filtered { ", filtered" }
                } @else {
                    @if filtered { "No line matches." } @else { "No lines yet." }
                }
            }
            a #earlier href={ (base) "before=" (earlier_from) } hidden[!earlier]
                data-fragment={ "/builds/" (id) "/lines" (base) "before=" (earlier_from) }
                data-base=(base) data-fragment-base={ "/builds/" (id) "/lines" (base) } { "↑ Earlier lines" }
            @if later {
                @if let Some(last) = last {
                    a href={ (base) "after=" (last) } { "↓ Later lines" }
                }
                a href=(if base == "?" { format!("/builds/{id}") } else { base.trim_end_matches('&').to_owned() }) { "Newest lines" }
            }
        }
        // The newest lines open at the log's end (unless the address names a line).
        div #log.log role="log" aria-label="Build log" data-events=[live] data-tail[at_tail && matches!(window, Window::Tail)] {
            (log_lines::lines(&view.lines, &filter))
        }
        (end_note(build, app, host))
    };
    let name = app.app.to_string();
    let timeline = format!("/apps/{name}");
    layout::page_for(
        viewer,
        &format!("Build #{id}"),
        &[(&name, &timeline)],
        content,
    )
}

/// The build's steps, each a link to its first line; the event stream replaces them as steps
/// start.
pub fn steps(id: i64, steps: &[LogStep]) -> Markup {
    html! {
        nav #build-steps aria-label="Build steps" hidden[steps.is_empty()] {
            ul.steps {
                @for step in steps {
                    li { a href={ "/builds/" (id) "?after=" (step.first_seq - 1) "#L" (step.first_seq) } title=(step.first_line) { "Step " (step.step) } }
                }
            }
        }
    }
}

/// The page of a build whose log the viewer may not read: what was built and how it ended.
fn render_without_log(viewer: &Viewer, shown: &Shown<'_>, state: &Web) -> Markup {
    let (build, app) = (shown.build, shown.app);
    let host = state.settings.registry_host();
    let content = html! {
        p { (status(build)) " " (crate::deploys::build_badge(shown.deploy)) }
        (facts(build, app, host, format::now()))
        p #log-hidden.notice { (viewer.logs_hidden(app.app.namespace())) }
        (end_note(build, app, host))
    };
    let name = app.app.to_string();
    let timeline = format!("/apps/{name}");
    layout::page_for(
        viewer,
        &format!("Build #{}", build.id),
        &[(&name, &timeline)],
        content,
    )
}

/// The build's state badge, as the event stream replaces it.
pub fn status(build: &Build) -> Markup {
    html! { span #build-status { (layout::status(build.state)) } }
}

/// What was built, when and by what.
pub fn facts(build: &Build, app: &App, host: &str, now: i64) -> Markup {
    html! {
        dl #build-facts.facts {
            dt { "App" } dd { a href={ "/apps/" (app.app) } { (app.app) } }
            dt { "Branch" } dd { span.branch { (build.git_ref) } }
            @if let Some(commit) = &build.commit_id {
                dt { "Commit" }
                dd {
                    code { (commit) }
                    @if let Some(message) = &build.commit_message { " " (format::subject(message)) }
                    @if let Some(author) = &build.commit_author { span.muted { " — " (author) } }
                }
            }
            dt { "Triggered" } dd { "by " (format::build_trigger(&build.trigger)) ", " (layout::ago(now, build.queued_at)) }
            @if let Some(seconds) = format::build_duration(build, now) {
                dt { "Duration" } dd { (format::duration(seconds)) @if !build.state.is_finished() { " so far" } }
            }
            @if let Some(digest) = &build.image_digest {
                dt { "Image digest" } dd { code title=(digest) { (format::short_digest(digest)) } }
            }
            @if build.state == BuildState::Succeeded && build.image_removed {
                dt { "Pull" } dd.muted #image-removed { "image removed by retention" }
            } @else if build.state == BuildState::Succeeded && let Some(commit) = &build.commit_id {
                dt { "Pull" } dd { code { (format::pull_reference(host, app.image_repo.as_str(), commit)) } }
            }
        }
    }
}

/// What sits at the log's end: the image a build made, why it failed, or that it still runs.
pub fn end_note(build: &Build, app: &App, host: &str) -> Markup {
    let repo = app.image_repo.as_str();
    html! {
        div #build-end.end {
            @if build.state == BuildState::Succeeded && build.image_removed {
                p.row {
                    strong { "Image" }
                    span.muted { "image removed by retention" }
                }
            } @else if build.state == BuildState::Succeeded && let Some(commit) = &build.commit_id {
                p.row {
                    strong { "Image" }
                    (layout::copyable("image-ref", &format::pull_reference(host, repo, commit)))
                    a #image-link href={ "/images/" (repo) "/" (commit) } { "Image page" }
                }
            } @else if build.state.is_finished() {
                p.notice.bad[build.state == BuildState::Failed] {
                    "Build " (build.state) @if let Some(reason) = &build.reason { ": " (reason) }
                }
            } @else {
                p #live.muted {
                    (format::build_progress(build.state)) " "
                    span.js-only { "New lines appear as the builder writes them." }
                    noscript { "Reload the page for new lines." }
                }
            }
        }
    }
}

/// Sends the browser to the first line that looks like an error.
pub async fn first_error(
    viewer: Viewer,
    path: web::Path<i64>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (build, _) = load_build_log(&state, &viewer, path.into_inner()).await?;
    let store = state.store.clone();
    let id = build.id;
    let seq = blocking(move || Ok(store.db.first_log_match(id, ERROR_PATTERNS)?)).await?;
    let Some(seq) = seq else {
        return Err(PageError::NotFound(format!(
            "No line of build {id} looks like an error"
        )));
    };
    let after = (seq - 20).max(0);
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/builds/{id}?after={after}#L{seq}")))
        .finish())
}
