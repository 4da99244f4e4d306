//! The apps page (`/`): every app with its last build, its newest image and what runs (the
//! build its deploys installed, on which servers), then the imported repositories that no app
//! builds.

use std::collections::{HashMap, HashSet};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use buildgrid_core::RepoName;
use buildgrid_store::{AppSummary, Build, Deploy, Store, StoreError};
use maud::{Markup, html};

use crate::error::{PageError, blocking};
use crate::{Viewer, Web, format, layout};

/// Repositories listed, and tags shown for each.
const REPOSITORIES: usize = 500;
const TAGS: usize = 20;

struct Imported {
    repo: String,
    tags: Vec<String>,
}

pub async fn page(viewer: Viewer, state: web::Data<Web>) -> Result<HttpResponse, PageError> {
    let store = state.store.clone();
    let (apps, imported, runs) = blocking(move || {
        let apps = store.db.app_summaries()?;
        let runs = what_runs(&store)?;
        let built: HashSet<&str> = apps.iter().map(|s| s.app.image_repo.as_str()).collect();
        let mut imported = Vec::new();
        for repo in store.db.repositories(None, REPOSITORIES)? {
            if built.contains(repo.as_str()) {
                continue;
            }
            let Ok(name) = RepoName::parse(&repo) else {
                continue;
            };
            let tags = store.db.tags(&name, None, TAGS)?;
            imported.push(Imported { repo, tags });
        }
        Ok((apps, imported, runs))
    })
    .await?;
    let apps: Vec<AppSummary> = apps
        .into_iter()
        .filter(|s| viewer.may_read(s.app.app.namespace()))
        .collect();
    let imported: Vec<Imported> = imported
        .into_iter()
        .filter(|i| viewer.may_read(i.repo.split('/').next().unwrap_or("")))
        .collect();
    // What runs is shown like deploys: to members, or to all when the namespace publishes
    // its logs.
    let runs: HashMap<i64, Runs> = runs
        .into_iter()
        .filter(|(app_id, _)| {
            apps.iter()
                .any(|s| s.app.id == *app_id && viewer.may_read_logs(s.app.app.namespace()))
        })
        .collect();
    let markup = render(
        &viewer,
        &apps,
        &runs,
        &imported,
        state.settings.registry_host(),
        format::now(),
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

/// What runs of an app: the build its newest succeeded deploy installed, a newer deploy that
/// did not succeed, and the servers of its services.
struct Runs {
    deployed: Option<(Deploy, Option<Build>)>,
    newer: Option<Deploy>,
    services: Vec<(String, Vec<String>)>,
}

/// What runs of every deployed app, by app id.
fn what_runs(store: &Store) -> Result<HashMap<i64, Runs>, StoreError> {
    let mut runs: HashMap<i64, Runs> = HashMap::new();
    for deploy in store.db.deployed_per_app()? {
        let entry = runs.entry(deploy.app_id).or_insert_with(|| Runs {
            deployed: None,
            newer: None,
            services: Vec::new(),
        });
        if deploy.state == "succeeded" {
            let build = store
                .db
                .app_builds_by_id(deploy.app_id, &[deploy.build_id])?
                .pop();
            entry.deployed = Some((deploy, build));
        } else {
            entry.newer = Some(deploy);
        }
    }
    for (app_id, service, servers) in store.db.service_servers()? {
        if let Some(entry) = runs.get_mut(&app_id) {
            entry.services.push((service, servers));
        }
    }
    Ok(runs)
}

fn render(
    viewer: &Viewer,
    apps: &[AppSummary],
    runs: &HashMap<i64, Runs>,
    imported: &[Imported],
    host: &str,
    now: i64,
) -> Markup {
    let content = html! {
        @if apps.is_empty() && imported.is_empty() {
            (layout::no_apps(viewer))
        }
        @if !apps.is_empty() {
            ul.cards aria-label="Apps" {
                @for (index, summary) in apps.iter().enumerate() {
                    (app_card(index, summary, runs.get(&summary.app.id), host, now))
                }
            }
        }
        @if !imported.is_empty() {
            h2 { "Imported images" }
            ul.cards aria-label="Imported images" {
                @for (index, image) in imported.iter().enumerate() {
                    li {
                        div.row { span.title { (image.repo) } }
                        @if image.tags.is_empty() {
                            div.muted { "no tags" }
                        }
                        @for (tag_index, tag) in image.tags.iter().enumerate() {
                            div.row {
                                a href={ "/images/" (image.repo) "/" (tag) } { (tag) }
                                (layout::copyable(
                                    &format!("pull-{index}-{tag_index}"),
                                    &format!("docker pull {}", format::pull_reference(host, &image.repo, tag)),
                                ))
                            }
                        }
                    }
                }
            }
        }
    };
    layout::page_for(viewer, "Apps", &[], content)
}

fn app_card(
    index: usize,
    summary: &AppSummary,
    runs: Option<&Runs>,
    host: &str,
    now: i64,
) -> Markup {
    let app = &summary.app;
    let repo = app.image_repo.as_str();
    html! {
        li {
            div.row {
                a.title href={ "/apps/" (app.app) } { (app.app) }
                span.branch title="Branch it builds" { (app.branch) }
            }
            @match &summary.last_build {
                None => { div.muted { "No builds yet" } }
                Some(build) => { div.row {
                    (layout::status(build.state))
                    a href={ "/builds/" (build.id) } { "#" (build.id) }
                    span.branch { (build.git_ref) }
                    @if let Some(commit) = &build.commit_id {
                        code title=(commit) { (format::short_commit(commit)) }
                    }
                    span.meta { (layout::ago(now, build.queued_at)) }
                } }
            }
            @if let Some(commit) = summary.last_image.as_ref().and_then(|b| b.commit_id.as_ref()) {
                div.row {
                    span.muted { "Image" }
                    (layout::copyable(&format!("image-{index}"), &format::pull_reference(host, repo, commit)))
                    a href={ "/images/" (repo) "/" (commit) } { "Image page" }
                }
            }
            @if let Some(runs) = runs {
                (runs_row(runs, now))
            }
        }
    }
}

/// "Runs #12 main abc1234 · web on alpha, beta · deploy #7 5 min ago", and a newer deploy that
/// did not succeed.
fn runs_row(runs: &Runs, now: i64) -> Markup {
    html! {
        div.row.runs {
            span.muted { "Runs" }
            @match &runs.deployed {
                Some((deploy, build)) => {
                    a href={ "/builds/" (deploy.build_id) } { "#" (deploy.build_id) }
                    @if let Some(build) = build {
                        span.branch { (build.git_ref) }
                        @if let Some(commit) = &build.commit_id {
                            code title=(commit) { (format::short_commit(commit)) }
                        }
                    }
                    @for (service, servers) in &runs.services {
                        span.where { (service) " on " (servers.join(", ")) }
                    }
                    a href={ "/deploys/" (deploy.id) } { "deploy #" (deploy.id) }
                    span.meta { (layout::ago(now, deploy.finished_at.unwrap_or(deploy.started_at))) }
                }
                None => { span.muted { "nothing deployed yet" } }
            }
            (crate::deploys::build_badge(runs.newer.as_ref()))
        }
    }
}
