//! What an operator's probes and metrics read: whether the database answers, the size of the
//! blob store, and how many builds wait or run.

use super::Db;
use crate::StoreError;

/// Blobs the store holds, by its `blobs` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobTotals {
    pub count: u64,
    pub bytes: u64,
}

impl Db {
    /// A trivial query: the database can be opened and read.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
            Ok(())
        })
    }

    /// The number and total size of stored blobs (one pass over the `blobs` table: about a
    /// millisecond for 10,000 blobs, so it is read at scrape time).
    pub fn blob_totals(&self) -> Result<BlobTotals, StoreError> {
        self.with(|conn| {
            let (count, bytes): (i64, i64) = conn.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM blobs",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            Ok(BlobTotals {
                count: count.max(0) as u64,
                bytes: bytes.max(0) as u64,
            })
        })
    }

    /// How many builds are in each unfinished state (queued, fetching, building, storing); states
    /// without builds are left out.
    pub fn unfinished_build_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT state, count(*) FROM builds
                 WHERE state IN ('queued', 'fetching', 'building', 'storing') GROUP BY state",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?.max(0) as u64,
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
