//! What the web pages read about builds: every app with its latest builds, an app's timeline
//! paged by build id (keyset paging: a page never counts or skips rows), and the builds a live
//! page watches.

use buildgrid_core::{Digest, RepoName};
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use super::builds::{BUILD_COLUMNS, build_row};
use super::{App, Build, BuildState, Db};
use crate::StoreError;

/// Which builds of an app a timeline shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildFilter {
    /// Only builds of this ref (a branch name, for builds of a branch).
    pub branch: Option<String>,
    /// Only builds in one of these states; empty for every state.
    pub states: Vec<BuildState>,
}

/// Where a page of a timeline sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest builds.
    Newest,
    /// The builds just older than this build id.
    Before(i64),
    /// The builds just newer than this build id.
    After(i64),
}

/// An app, its newest build and its newest build that made an image.
#[derive(Debug, Clone)]
pub struct AppSummary {
    pub app: App,
    pub last_build: Option<Build>,
    pub last_image: Option<Build>,
}

impl Db {
    /// Every app, in name order, with its newest build and its newest succeeded build. A skipped
    /// build never started (another build does its work), so it is never the app's newest.
    pub fn app_summaries(&self) -> Result<Vec<AppSummary>, StoreError> {
        let apps = self.apps()?;
        self.with(|conn| {
            let succeeded = BuildFilter {
                branch: None,
                states: vec![BuildState::Succeeded],
            };
            let not_skipped = BuildFilter {
                branch: None,
                states: vec![
                    BuildState::Queued,
                    BuildState::Fetching,
                    BuildState::Building,
                    BuildState::Storing,
                    BuildState::Succeeded,
                    BuildState::Failed,
                    BuildState::Cancelled,
                ],
            };
            let mut summaries = Vec::with_capacity(apps.len());
            for app in apps {
                let last_build = query_timeline(conn, app.id, &not_skipped, Page::Newest, 1)?.pop();
                let last_image = match &last_build {
                    Some(build) if build.state == BuildState::Succeeded => Some(build.clone()),
                    _ => query_timeline(conn, app.id, &succeeded, Page::Newest, 1)?.pop(),
                };
                summaries.push(AppSummary {
                    app,
                    last_build,
                    last_image,
                });
            }
            Ok(summaries)
        })
    }

    /// Up to `limit` builds of an app that pass `filter`, newest first, on the given page.
    pub fn timeline(
        &self,
        app_id: i64,
        filter: &BuildFilter,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Build>, StoreError> {
        self.with(|conn| query_timeline(conn, app_id, filter, page, limit))
    }

    /// The builds of app `app_id` among these ids, in id order: ids of other apps' builds are
    /// left out, so what a page of one app asks for never reaches another app's builds.
    pub fn app_builds_by_id(&self, app_id: i64, ids: &[i64]) -> Result<Vec<Build>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|conn| {
            let marks = vec!["?"; ids.len()].join(", ");
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE app_id = ? AND id IN ({marks}) ORDER BY id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let values = std::iter::once(app_id).chain(ids.iter().copied());
            let rows = stmt.query_map(params_from_iter(values), build_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The newest succeeded build that made this image of `repo`, if a build made it.
    pub fn image_build(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Build>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds
                 WHERE app_id IN (SELECT id FROM apps WHERE image_repo = ?1)
                   AND state = 'succeeded' AND image_digest = ?2
                 ORDER BY id DESC LIMIT 1"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![repo.as_str(), digest.to_string()], build_row)
                .optional()?)
        })
    }

    /// The newest build of `repo` whose image collection removed, named by its commit tag or
    /// its image digest (`reference` as the image page was asked for it).
    pub fn removed_image_build(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<Build>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds
                 WHERE app_id IN (SELECT id FROM apps WHERE image_repo = ?1)
                   AND state = 'succeeded' AND image_removed = 1
                   AND (commit_id = ?2 OR image_digest = ?2)
                 ORDER BY id DESC LIMIT 1"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![repo.as_str(), reference], build_row)
                .optional()?)
        })
    }

    /// The refs an app has built, in name order.
    pub fn build_branches(&self, app_id: i64) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT git_ref FROM builds WHERE app_id = ?1 ORDER BY git_ref",
            )?;
            let rows = stmt.query_map([app_id], |row| row.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }
}

fn query_timeline(
    conn: &Connection,
    app_id: i64,
    filter: &BuildFilter,
    page: Page,
    limit: usize,
) -> Result<Vec<Build>, StoreError> {
    let mut sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app_id = ?");
    let mut values: Vec<Box<dyn ToSql>> = vec![Box::new(app_id)];
    if let Some(branch) = &filter.branch {
        sql.push_str(" AND git_ref = ?");
        values.push(Box::new(branch.clone()));
    }
    if !filter.states.is_empty() {
        let marks = vec!["?"; filter.states.len()].join(", ");
        sql.push_str(&format!(" AND state IN ({marks})"));
        for state in &filter.states {
            values.push(Box::new(state.as_str()));
        }
    }
    let ascending = match page {
        Page::Newest => false,
        Page::Before(id) => {
            sql.push_str(" AND id < ?");
            values.push(Box::new(id));
            false
        }
        Page::After(id) => {
            sql.push_str(" AND id > ?");
            values.push(Box::new(id));
            true
        }
    };
    sql.push_str(if ascending {
        " ORDER BY id LIMIT ?"
    } else {
        " ORDER BY id DESC LIMIT ?"
    });
    values.push(Box::new(limit as i64));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values.iter()), build_row)?;
    let mut builds = rows.collect::<Result<Vec<_>, _>>()?;
    if ascending {
        builds.reverse();
    }
    Ok(builds)
}
