//! Reads and copies of the whole database, for `backup` and `fsck`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use buildgrid_core::Digest;
use rusqlite::backup::StepResult;
use rusqlite::{Connection, OpenFlags};

use super::{BlobRow, Db, digest_column};
use crate::StoreError;

/// A repository as `fsck` checks it.
#[derive(Debug, Clone)]
pub(crate) struct StoredRepo {
    pub name: String,
    /// Blobs (configs and layers) the repository may serve.
    pub blobs: HashSet<Digest>,
    /// Its manifests and their media types.
    pub manifests: Vec<(Digest, String)>,
}

impl Db {
    /// Copies the database into the new file `target` with SQLite's online backup API: one
    /// consistent snapshot, taken in a single step while other connections go on reading and
    /// writing (WAL: the snapshot's read transaction blocks no writer).
    pub(crate) fn backup_to(&self, target: &Path) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut copy = Connection::open(target)?;
            {
                let backup = rusqlite::backup::Backup::new(conn, &mut copy)?;
                // Every page in one step; a busy or locked source is tried again.
                while backup.step(-1)? != StepResult::Done {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            // One self-contained file: no `-wal` beside it.
            copy.pragma_update(None, "journal_mode", "DELETE")?;
            Ok(())
        })
    }

    /// Every blob row.
    pub(crate) fn all_blobs(&self) -> Result<Vec<BlobRow>, StoreError> {
        self.with(|conn| blob_rows(conn))
    }

    /// Every repository with its manifests and the blobs it may serve.
    pub(crate) fn all_repositories(&self) -> Result<Vec<StoredRepo>, StoreError> {
        self.with(|conn| {
            let mut repos = conn.prepare("SELECT id, name FROM repositories ORDER BY name")?;
            let repos: Vec<(i64, String)> = repos
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut blobs = conn.prepare("SELECT digest FROM repo_blobs WHERE repo_id = ?1")?;
            let mut manifests = conn.prepare(
                "SELECT digest, media_type FROM manifests WHERE repo_id = ?1 ORDER BY digest",
            )?;
            let mut stored = Vec::new();
            for (id, name) in repos {
                stored.push(StoredRepo {
                    name,
                    blobs: blobs
                        .query_map([id], |row| digest_column(row, 0))?
                        .collect::<Result<_, _>>()?,
                    manifests: manifests
                        .query_map([id], |row| Ok((digest_column(row, 0)?, row.get(1)?)))?
                        .collect::<Result<_, _>>()?,
                });
            }
            Ok(stored)
        })
    }

    /// What SQLite finds wrong: `PRAGMA quick_check` and `PRAGMA foreign_key_check`, one line
    /// each; empty when all is well.
    pub(crate) fn integrity_problems(&self) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut problems = Vec::new();
            let mut check = conn.prepare("PRAGMA quick_check")?;
            for line in check.query_map([], |row| row.get::<_, String>(0))? {
                let line = line?;
                if line != "ok" {
                    problems.push(format!("database: {line}"));
                }
            }
            let mut keys = conn.prepare("PRAGMA foreign_key_check")?;
            let rows = keys.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (table, rowid, parent) = row?;
                let at = rowid.map(|r| format!(" (row {r})")).unwrap_or_default();
                problems.push(format!(
                    "database: a row of {table}{at} refers to a missing row of {parent}"
                ));
            }
            Ok(problems)
        })
    }
}

/// Every blob row of the database file at `path` (a backup's copy), opened read-only.
pub(crate) fn blobs_in_file(path: &Path) -> Result<Vec<BlobRow>, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    blob_rows(&conn)
}

fn blob_rows(conn: &Connection) -> Result<Vec<BlobRow>, StoreError> {
    let mut statement = conn.prepare("SELECT digest, size FROM blobs ORDER BY digest")?;
    let rows = statement.query_map([], |row| {
        Ok(BlobRow {
            digest: digest_column(row, 0)?,
            size: row.get::<_, i64>(1)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
