//! Deploys on the web: the recent deploys of an app (on its timeline) and a deploy's log,
//! filtered by server, service and container (the filters combine), with a raw download.

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_store::{App, Build, Deploy, DeployImage, DeployLine, DeployLogFilter};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use crate::error::{PageError, blocking};
use crate::events::{self, Event, Poll};
use crate::{Viewer, Web, format, layout};

/// Lines one deploy page shows at most.
const LINES: usize = 5_000;
/// Lines one look of a live deploy log sends at most.
const BATCH: usize = 500;
/// How often a live deploy log looks for new lines.
const POLL: Duration = Duration::from_millis(500);

/// The recent deploys of an app, for its timeline; nothing when it was never deployed.
pub fn recent(deploys: &[Deploy], builds: &[Build], images: &[DeployImage], now: i64) -> Markup {
    html! {
        @if !deploys.is_empty() {
            h2 { "Deploys" }
            ol #deploys.cards aria-label="Deploys" {
                @for deploy in deploys {
                    li #{ "d" (deploy.id) } {
                        div.row {
                            span class={ "status " (state_class(&deploy.state)) } data-state=(deploy.state) { (deploy.state) }
                            a.title href={ "/deploys/" (deploy.id) } { "deploy #" (deploy.id) }
                            span { "of " a href={ "/builds/" (deploy.build_id) } { "build #" (deploy.build_id) } }
                            @if let Some(build) = builds.iter().find(|b| b.id == deploy.build_id) {
                                span.branch { (build.git_ref) }
                                @if let Some(commit) = &build.commit_id {
                                    code title=(commit) { (format::short_commit(commit)) }
                                }
                            }
                            @let own: Vec<&DeployImage> = images.iter().filter(|i| i.deploy_id == deploy.id).collect();
                            @if own.is_empty() {
                                @if let Some(digest) = builds.iter().find(|b| b.id == deploy.build_id).and_then(|b| b.image_digest.as_ref()) {
                                    span.muted { "image " code title=(digest) { (format::short_digest(digest)) } }
                                }
                            }
                            @for image in own {
                                span.muted.image title=(image.image_ref) {
                                    (image.service) " "
                                    code title=(image.digest) { (format::short_digest(&image.digest)) }
                                }
                            }
                            span.muted { (format::deploy_trigger(&deploy.trigger)) }
                        }
                        div.meta {
                            span { "started " (layout::ago(now, deploy.started_at)) }
                            @if let Some(end) = deploy.finished_at { span { "took " (format::duration(end - deploy.started_at)) } }
                            @if let Some(reason) = &deploy.reason { span { (reason) } }
                        }
                    }
                }
            }
            h2 { "Builds" }
        }
    }
}

fn state_class(state: &str) -> &'static str {
    match state {
        "succeeded" => "ok",
        "failed" | "interrupted" => "bad",
        "running" => "run",
        _ => "off",
    }
}

#[derive(Deserialize, Default)]
pub struct LogQuery {
    server: Option<String>,
    service: Option<String>,
    container: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.is_empty()).cloned()
}

impl LogQuery {
    fn filter(&self) -> DeployLogFilter {
        DeployLogFilter {
            server: non_empty(&self.server),
            service: non_empty(&self.service),
            container: non_empty(&self.container),
        }
    }
}

async fn load(state: &Web, viewer: &Viewer, id: i64) -> Result<(Deploy, App), PageError> {
    let store = state.store.clone();
    let found = blocking(move || {
        let Some(deploy) = store.db.deploy(id)? else {
            return Ok(None);
        };
        Ok(store.db.app_by_id(deploy.app_id)?.map(|app| (deploy, app)))
    })
    .await?;
    match found {
        Some((deploy, app)) if viewer.may_read(app.app.namespace()) => {
            // A deploy's log names servers, services and containers: members only, unless
            // the namespace publishes its logs.
            if !viewer.may_read_logs(app.app.namespace()) {
                return Err(PageError::Forbidden(
                    viewer.logs_hidden(app.app.namespace()),
                ));
            }
            Ok((deploy, app))
        }
        _ => Err(PageError::NotFound(format!("There is no deploy {id}"))),
    }
}

/// Every line of a deploy matching `filter`, and every line (for the filters' choices).
async fn lines(
    state: &Web,
    id: i64,
    filter: DeployLogFilter,
) -> Result<(Vec<DeployLine>, Vec<DeployLine>), PageError> {
    let store = state.store.clone();
    blocking(move || {
        let shown = store.db.deploy_log(id, 0, &filter, LINES)?;
        let all = store
            .db
            .deploy_log(id, 0, &DeployLogFilter::default(), LINES)?;
        Ok((shown, all))
    })
    .await
}

pub async fn page(
    viewer: Viewer,
    path: web::Path<i64>,
    query: web::Query<LogQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (deploy, app) = load(&state, &viewer, path.into_inner()).await?;
    let (shown, all) = lines(&state, deploy.id, query.filter()).await?;
    let choices = |pick: fn(&DeployLine) -> &Option<String>| {
        let mut values: Vec<String> = all.iter().filter_map(|l| pick(l).clone()).collect();
        values.sort();
        values.dedup();
        values
    };
    let servers = choices(|l| &l.server);
    let services = choices(|l| &l.service);
    let containers = choices(|l| &l.container);
    let now = format::now();
    let live = (deploy.state == "running").then(|| {
        let filter = query.filter();
        let mut link = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("server", &filter.server),
            ("service", &filter.service),
            ("container", &filter.container),
        ] {
            if let Some(value) = value {
                link.append_pair(key, value);
            }
        }
        let after = all.last().map_or(0, |l| l.seq);
        link.append_pair("after", &after.to_string());
        format!("/deploys/{}/events?{}", deploy.id, link.finish())
    });
    let select = |name: &str, label: &str, values: &[String], chosen: &Option<String>| {
        html! {
            label { (label)
                select name=(name) {
                    option value="" { "All" }
                    @for value in values {
                        option value=(value) selected[chosen.as_deref() == Some(value.as_str())] { (value) }
                    }
                }
            }
        }
    };
    let content = html! {
        (reason(&deploy))
        div.meta.intro {
            (status(&deploy))
            span { "of " a href={ "/builds/" (deploy.build_id) } { "build #" (deploy.build_id) } }
            span { (format::deploy_trigger(&deploy.trigger)) }
            span { "started " (layout::ago(now, deploy.started_at)) }
        }
        form.bar method="get" action={ "/deploys/" (deploy.id) } {
            (select("server", "Server", &servers, &query.server))
            (select("service", "Service", &services, &query.service))
            (select("container", "Container", &containers, &query.container))
            button type="submit" { "Filter" }
            a href={ "/deploys/" (deploy.id) "/log.txt" } { "Raw log" }
        }
        div.log #deploy-log role="log" aria-live="polite" data-events=[live] {
            (lines_markup(&shown))
        }
        p #no-lines.notice hidden[!shown.is_empty()] { "No lines match." }
    };
    let title = format!("Deploy #{} of {}", deploy.id, app.app);
    let timeline = format!("/apps/{}", app.app);
    let markup = layout::page_for(
        &viewer,
        &title,
        &[(&app.app.to_string(), &timeline)],
        content,
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

pub async fn raw(
    viewer: Viewer,
    path: web::Path<i64>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (deploy, _) = load(&state, &viewer, path.into_inner()).await?;
    let (shown, _) = lines(&state, deploy.id, DeployLogFilter::default()).await?;
    let mut text = String::new();
    for line in shown {
        let place: Vec<String> = [line.server, line.service, line.container]
            .into_iter()
            .flatten()
            .collect();
        text.push_str(&format!(
            "{} {} [{}] {}\n",
            format::clock(line.at_ms),
            line.stream,
            place.join(" "),
            line.line
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
        .body(text))
}

fn status(deploy: &Deploy) -> Markup {
    html! { span #deploy-status class={ "status " (state_class(&deploy.state)) } data-state=(deploy.state) { (deploy.state) } }
}

/// Why a deploy did not succeed, at the top of its page.
fn reason(deploy: &Deploy) -> Markup {
    html! {
        div #deploy-reason {
            @if let Some(reason) = &deploy.reason {
                p.notice.bad[deploy.state != "succeeded"] role="alert" {
                    strong { "Deploy " (deploy.state) ": " } (reason)
                }
            }
        }
    }
}

/// Next to a succeeded build: that its newest deploy did not succeed (or still runs), with a
/// link to it. Nothing when it succeeded or there is none.
pub fn build_badge(deploy: Option<&Deploy>) -> Markup {
    html! {
        @if let Some(deploy) = deploy.filter(|d| d.state != "succeeded") {
            a.deploy-state href={ "/deploys/" (deploy.id) } title=[deploy.reason.as_deref()] {
                span class={ "status " (state_class(&deploy.state)) } data-state=(deploy.state) {
                    "deploy #" (deploy.id) " " (deploy.state)
                }
            }
        }
    }
}

fn lines_markup(lines: &[DeployLine]) -> Markup {
    html! {
        @for line in lines {
            div.ln #{ "l" (line.seq) } class=[(line.line.contains("failed") || line.line.contains("not healthy")).then_some("err")] {
                a.no href={ "#l" (line.seq) } { (line.seq) }
                time { (format::clock(line.at_ms)) }
                span.st { (line.stream) }
                span.tx {
                    @let place: Vec<&str> = [&line.server, &line.service, &line.container].into_iter().filter_map(|p| p.as_deref()).collect();
                    @if !place.is_empty() { span.muted { "[" (place.join(" ")) "] " } }
                    (line.line)
                }
            }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct EventsQuery {
    server: Option<String>,
    service: Option<String>,
    container: Option<String>,
    after: Option<i64>,
}

/// New lines of a running deploy (matching the page's filters) as `lines` events, and its end
/// as an `end` event with its status and reason.
pub async fn events(
    viewer: Viewer,
    request: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<EventsQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let opened = events::open(&state, &request)?;
    let (deploy, _) = load(&state, &viewer, path.into_inner()).await?;
    let query = query.into_inner();
    let after = events::last_event_id(&request).or(query.after).unwrap_or(0);
    let filter = LogQuery {
        server: query.server,
        service: query.service,
        container: query.container,
    }
    .filter();
    Ok(events::stream(opened, after, POLL, move |after| {
        let state = state.clone();
        let filter = filter.clone();
        let id = deploy.id;
        async move {
            let store = state.store.clone();
            let (deploy, new) = blocking(move || {
                // The state first: a deploy is seen ended only after all its lines are stored.
                let deploy = store.db.deploy(id)?;
                let new = store.db.deploy_log(id, after, &filter, BATCH)?;
                Ok((deploy, new))
            })
            .await?;
            let deploy =
                deploy.ok_or_else(|| PageError::NotFound(format!("There is no deploy {id}")))?;
            let full = new.len() == BATCH;
            let after = new.last().map_or(after, |l| l.seq);
            let mut out = Vec::new();
            if !new.is_empty() {
                out.push(Event {
                    id: Some(after),
                    name: "lines",
                    data: json!({ "html": lines_markup(&new).0 }),
                });
            }
            if deploy.state != "running" && !full {
                out.push(Event {
                    id: Some(after),
                    name: "end",
                    data: json!({
                        "state": deploy.state,
                        "status": status(&deploy).0,
                        "reason": reason(&deploy).0,
                    }),
                });
                return Ok(Poll::End(out));
            }
            Ok(Poll::Continue {
                events: out,
                state: after,
                again: full,
            })
        }
    }))
}
