use std::collections::HashMap;
use std::sync::Mutex;

use buildgrid_core::{Digest, RepoName};
use buildgrid_store::{DownloadCount, Store};

/// Download counts gathered in memory and written to the store in batches, so that serving a
/// manifest never waits for a database write.
#[derive(Default)]
pub struct Downloads {
    pending: Mutex<HashMap<(RepoName, Digest), u64>>,
}

impl Downloads {
    pub fn record(&self, repo: &RepoName, digest: &Digest) {
        let mut pending = self.pending.lock().unwrap();
        if let Some(count) = pending.get_mut(&(repo.clone(), digest.clone())) {
            *count += 1;
        } else {
            pending.insert((repo.clone(), digest.clone()), 1);
        }
    }

    /// Writes what was counted; on failure the counts are kept for the next flush.
    pub fn flush(&self, store: &Store) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap());
        if batch.is_empty() {
            return;
        }
        let counts: Vec<DownloadCount> = batch
            .iter()
            .map(|((repo, digest), count)| DownloadCount {
                repo: repo.clone(),
                digest: digest.clone(),
                count: *count,
            })
            .collect();
        if let Err(error) = store.db.add_downloads(&counts) {
            tracing::warn!(%error, "could not record downloads; keeping them for the next try");
            let mut pending = self.pending.lock().unwrap();
            for (key, count) in batch {
                *pending.entry(key).or_insert(0) += count;
            }
        }
    }
}
