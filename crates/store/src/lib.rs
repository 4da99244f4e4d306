//! buildgrid's storage: content-addressed blobs and metadata in SQLite, under one data
//! directory. This crate is the only code that touches that directory. Blobs live behind a
//! port ([`BlobBackend`]): in the data directory by default, or in an object store.
//!
//! ```text
//! <data>/
//!   buildgrid.db            SQLite (WAL), metadata
//!   blobs/sha256/ab/ab…     every blob, named by its digest, immutable (the local backend)
//!   tmp/                    scratch: staged blobs (committed only complete and verified),
//!                           spools, build contexts; never the blob namespace
//!   git/<ns>/<app>.git      each app's bare repository (pushes land here, fetches mirror here)
//!   secret.key              the key of sealed secrets (`secrets`), made on first need
//! ```
//!
//! The directory is private to the user buildgrid runs as (0700, files 0600: `private_dir`).

pub mod backup;
mod blobs;
mod db;
mod error;
pub mod fsck;
pub mod gc;
pub mod image;
pub mod ingest;
mod lease;
mod private_dir;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blobs::{
    BlobBackend, BlobBody, BlobStore, BlobStream, BlobWriter, CopyReport, LocalBlobs, RemoteBody,
    StagedBlob, conformance,
};
pub use db::CollectedEngineTag;
pub use db::{
    App, AppSummary, ArchiveChecksums, AuditEntry, BlobRow, BlobTotals, Build, BuildFilter,
    BuildState, Db, DeletedBranch, Deploy, DeployImage, DeployLine, DeployLogFilter, DownloadCount,
    ImageFilesRow, ImageRecord, LayerFilesRow, LayerRow, LogFilter, LogLine, LogStep,
    ManifestRecord, ManifestRow, Namespace, NewApp, NewBuild, NewSource, NewToken, Page, Queued,
    ReferrerRow, Server, ServerAccess, ServiceRow, Source, TagMove, TagRow, TokenRow, Undeployable,
    User,
};
pub use db::{DEFAULT_RETENTION, Pin, Retention, RetentionRule};
pub use error::StoreError;
pub use lease::{LEASE_REAP_EVERY, LEASE_RENEW_EVERY, LEASE_TERM, Lease};
pub use private_dir::keep_new_files_private;
pub use secrets::Secrets;

/// The data directory: blobs and metadata.
pub struct Store {
    root: PathBuf,
    pub blobs: BlobStore,
    pub db: Db,
    /// Seals the secrets the database keeps (see [`secrets`]).
    pub secrets: Arc<Secrets>,
    /// Image file trees recently shown.
    pub(crate) trees: image::TreeCache,
    /// A stop point for tests of collection's safety: called by every ingest after it
    /// published its blobs and before it commits the rows that name them.
    #[doc(hidden)]
    pub between_publish_and_commit: IngestHook,
}

/// See [`Store::between_publish_and_commit`].
pub type IngestHook = std::sync::Mutex<Option<Box<dyn Fn() + Send + Sync>>>;

impl Store {
    /// Opens the data directory, creating it and migrating its database as needed. The
    /// directory must belong to the user running buildgrid; it is made private if it is not
    /// (see `private_dir`). Sealed secrets take their key from `BUILDGRID_SECRET_KEY` when it
    /// is set, else from `<root>/secret.key`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_with_key(root, std::env::var(secrets::KEY_ENV).ok())
    }

    /// [`Store::open`] with the key of sealed secrets given (base64 of 32 bytes) rather than
    /// read from the environment; `None` keys from `<root>/secret.key`.
    pub fn open_with_key(root: &Path, secret_key: Option<String>) -> Result<Store, StoreError> {
        Store::open_with(root, secret_key, None)
    }

    /// [`Store::open_with_key`] with the blobs kept by `blobs` (`None`: in `<root>/blobs`).
    pub fn open_with(
        root: &Path,
        secret_key: Option<String>,
        blobs: Option<Arc<dyn BlobBackend>>,
    ) -> Result<Store, StoreError> {
        private_dir::prepare(root)?;
        let blobs = BlobStore::new(root, blobs)?;
        let secrets = Arc::new(Secrets::new(root, secret_key));
        let db = Db::open(&root.join("buildgrid.db"), secrets.clone())?;
        db.seal_plain_service_secrets()?;
        Ok(Store {
            root: root.to_owned(),
            blobs,
            db,
            secrets,
            trees: image::TreeCache::default(),
            between_publish_and_commit: IngestHook::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the app's bare git repositories live: `<data>/git`.
    pub fn git_root(&self) -> PathBuf {
        self.root.join("git")
    }

    /// The app's bare repository: what `git push` to buildgrid writes, and the mirror builds
    /// fetch the app's git URL into.
    pub fn git_dir(&self, app: &buildgrid_core::AppRef) -> PathBuf {
        self.git_root()
            .join(app.namespace())
            .join(format!("{}.git", app.app()))
    }

    /// The mirror of a build's repository: the app's own, or that of its source.
    pub fn build_git_dir(&self, app: &buildgrid_core::AppRef, source: Option<i64>) -> PathBuf {
        match source {
            None => self.git_dir(app),
            Some(id) => self
                .git_root()
                .join(app.namespace())
                .join(format!("{}.sources", app.app()))
                .join(format!("{id}.git")),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
