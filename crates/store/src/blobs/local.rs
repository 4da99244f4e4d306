//! The local implementation of the blob port: `<data>/blobs/sha256/<2 hex>/<64 hex>`. A blob
//! appears there only complete, verified and synced: it is staged in `<data>/tmp`, checked,
//! fsynced, then renamed into place (the same file system, so the rename is atomic).

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use buildgrid_core::{Digest, Sha256Writer};

use super::{BlobBackend, BlobBody};
use crate::StoreError;

pub struct LocalBlobs {
    /// `<data>/blobs`
    root: PathBuf,
    /// `<data>/blobs/sha256`
    blobs_dir: PathBuf,
}

impl LocalBlobs {
    pub fn open(root: &Path) -> Result<LocalBlobs, StoreError> {
        let blobs_dir = root.join("sha256");
        fs::create_dir_all(&blobs_dir).map_err(|e| StoreError::io(&blobs_dir, e))?;
        Ok(LocalBlobs {
            root: root.to_owned(),
            blobs_dir,
        })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir.join(&hex[..2]).join(hex)
    }
}

impl BlobBackend for LocalBlobs {
    fn describe(&self) -> String {
        format!("the directory {}", self.root.display())
    }

    fn check(&self) -> Result<(), StoreError> {
        let mut entries =
            fs::read_dir(&self.blobs_dir).map_err(|e| StoreError::io(&self.blobs_dir, e))?;
        if let Some(Err(error)) = entries.next() {
            return Err(StoreError::io(&self.blobs_dir, error));
        }
        Ok(())
    }

    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody, StoreError> {
        let path = self.path(digest);
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobMissing(digest.clone()),
            _ => StoreError::io(&path, e),
        })?;
        if let Some(range) = range
            && range.start > 0
        {
            file.seek(SeekFrom::Start(range.start))
                .map_err(|e| StoreError::io(&path, e))?;
        }
        Ok(BlobBody::File(file))
    }

    fn commit(&self, staged: &[StagedBlob]) -> Result<(), StoreError> {
        let mut dirs = Vec::new();
        for blob in staged {
            let target = self.path(&blob.digest);
            if target.is_file() {
                let _ = fs::remove_file(&blob.path);
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
        sync_dirs(dirs)
    }

    fn delete(&self, digests: &[Digest]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let mut dirs = Vec::new();
        for digest in digests {
            let path = self.path(digest);
            match fs::remove_file(&path) {
                Ok(()) => {
                    deleted += 1;
                    dirs.push(path.parent().expect("blob paths have a parent").to_owned());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        sync_dirs(dirs)?;
        Ok(deleted)
    }

    fn list(
        &self,
        each: &mut dyn FnMut(Digest, u64),
        odd: &mut dyn FnMut(String),
    ) -> Result<(), StoreError> {
        let dir = &self.blobs_dir;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        for prefix in entries {
            let prefix = prefix.map_err(|e| StoreError::io(dir, e))?.path();
            if !prefix.is_dir() {
                odd(prefix.display().to_string());
                continue;
            }
            for entry in fs::read_dir(&prefix).map_err(|e| StoreError::io(&prefix, e))? {
                let entry = entry.map_err(|e| StoreError::io(&prefix, e))?;
                let path = entry.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let digest = Digest::parse(&format!("sha256:{name}")).ok().filter(|d| {
                    prefix
                        .file_name()
                        .is_some_and(|p| p.to_string_lossy() == d.hex()[..2])
                });
                match (digest, entry.metadata()) {
                    (Some(digest), Ok(meta)) if meta.is_file() => each(digest, meta.len()),
                    _ => odd(path.display().to_string()),
                }
            }
        }
        Ok(())
    }

    fn local_path(&self, digest: &Digest) -> Option<PathBuf> {
        Some(self.path(digest))
    }
}

fn sync_dirs(mut dirs: Vec<PathBuf>) -> Result<(), StoreError> {
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&dir, e))?;
    }
    Ok(())
}

/// Removes what a crash left in the scratch directory: entries older than `age`.
pub(super) fn remove_stale(scratch: &Path, age: Duration) {
    let Ok(entries) = fs::read_dir(scratch) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|elapsed| elapsed > age);
        if old {
            let path = entry.path();
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(error) = result {
                tracing::warn!(path = %path.display(), %error, "could not remove stale scratch data");
            }
        }
    }
}

/// Writes one blob into a scratch directory while hashing it.
pub struct BlobWriter {
    path: PathBuf,
    file: BufWriter<File>,
    hash: Sha256Writer,
}

/// A complete, verified, synced blob waiting in a scratch directory for its commit.
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
