//! A repository's page (`/images/<namespace>/<app>.<repo>`): its tags, newest first (made or
//! moved last), its branches' moving tags, and how to pull. The image route leads here when its
//! whole path names a repository the viewer may read; any other path is an image's.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use buildgrid_core::RepoName;
use buildgrid_store::{App, Build, TagRow};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::image::{self, ImageQuery};
use crate::{Viewer, Web, format, layout};

/// Tags one page lists.
const TAGS_PAGE: usize = 100;

#[derive(Deserialize)]
pub struct Paging {
    /// Where the previous page ended: its last tag's time, whether it was a branch's, and name.
    before_at: Option<i64>,
    before_branch: Option<bool>,
    before_tag: Option<String>,
}

struct Repository {
    repo: RepoName,
    tags: Vec<TagRow>,
    /// The moving tags, each with the build it names when that build is still known.
    branch_tags: Vec<(TagRow, Option<Build>)>,
    /// The app that builds this repository, when one does.
    app: Option<String>,
    public: bool,
    /// More tags follow: the pager's link.
    more: bool,
}

/// `GET /images/{path}`: the repository's page when `path` names one the viewer may read,
/// otherwise the image page.
pub async fn page_or_image(
    viewer: Viewer,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
    paging: web::Query<Paging>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let Ok(repo) = RepoName::parse(path.as_str()) else {
        return image::page(viewer, path, query, state).await;
    };
    if !viewer.may_read(repo.namespace()) {
        return image::page(viewer, path, query, state).await;
    }
    let store = state.store.clone();
    let lookup = repo.clone();
    let before = paging
        .before_at
        .zip(paging.before_tag.clone())
        .map(|(at, tag)| (at, paging.before_branch.unwrap_or(false), tag));
    let found = blocking(move || {
        if !store.db.repo_exists(&lookup)? {
            return Ok(None);
        }
        let mut tags = store.db.tags_newest_first(
            &lookup,
            before
                .as_ref()
                .map(|(at, branch, tag)| (*at, *branch, tag.as_str())),
            TAGS_PAGE + 1,
        )?;
        let more = tags.len() > TAGS_PAGE;
        tags.truncate(TAGS_PAGE);
        let mut branch_tags = Vec::new();
        for tag in store.db.branch_tags(&lookup)? {
            let build = match tag.build_id {
                Some(id) => store.db.build(id)?,
                None => None,
            };
            branch_tags.push((tag, build));
        }
        let app = match branch_tags.iter().find_map(|(_, build)| build.as_ref()) {
            Some(build) => store.db.app_by_id(build.app_id)?,
            None => store
                .db
                .apps()?
                .into_iter()
                .find(|app| app.image_repo == lookup),
        };
        Ok(Some(Repository {
            public: store.db.namespace_is_public(lookup.namespace())?,
            repo: lookup,
            tags,
            branch_tags,
            app: app.map(|app| app.app.to_string()),
            more,
        }))
    })
    .await?;
    let Some(repository) = found else {
        return image::page(viewer, path, query, state).await;
    };
    let markup = render(
        &viewer,
        &repository,
        state.settings.registry_host(),
        format::now(),
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

fn render(viewer: &Viewer, repository: &Repository, host: &str, now: i64) -> Markup {
    let repo = repository.repo.as_str();
    let content = html! {
        dl.facts {
            dt { "Repository" } dd { code { (repo) } }
            dt { "Pull" } dd { code { "docker pull " (host) "/" (repo) ":<tag>" } }
            @if !repository.public {
                dt { "Sign in" } dd { code { "docker login " (host) } }
            }
        }
        (branch_tags(&repository.branch_tags, host, repo))
        h2 { "Tags" }
        p.muted { "Newest first. A commit's tag never moves; a branch's tag moves to each newer successful build of the branch." }
        @if repository.tags.is_empty() {
            p.notice { "No tags: nothing has been stored in this repository yet." }
        } @else {
            table.list #tags {
                thead { tr { th { "Tag" } th { "Digest" } th { "Kind" } th { "Updated" } } }
                tbody {
                    @for tag in &repository.tags {
                        tr {
                            td { a href={ "/images/" (repo) "/" (tag.name) } { (tag_label(&tag.name)) } }
                            td { code title=(tag.digest) { (format::short_digest(&tag.digest.to_string())) } }
                            td {
                                @match &tag.branch {
                                    Some(branch) => { "branch " span.branch { (branch) } }
                                    None if is_commit(&tag.name) => { "commit" }
                                    None => { "tag" }
                                }
                            }
                            td { (layout::ago(now, tag.updated_at)) }
                        }
                    }
                }
            }
            @if repository.more && let Some(last) = repository.tags.last() {
                nav.pager {
                    a href={ "?before_at=" (last.updated_at) "&before_branch=" (last.branch.is_some()) "&before_tag=" (last.name) } { "Older tags" }
                }
            }
        }
    };
    match &repository.app {
        Some(app) => layout::page_for(viewer, repo, &[(app, &format!("/apps/{app}"))], content),
        None => layout::page_for(viewer, repo, &[], content),
    }
}

/// The moving tags of a repository with their pull commands: shown on the repository page and
/// on the app's page.
pub(crate) fn branch_tags(tags: &[(TagRow, Option<Build>)], host: &str, repo: &str) -> Markup {
    html! {
        @if !tags.is_empty() {
            section.branch-tags aria-label="Branch tags" {
                h2 { "Branch tags" }
                ul.plain {
                    @for (tag, build) in tags {
                        li.row {
                            a href={ "/images/" (repo) "/" (tag.name) } { code { ":" (tag.name) } }
                            span.muted { "newest successful build of " span.branch { (tag.branch.as_deref().unwrap_or("")) } }
                            @if let Some(build) = build {
                                a href={ "/builds/" (build.id) } { "#" (build.id) }
                                @if let Some(commit) = &build.commit_id {
                                    code title=(commit) { (format::short_commit(commit)) }
                                }
                            }
                            (layout::copyable(&format!("pull-branch-{}", tag.name), &format!("docker pull {}", format::pull_reference(host, repo, &tag.name))))
                        }
                    }
                }
                p.muted { a href={ "/images/" (repo) } { "All tags of " (repo) } }
            }
        }
    }
}

fn is_commit(tag: &str) -> bool {
    tag.len() == 40 && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tag_label(tag: &str) -> String {
    if is_commit(tag) {
        format!(":{}", format::short_commit(tag))
    } else {
        format!(":{tag}")
    }
}

/// The branch tags of an app's image repository, for the app's page (nothing when it has none).
pub(crate) async fn app_branch_tags(state: &Web, app: &App) -> Result<Markup, PageError> {
    let store = state.store.clone();
    let repo = app.image_repo.clone();
    let tags = blocking(move || {
        let mut tags = Vec::new();
        for tag in store.db.branch_tags(&repo)? {
            let build = match tag.build_id {
                Some(id) => store.db.build(id)?,
                None => None,
            };
            tags.push((tag, build));
        }
        Ok(tags)
    })
    .await?;
    Ok(branch_tags(
        &tags,
        state.settings.registry_host(),
        app.image_repo.as_str(),
    ))
}
