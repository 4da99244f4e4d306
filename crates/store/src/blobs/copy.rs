//! `buildgrid store copy`: every blob of this store into another backend (moving from the
//! data directory to an object store), each checked against its digest on the way. Blobs the
//! target already holds with the right size are skipped, so a second run copies only what is
//! missing.

use std::io;

use super::{BlobBackend, BlobWriter};
use crate::{Store, StoreError};

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub copied: u64,
    pub copied_bytes: u64,
    /// Blobs the target already held.
    pub present: u64,
    /// Blobs whose rows went (collected) while the copy ran.
    pub gone: u64,
}

impl Store {
    /// Copies every blob a row names into `target`. Collection waits while it runs (it holds
    /// the ingest lock, shared); builds and imports go on, and a blob they add after the
    /// listing is copied by the next run.
    pub fn copy_blobs(
        &self,
        target: &dyn BlobBackend,
        mut progress: impl FnMut(&CopyReport),
    ) -> Result<CopyReport, StoreError> {
        let _collection_off = self.ingest_lock()?;
        let mut report = CopyReport::default();
        for row in self.db.all_blobs()? {
            if target.stat(&row.digest)? == Some(row.size) {
                report.present += 1;
                continue;
            }
            let mut reader = match self.blobs.reader(&row.digest) {
                Ok(reader) => reader,
                Err(StoreError::BlobMissing(_)) => {
                    report.gone += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let scratch = self.blobs.scratch()?;
            let mut writer = BlobWriter::create(scratch.path())?;
            io::copy(&mut reader, &mut writer)
                .map_err(|e| self.blobs.read_error(&row.digest, e))?;
            let staged = writer.finish(Some(&row.digest))?;
            target.commit(&[staged])?;
            report.copied += 1;
            report.copied_bytes += row.size;
            progress(&report);
        }
        Ok(report)
    }
}
