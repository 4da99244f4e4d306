//! Apps.

use std::collections::BTreeMap;

use buildgrid_core::{AppRef, RepoName};
use rusqlite::{OptionalExtension, Row, params};

use super::Db;
use crate::{StoreError, now};

#[derive(Debug, Clone)]
pub struct NewApp {
    pub app: AppRef,
    pub git_url: String,
    pub branch: String,
    pub dockerfile: String,
    pub context: String,
    pub build_args: BTreeMap<String, String>,
    pub image_repo: RepoName,
    pub webhook_secret: String,
}

#[derive(Debug, Clone)]
pub struct App {
    pub id: i64,
    pub app: AppRef,
    pub git_url: String,
    pub branch: String,
    pub dockerfile: String,
    pub context: String,
    pub build_args: BTreeMap<String, String>,
    pub image_repo: RepoName,
    pub webhook_secret: String,
}

const APP_COLUMNS: &str = "id, namespace, name, git_url, branch, dockerfile, context, build_args,
    image_repo, webhook_secret";

fn app_row(row: &Row<'_>) -> rusqlite::Result<App> {
    let conversion = |index: usize, error: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, error)
    };
    let namespace: String = row.get(1)?;
    let name: String = row.get(2)?;
    let app = AppRef::parse(&format!("{namespace}/{name}")).map_err(|e| conversion(1, e.into()))?;
    let build_args: String = row.get(7)?;
    let image_repo: String = row.get(8)?;
    Ok(App {
        id: row.get(0)?,
        app,
        git_url: row.get(3)?,
        branch: row.get(4)?,
        dockerfile: row.get(5)?,
        context: row.get(6)?,
        build_args: serde_json::from_str(&build_args).map_err(|e| conversion(7, e.into()))?,
        image_repo: RepoName::parse(&image_repo).map_err(|e| conversion(8, e.into()))?,
        webhook_secret: row.get(9)?,
    })
}

impl Db {
    pub fn create_app(&self, new: &NewApp) -> Result<App, StoreError> {
        self.with(|conn| {
            let exists = conn
                .prepare_cached("SELECT 1 FROM apps WHERE namespace = ?1 AND name = ?2")?
                .exists(params![new.app.namespace(), new.app.app()])?;
            if exists {
                return Err(StoreError::Conflict(format!(
                    "app {} exists already",
                    new.app
                )));
            }
            let taken = conn
                .prepare_cached("SELECT namespace || '/' || name FROM apps WHERE image_repo = ?1")?
                .query_row([new.image_repo.as_str()], |row| row.get::<_, String>(0))
                .optional()?;
            if let Some(other) = taken {
                return Err(StoreError::Conflict(format!(
                    "app {other} builds images named {} already",
                    new.image_repo
                )));
            }
            conn.execute(
                "INSERT INTO namespaces (name, public, created_at) VALUES (?1, 0, ?2)
                 ON CONFLICT (name) DO NOTHING",
                params![new.app.namespace(), now()],
            )?;
            conn.execute(
                "INSERT INTO apps (namespace, name, git_url, branch, dockerfile, context,
                    build_args, image_repo, webhook_secret, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    new.app.namespace(),
                    new.app.app(),
                    new.git_url,
                    new.branch,
                    new.dockerfile,
                    new.context,
                    serde_json::to_string(&new.build_args).expect("a map serializes"),
                    new.image_repo.as_str(),
                    new.webhook_secret,
                    now()
                ],
            )?;
            Ok(App {
                id: conn.last_insert_rowid(),
                app: new.app.clone(),
                git_url: new.git_url.clone(),
                branch: new.branch.clone(),
                dockerfile: new.dockerfile.clone(),
                context: new.context.clone(),
                build_args: new.build_args.clone(),
                image_repo: new.image_repo.clone(),
                webhook_secret: new.webhook_secret.clone(),
            })
        })
    }

    pub fn app(&self, app: &AppRef) -> Result<Option<App>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE namespace = ?1 AND name = ?2");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![app.namespace(), app.app()], app_row)
                .optional()?)
        })
    }

    pub fn app_by_id(&self, id: i64) -> Result<Option<App>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], app_row)
                .optional()?)
        })
    }

    pub fn apps(&self) -> Result<Vec<App>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {APP_COLUMNS} FROM apps ORDER BY namespace, name");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([], app_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
