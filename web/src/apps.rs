//! The apps page (`/`): every app with its last build and its newest image, then the imported
//! repositories that no app builds.

use std::collections::HashSet;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use buildgrid_core::RepoName;
use buildgrid_store::AppSummary;
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
    let (apps, imported) = blocking(move || {
        let apps = store.db.app_summaries()?;
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
        Ok((apps, imported))
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
    let markup = render(
        &viewer,
        &apps,
        &imported,
        state.settings.registry_host(),
        format::now(),
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

fn render(
    viewer: &Viewer,
    apps: &[AppSummary],
    imported: &[Imported],
    host: &str,
    now: i64,
) -> Markup {
    let content = html! {
        @if apps.is_empty() && imported.is_empty() {
            p.notice {
                "No apps yet. Register one with "
                code { "buildgrid app create <namespace>/<app> --git <url>" }
                ", then push to it."
            }
        }
        @if !apps.is_empty() {
            ul.cards aria-label="Apps" {
                @for (index, summary) in apps.iter().enumerate() {
                    (app_card(index, summary, host, now))
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

fn app_card(index: usize, summary: &AppSummary, host: &str, now: i64) -> Markup {
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
        }
    }
}
