//! Where blobs live, behind one port ([`BlobBackend`]): the local directory `<data>/blobs`
//! ([`LocalBlobs`], the default) or an object store (the `buildgrid-s3` crate). Everything
//! else in buildgrid reads and writes blobs through [`BlobStore`], which adds what every
//! backend shares: staging in the local scratch directory, digest checks, and whole reads.
//!
//! A blob becomes visible under its digest only complete and verified: it is written into a
//! scratch file while hashed ([`BlobWriter`]), checked against its digest, and then committed
//! ([`BlobBackend::commit`]: a rename on the local disk, one upload on an object store). A
//! row names a blob only after the commit returned, and collection deletes the row before
//! the bytes, so a row never points at a missing blob on either backend.

#[doc(hidden)]
pub mod conformance;
mod copy;
mod local;

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use buildgrid_core::Digest;
use bytes::Bytes;

pub use copy::CopyReport;
pub use local::{BlobWriter, LocalBlobs, StagedBlob, stage_bytes};

use crate::StoreError;

/// A blob's bytes as a backend hands them out.
pub enum BlobBody {
    /// A local file, positioned at the start of the range asked for: the caller reads it, or
    /// maps it into memory, itself.
    File(File),
    /// Bytes from elsewhere (an object store), readable both ways: blocking (`Read`, on a
    /// thread that may block) or as a stream (on an async runtime, whichever).
    Remote(Box<dyn RemoteBody>),
}

/// See [`BlobBody::Remote`].
pub trait RemoteBody:
    Read + futures_core::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static
{
}

impl<T> RemoteBody for T where
    T: Read + futures_core::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static
{
}

impl BlobBody {
    /// A blocking reader of the bytes.
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        match self {
            BlobBody::File(file) => Box::new(file),
            BlobBody::Remote(body) => Box::new(body),
        }
    }
}

/// One way of keeping blobs. Calls may block (network or disk): call them from a thread that
/// may block, never from an async runtime's own threads.
pub trait BlobBackend: Send + Sync {
    /// Where the blobs are, for messages: a directory, or `s3://bucket/prefix at <endpoint>`.
    fn describe(&self) -> String;
    /// Answers when the storage can be read and listed (start-up and readiness checks).
    fn check(&self) -> Result<(), StoreError>;
    /// The size of a stored blob; `None` when it is not stored.
    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;
    /// The bytes `range` of a stored blob (all of them without one);
    /// [`StoreError::BlobMissing`] when it is not stored.
    fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody, StoreError>;
    /// Makes staged, verified blobs visible under their digests, durably; a blob already
    /// stored is left as it is. The staged files are consumed (moved or removed).
    fn commit(&self, staged: &[StagedBlob]) -> Result<(), StoreError>;
    /// Deletes the blobs, durably; missing ones are no error. Returns how many were there.
    fn delete(&self, digests: &[Digest]) -> Result<u64, StoreError>;
    /// Every stored blob with its size; `odd` receives the names of anything else found in
    /// the blob namespace.
    fn list(
        &self,
        each: &mut dyn FnMut(Digest, u64),
        odd: &mut dyn FnMut(String),
    ) -> Result<(), StoreError>;
    /// A URL a client may fetch the blob from directly for `lifetime`, without credentials
    /// of its own; `None` when the backend has no such URL.
    fn redirect_url(
        &self,
        _digest: &Digest,
        _lifetime: Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// The file of a blob, for backends that keep blobs as local files (hard-linked backups).
    fn local_path(&self, _digest: &Digest) -> Option<PathBuf> {
        None
    }
}

/// The blobs of a data directory: a backend, and the local scratch directory `<data>/tmp`
/// where blobs are staged (and builds and ingests keep their temporary files).
pub struct BlobStore {
    backend: Arc<dyn BlobBackend>,
    scratch: PathBuf,
}

/// Scratch directories older than this are left over by a crash and removed on open.
const STALE_SCRATCH_AGE: Duration = Duration::from_secs(24 * 3600);

impl BlobStore {
    pub(crate) fn new(
        root: &Path,
        backend: Option<Arc<dyn BlobBackend>>,
    ) -> Result<BlobStore, StoreError> {
        let scratch = root.join("tmp");
        std::fs::create_dir_all(&scratch).map_err(|e| StoreError::io(&scratch, e))?;
        local::remove_stale(&scratch, STALE_SCRATCH_AGE);
        let backend = match backend {
            Some(backend) => backend,
            None => Arc::new(LocalBlobs::open(&root.join("blobs"))?),
        };
        Ok(BlobStore { backend, scratch })
    }

    pub fn backend(&self) -> &Arc<dyn BlobBackend> {
        &self.backend
    }

    /// Where the blobs are, for messages.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Whether the blob storage answers (a readiness probe; a hung network mount or object
    /// store makes this wait, so callers time it).
    pub fn answering(&self) -> Result<(), StoreError> {
        self.backend.check()
    }

    pub fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.backend.stat(digest)?.is_some())
    }

    pub fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.backend.stat(digest)
    }

    pub fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody, StoreError> {
        self.backend.open(digest, range)
    }

    /// A blocking reader of the whole blob.
    pub fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, StoreError> {
        Ok(self.backend.open(digest, None)?.into_reader())
    }

    /// The whole blob in memory: for manifests and configs, not layers.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        self.reader(digest)?
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(digest, e))?;
        Ok(bytes)
    }

    /// An error reading `digest`, naming where it is.
    pub fn read_error(&self, digest: &Digest, error: io::Error) -> StoreError {
        StoreError::Blob {
            digest: digest.clone(),
            place: self.backend.describe(),
            source: error,
        }
    }

    /// A fresh scratch directory under `<data>/tmp`, removed when dropped: for staged blobs,
    /// spools, build contexts and archives on their way.
    pub fn scratch(&self) -> Result<tempfile::TempDir, StoreError> {
        tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&self.scratch)
            .map_err(|e| StoreError::io(&self.scratch, e))
    }

    /// Makes staged blobs visible under their digests. Each is already verified and synced.
    pub fn publish(&self, staged: &[StagedBlob]) -> Result<(), StoreError> {
        self.backend.commit(staged)
    }

    pub fn delete(&self, digests: &[Digest]) -> Result<u64, StoreError> {
        self.backend.delete(digests)
    }

    pub fn redirect_url(
        &self,
        digest: &Digest,
        lifetime: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.backend.redirect_url(digest, lifetime)
    }
}

/// Pinned boxed stream of a remote body, for callers that want the stream side only.
pub type BlobStream = Pin<Box<dyn futures_core::Stream<Item = io::Result<Bytes>> + Send>>;
