//! All SQL of buildgrid lives in this module: the schema, and one file per kind of record.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use buildgrid_core::Digest;
use rusqlite::Connection;

use crate::{Secrets, StoreError};

mod access;
mod apps;
mod branches;
mod builds;
mod collect;
mod deploys;
mod engine_tags;
mod files;
mod images;
mod log_view;
mod logs;
mod operations;
mod retention;
mod schema;
mod sources;
mod timeline;
mod whole;

pub use access::{AuditEntry, Namespace, NewToken, TokenRow, User};
pub use apps::{App, NewApp};
pub use branches::DeletedBranch;
pub(crate) use branches::branch_name;
pub use builds::{Build, BuildState, NewBuild, Queued};
pub use deploys::{
    Deploy, DeployImage, DeployLine, DeployLogFilter, Server, ServerAccess, ServiceRow,
};
pub use engine_tags::CollectedEngineTag;
pub use files::{ArchiveChecksums, ImageFilesRow, LayerFilesRow};
pub use images::{
    BlobRow, DownloadCount, ImageRecord, LayerRow, ManifestRecord, ManifestRow, ReferrerRow,
    TagMove, TagRow,
};
pub use log_view::{LogFilter, LogStep};
pub use logs::LogLine;
pub use operations::BlobTotals;
pub use retention::{DEFAULT_RETENTION, Pin, Retention, RetentionRule};
pub use sources::{NewSource, Source, Undeployable};
pub use timeline::{AppSummary, BuildFilter, Page};
pub(crate) use whole::blobs_in_file;

/// The SQLite database, with a small pool of connections (WAL: readers never wait for a writer).
pub struct Db {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Seals what must not be stored in plain text (services' secret env).
    secrets: Arc<Secrets>,
}

fn digest_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Digest> {
    let text: String = row.get(index)?;
    Digest::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Db {
    /// Opens (or creates, mode 0600) the database and migrates it.
    pub fn open(path: &Path, secrets: Arc<Secrets>) -> Result<Db, StoreError> {
        create_private(path)?;
        let db = Db {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            secrets,
        };
        let mut conn = db.connect()?;
        schema::migrate(&mut conn, path)?;
        db.idle.lock().unwrap().push(conn);
        Ok(db)
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&mut conn);
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < 16 {
            idle.push(conn);
        }
        result
    }
}

/// Creates the database file 0600 when it does not exist yet; SQLite gives its `-wal` and
/// `-shm` files the database's mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}
