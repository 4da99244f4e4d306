//! Sources: git repositories an app's services build from beside the app's own repository.
//! One repository gives one image, `<namespace>/<app>.<repo>`, so a repository has one build
//! definition (Dockerfile and context) per app; services of it differ by their command.

use buildgrid_core::{Digest, RepoName};
use rusqlite::{OptionalExtension, Row, params};

use super::Db;
use crate::{App, Build, BuildState, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub id: i64,
    pub app_id: i64,
    pub git_url: String,
    pub branch: String,
    pub dockerfile: String,
    pub context: String,
    pub image_repo: RepoName,
}

/// What a source is made of, before it is stored.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub git_url: String,
    pub branch: String,
    pub dockerfile: String,
    pub context: String,
    pub image_repo: RepoName,
}

const SOURCE_COLUMNS: &str = "id, app_id, git_url, branch, dockerfile, context, image_repo";

fn source_row(row: &Row<'_>) -> rusqlite::Result<Source> {
    let image_repo: String = row.get(6)?;
    Ok(Source {
        id: row.get(0)?,
        app_id: row.get(1)?,
        git_url: row.get(2)?,
        branch: row.get(3)?,
        dockerfile: row.get(4)?,
        context: row.get(5)?,
        image_repo: RepoName::parse(&image_repo).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, e.into())
        })?,
    })
}

fn conflict(app: &App, image_repo: &RepoName, dockerfile: &str, context: &str) -> StoreError {
    StoreError::Conflict(format!(
        "two build definitions for one repository: app {} builds {image_repo} with {dockerfile} in \
         {context}; services of one repository share its image and differ by --command",
        app.app
    ))
}

impl Db {
    /// The source for `new` in `app`: `None` when it is the app's own repository built the
    /// app's way, an existing source built the same way, or a new one. Another build definition
    /// (Dockerfile or context) for a repository the app builds already is `Err(Conflict)`.
    pub fn add_source(&self, app: &App, new: &NewSource) -> Result<Option<Source>, StoreError> {
        if new.image_repo == app.image_repo {
            if new.dockerfile == app.dockerfile && new.context == app.context {
                return Ok(None);
            }
            return Err(conflict(
                app,
                &app.image_repo,
                &app.dockerfile,
                &app.context,
            ));
        }
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let sql = format!(
                "SELECT {SOURCE_COLUMNS} FROM app_sources WHERE app_id = ?1 AND image_repo = ?2"
            );
            let existing = tx
                .query_row(&sql, params![app.id, new.image_repo.as_str()], source_row)
                .optional()?;
            if let Some(source) = existing {
                if source.dockerfile == new.dockerfile && source.context == new.context {
                    return Ok(Some(source));
                }
                return Err(conflict(
                    app,
                    &source.image_repo,
                    &source.dockerfile,
                    &source.context,
                ));
            }
            tx.execute(
                "INSERT INTO app_sources (app_id, git_url, branch, dockerfile, context, image_repo)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    app.id,
                    new.git_url,
                    new.branch,
                    new.dockerfile,
                    new.context,
                    new.image_repo.as_str()
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(Source {
                id,
                app_id: app.id,
                git_url: new.git_url.clone(),
                branch: new.branch.clone(),
                dockerfile: new.dockerfile.clone(),
                context: new.context.clone(),
                image_repo: new.image_repo.clone(),
            }))
        })
    }

    pub fn source(&self, id: i64) -> Result<Option<Source>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {SOURCE_COLUMNS} FROM app_sources WHERE id = ?1");
            Ok(conn.query_row(&sql, [id], source_row).optional()?)
        })
    }

    /// The source of `app` whose image is `image_repo`.
    pub fn source_by_repo(
        &self,
        app_id: i64,
        image_repo: &str,
    ) -> Result<Option<Source>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {SOURCE_COLUMNS} FROM app_sources WHERE app_id = ?1 AND image_repo = ?2"
            );
            Ok(conn
                .query_row(&sql, params![app_id, image_repo], source_row)
                .optional()?)
        })
    }
}

impl Source {
    /// `app` as a build of this source sees it: the source's repository, branch, Dockerfile,
    /// context and image in place of the app's own.
    pub fn app_view(&self, app: &App) -> App {
        App {
            git_url: self.git_url.clone(),
            branch: self.branch.clone(),
            dockerfile: self.dockerfile.clone(),
            context: self.context.clone(),
            image_repo: self.image_repo.clone(),
            ..app.clone()
        }
    }
}

/// Why a build cannot be deployed.
#[derive(Debug, thiserror::Error)]
pub enum Undeployable {
    #[error("app {app} has no build {id}")]
    NoBuild { app: String, id: i64 },
    #[error("build {id} {state}: only a successful build can be deployed")]
    NotSucceeded { id: i64, state: BuildState },
    #[error("build {0} made no image")]
    NoImage(i64),
    #[error("the image of build {id} ({image_ref}) is no longer stored")]
    ImageGone { id: i64, image_ref: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Db {
    /// `app` as builds of `build` see it: its source's repository and image, or the app's own.
    pub fn build_app_view(&self, app: &App, build: &Build) -> Result<App, StoreError> {
        match build.source_id {
            None => Ok(app.clone()),
            Some(id) => match self.source(id)? {
                Some(source) => Ok(source.app_view(app)),
                None => Err(StoreError::Conflict(format!(
                    "the source of build {} is not stored",
                    build.id
                ))),
            },
        }
    }

    /// Build `id` of `app`, if it can be deployed: it succeeded and its image is still stored.
    pub fn deployable_build(&self, app: &App, id: i64) -> Result<Build, Undeployable> {
        let build = self
            .build(id)?
            .filter(|b| b.app_id == app.id)
            .ok_or_else(|| Undeployable::NoBuild {
                app: app.app.to_string(),
                id,
            })?;
        if build.state != BuildState::Succeeded {
            return Err(Undeployable::NotSucceeded {
                id,
                state: build.state,
            });
        }
        let (Some(image_ref), Some(digest)) = (&build.image_ref, &build.image_digest) else {
            return Err(Undeployable::NoImage(id));
        };
        let gone = || Undeployable::ImageGone {
            id,
            image_ref: image_ref.clone(),
        };
        let digest = Digest::parse(digest).map_err(|_| gone())?;
        let view = self.build_app_view(app, &build)?;
        if self
            .manifest_by_digest(&view.image_repo, &digest)?
            .is_none()
        {
            return Err(gone());
        }
        Ok(build)
    }
}
