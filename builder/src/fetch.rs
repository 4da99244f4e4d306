//! The app's bare repository: created on first use, updated from the app's git URL with git2.

use std::path::Path;

use buildgrid_core::app::redact_url;
use git2::{FetchOptions, Oid, Repository};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot open the app's repository {path}: {message}")]
    Open { path: String, message: String },
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{0:?} is neither a branch, a tag nor a commit of the repository")]
    UnknownRef(String),
}

/// The commit a build is for, with what the timeline shows of it.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: Oid,
    pub message: String,
    pub author: String,
}

/// Whether `name` may name a branch, by git's own rules.
pub fn is_valid_branch(name: &str) -> bool {
    git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
}

/// Opens the app's bare repository, creating it the first time.
pub fn open_or_init(path: &Path) -> Result<Repository, FetchError> {
    let open_error = |e: git2::Error| FetchError::Open {
        path: path.display().to_string(),
        message: e.message().to_owned(),
    };
    match Repository::open_bare(path) {
        Ok(repo) => Ok(repo),
        Err(_) => {
            std::fs::create_dir_all(path).map_err(|e| FetchError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let repo = Repository::init_bare(path).map_err(open_error)?;
            let mut config = repo.config().map_err(open_error)?;
            // Pushes to buildgrid land here; http-backend needs this to accept them.
            config
                .set_bool("http.receivepack", true)
                .map_err(open_error)?;
            Ok(repo)
        }
    }
}

/// Fetches every branch and tag of `url` into `refs/remotes/origin/*` and `refs/tags/*`.
/// Only new objects travel: the repository is kept between builds.
pub fn fetch(repo: &Repository, url: &str) -> Result<(), FetchError> {
    let fetch_error = |e: git2::Error| FetchError::Fetch {
        url: redact_url(url),
        // libgit2 messages may quote the URL, credentials included.
        message: e.message().replace(url, &redact_url(url)),
    };
    let mut remote = repo.remote_anonymous(url).map_err(fetch_error)?;
    let mut options = FetchOptions::new();
    options.download_tags(git2::AutotagOption::All);
    remote
        .fetch(
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            Some(&mut options),
            None,
        )
        .map_err(fetch_error)?;
    Ok(())
}

/// Whether the repository has this commit already (e.g. it was pushed to buildgrid).
pub fn has_commit(repo: &Repository, commit: &str) -> bool {
    Oid::from_str(commit)
        .ok()
        .and_then(|oid| repo.find_commit(oid).ok())
        .is_some()
}

/// Resolves a commit id, a branch (pushed to buildgrid or fetched) or a tag.
pub fn resolve(repo: &Repository, git_ref: &str) -> Result<CommitInfo, FetchError> {
    let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref);
    let is_commit_id = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
    // A fetched branch is as new as the app's git URL; a pushed one as the last push.
    let candidates = if is_commit_id {
        vec![git_ref.to_owned()]
    } else {
        vec![
            format!("refs/remotes/origin/{branch}"),
            format!("refs/heads/{branch}"),
            format!("refs/tags/{branch}"),
            git_ref.to_owned(),
        ]
    };
    let object = candidates
        .iter()
        .find_map(|name| repo.revparse_single(name).ok())
        .ok_or_else(|| FetchError::UnknownRef(git_ref.to_owned()))?;
    let commit = object
        .peel_to_commit()
        .map_err(|_| FetchError::UnknownRef(git_ref.to_owned()))?;
    Ok(CommitInfo {
        id: commit.id(),
        message: commit.summary().ok().flatten().unwrap_or("").to_owned(),
        author: commit.author().name().unwrap_or("").to_owned(),
    })
}
