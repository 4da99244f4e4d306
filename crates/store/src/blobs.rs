use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use buildgrid_core::{Digest, Sha256Writer};

use crate::StoreError;

/// Blobs on disk at `blobs/sha256/<2 hex>/<64 hex>`. A blob appears there only complete,
/// verified and synced: it is written into `tmp/`, checked, fsynced, then renamed.
pub struct BlobStore {
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
}

/// Staging directories older than this are left over by a crash and removed on open.
const STALE_STAGING_AGE: Duration = Duration::from_secs(24 * 3600);

impl BlobStore {
    pub(crate) fn open(root: &Path) -> Result<BlobStore, StoreError> {
        let blobs_dir = root.join("blobs").join("sha256");
        let tmp_dir = root.join("tmp");
        for dir in [&blobs_dir, &tmp_dir] {
            fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        remove_stale_staging(&tmp_dir);
        Ok(BlobStore { blobs_dir, tmp_dir })
    }

    /// Whether the blob directory answers: it can be listed (a readiness probe; a hung
    /// network mount makes this wait, so callers time it).
    pub fn answering(&self) -> Result<(), StoreError> {
        let mut entries =
            fs::read_dir(&self.blobs_dir).map_err(|e| StoreError::io(&self.blobs_dir, e))?;
        if let Some(Err(error)) = entries.next() {
            return Err(StoreError::io(&self.blobs_dir, error));
        }
        Ok(())
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobMissing(digest.clone()),
            _ => StoreError::io(&path, e),
        })
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobMissing(digest.clone()),
            _ => StoreError::io(&path, e),
        })
    }

    /// A fresh staging directory under `tmp/`, removed when dropped.
    pub fn staging(&self) -> Result<tempfile::TempDir, StoreError> {
        tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&self.tmp_dir)
            .map_err(|e| StoreError::io(&self.tmp_dir, e))
    }

    /// Moves staged blobs into place. Each is already verified and synced.
    pub fn publish(&self, staged: &[StagedBlob]) -> Result<(), StoreError> {
        let mut dirs = Vec::new();
        for blob in staged {
            let target = self.path(&blob.digest);
            if target.is_file() {
                continue;
            }
            let dir = target.parent().expect("blob paths have a parent");
            if !dir.is_dir() {
                fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
                dirs.push(self.blobs_dir.clone());
            }
            fs::rename(&blob.path, &target).map_err(|e| StoreError::io(&target, e))?;
            dirs.push(dir.to_owned());
        }
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(&dir, e))?;
        }
        Ok(())
    }
}

fn remove_stale_staging(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > STALE_STAGING_AGE);
        if old {
            let path = entry.path();
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(error) = result {
                tracing::warn!(path = %path.display(), %error, "could not remove stale staging data");
            }
        }
    }
}

/// Writes one blob into a staging directory while hashing it.
pub struct BlobWriter {
    path: PathBuf,
    file: BufWriter<File>,
    hash: Sha256Writer,
}

/// A complete, verified, synced blob waiting in a staging directory.
#[derive(Debug, Clone)]
pub struct StagedBlob {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

impl BlobWriter {
    pub fn create(staging_dir: &Path) -> Result<BlobWriter, StoreError> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(staging_dir)
            .map_err(|e| StoreError::io(staging_dir, e))?;
        let (file, path) = file
            .keep()
            .map_err(|e| StoreError::io(staging_dir, e.error))?;
        Ok(BlobWriter {
            path,
            file: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256Writer::new(),
        })
    }

    /// Flushes, checks the digest when one is expected, and syncs the file.
    pub fn finish(mut self, expected: Option<&Digest>) -> Result<StagedBlob, StoreError> {
        let path = self.path.clone();
        self.file.flush().map_err(|e| StoreError::io(&path, e))?;
        let (digest, size) = self.hash.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            let _ = fs::remove_file(&path);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let file = self
            .file
            .into_inner()
            .map_err(|e| StoreError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| StoreError::io(&path, e))?;
        Ok(StagedBlob { path, digest, size })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Stages `bytes` as a blob.
pub fn stage_bytes(staging_dir: &Path, bytes: &[u8]) -> Result<StagedBlob, StoreError> {
    let mut writer = BlobWriter::create(staging_dir)?;
    writer
        .write_all(bytes)
        .map_err(|e| StoreError::io(staging_dir, e))?;
    writer.finish(None)
}
