use std::path::{Path, PathBuf};

use buildgrid_core::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{0}")]
    Conflict(String),
    #[error("blob {0} is not in the store")]
    BlobMissing(Digest),
    #[error(
        "the stored file list of layer {diff_id} is unreadable ({reason}): the database is damaged"
    )]
    FileList { diff_id: Digest, reason: String },
    #[error("stored blob {digest} is not the JSON document it should be: {reason}")]
    Unreadable { digest: Digest, reason: String },
    #[error("cannot write the image archive: {0}")]
    Write(#[source] std::io::Error),
    #[error(
        "database {path} was written by a newer buildgrid (schema {found}, this one knows {known}): upgrade buildgrid"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "data directory {path} belongs to uid {owner}, not to uid {me} that runs buildgrid: run buildgrid as uid {owner}, or give the directory to uid {me} (`chown -R {me} {path}`)",
        path = path.display()
    )]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("{0}")]
    Secret(String),
    #[error("cannot read blob {digest} from {place}: {source}")]
    Blob {
        digest: Digest,
        place: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob storage {place}: {message}")]
    Storage { place: String, message: String },
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
