//! Deploys on the web: the recent deploys of an app (on its timeline) and a deploy's log,
//! filtered by server, service and container (the filters combine), with a raw download.

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpResponse, web};
use buildgrid_store::{App, Deploy, DeployLine, DeployLogFilter};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::{Viewer, Web, format, layout};

/// Lines one deploy page shows at most.
const LINES: usize = 5_000;

/// The recent deploys of an app, for its timeline; nothing when it was never deployed.
pub fn recent(deploys: &[Deploy], now: i64) -> Markup {
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
                            span.muted { "by " (deploy.trigger) }
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
        Some((deploy, app)) if viewer.may_read(app.app.namespace()) => Ok((deploy, app)),
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
        div.meta.intro {
            span class={ "status " (state_class(&deploy.state)) } { (deploy.state) }
            span { "of " a href={ "/builds/" (deploy.build_id) } { "build #" (deploy.build_id) } }
            span { "by " (deploy.trigger) }
            span { "started " (layout::ago(now, deploy.started_at)) }
            @if let Some(reason) = &deploy.reason { span { (reason) } }
        }
        form.bar method="get" action={ "/deploys/" (deploy.id) } {
            (select("server", "Server", &servers, &query.server))
            (select("service", "Service", &services, &query.service))
            (select("container", "Container", &containers, &query.container))
            button type="submit" { "Filter" }
            a href={ "/deploys/" (deploy.id) "/log.txt" } { "Raw log" }
        }
        div.log #deploy-log role="log" {
            @for line in &shown {
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
        @if shown.is_empty() { p.notice { "No lines match." } }
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
