//! Garbage collection: deletes what no retention rule, tag, pin, deploy or build in flight
//! keeps, exactly, online, and so that a crash at any point leaves nothing broken.
//!
//! **What stays** (the roots, `plan.rs`): branch tags (each names its branch's newest successful
//! build); tags no build made (imports); the images of the builds retention keeps (the newest N
//! successful builds of each branch, builds younger than D days); what each service runs now,
//! what deploys newer than that left, and the K images it ran before (rollback targets); images
//! of running deploys; pinned images; commit tags of builds in flight. A branch deleted upstream
//! (`deleted_branches`) at least `drop_deleted_after` days ago keeps nothing by itself: neither
//! its tag nor the N-newest and D-days rules keep its builds, so only a pin, a service, a deploy
//! or a build in flight still does. From these, index children and referrers (same repository)
//! of kept manifests stay, and the configs and layers of every kept manifest, so a layer stays
//! while any kept image uses it. Everything else goes: tags, manifests, `repo_blobs`, blob rows,
//! layers, layer file lists, image file summaries, archive checksums, download counts; the
//! builds whose image went are marked (`image_removed`).
//!
//! **Why nothing reachable is lost — no time window.** buildgrid's only writer of blobs and
//! image rows is ingest, and ingest holds the collection lock (`<data>/gc.lock`, a shared
//! `flock`) from before it looks up a stored layer or stages a blob until the transaction that
//! records its image has committed (`ingest::stage::Staging`). Collection takes the same lock
//! exclusively for its whole run. So while collection decides and deletes, no ingest is between
//! "found this blob stored" or "published this blob" and "committed the row that names it":
//! every blob an ingest relies on is either named by a committed row that collection sees (and
//! keeps, if a root reaches it) or not yet touched. A build that committed its image but has not
//! finished is protected by its commit tag (builds in flight are roots); tag moves and build
//! states are written without the lock but only point at manifests already kept.
//!
//! **Crash safety.** Collection deletes rows first, in the one transaction that read them, and
//! records each deleted blob in `gc_tombstones`; then it deletes the files, syncs their
//! directories, and drops their tombstones. A crash before the commit changes nothing; after
//! it, the tombstones remain and the next collection (or `serve` starting, `finish_pending`)
//! deletes the files left, so a row never points at a missing file. A tombstoned digest that a
//! later ingest stored again (its file still there, so publishing skipped it) has a row again;
//! its file stays and only the tombstone goes. `fsck` counts tombstoned files as pending
//! collection, not as unreferenced.

pub(crate) mod plan;
mod reason;

use std::fs::{self, File};

use buildgrid_core::{Digest, RepoName};

use crate::{Store, StoreError};
pub use plan::Usage;
pub use reason::KeepReason;

/// The lock ingest shares and collection holds alone.
const LOCK_FILE: &str = "gc.lock";

/// Tombstones handled per transaction.
const BATCH: usize = 1000;

/// A held collection lock; released when dropped.
#[derive(Debug)]
pub struct CollectionLock {
    _file: File,
}

/// Where a collection stops early, as a crash there would: for tests of recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPoint {
    /// After the rows are deleted and the tombstones committed, before any file is deleted.
    AfterRows,
    /// After this many files are deleted, before their tombstones are dropped.
    AfterFiles(usize),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Decide and report, delete nothing.
    pub dry_run: bool,
    pub stop: Option<StopPoint>,
}

/// What a collection deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collection {
    /// `repo:tag`, by repository and tag.
    pub tags: Vec<String>,
    /// `repo@digest`, by repository and digest.
    pub manifests: Vec<String>,
    pub blobs: u64,
    pub bytes: u64,
    /// Builds whose image was removed.
    pub builds: Vec<i64>,
    /// Storage per app and namespace before the collection, with what it reclaims.
    pub usage: Vec<Usage>,
    /// Files of earlier collections deleted first (a run that had stopped).
    pub pending_finished: u64,
}

/// What the next collection would decide, as of one moment: for pages, which show why an
/// image stays and what each app would get back. Read without the collection lock, so it can
/// be a moment behind a collection or an ingest running beside it.
#[derive(Debug)]
pub struct Outlook {
    graph: plan::Graph,
    plan: plan::Plan,
}

impl Outlook {
    /// Seconds since the epoch when the rows were read.
    pub fn computed_at(&self) -> i64 {
        self.graph.now
    }

    /// Storage per app and namespace (as `gc --dry-run` prints it).
    pub fn usage(&self) -> Vec<Usage> {
        plan::usage(&self.graph, &self.plan)
    }

    /// Why the collection keeps the manifest `digest` of `repo` (empty: it deletes it); `None`
    /// when that manifest was not stored.
    pub fn keep_reasons(&self, repo: &RepoName, digest: &Digest) -> Option<Vec<KeepReason>> {
        let (repo_id, _) = self
            .graph
            .repos
            .iter()
            .find(|(_, name)| name.as_str() == repo.as_str())?;
        self.graph
            .manifests
            .iter()
            .any(|m| m.repo_id == *repo_id && m.digest == *digest)
            .then(|| plan::reasons(&self.graph, *repo_id, digest))
    }
}

impl Store {
    /// What the next collection would decide now (see [`Outlook`]). It reads every manifest,
    /// so it costs about as much as `gc --dry-run`.
    pub fn collection_outlook(&self) -> Result<Outlook, StoreError> {
        let read = |digest: &Digest| self.blobs.read(digest);
        let graph = self.db.collection_graph(&read)?;
        let plan = plan::plan(&graph);
        Ok(Outlook { graph, plan })
    }

    /// Why the next collection would keep the manifest `digest` of `repo`, computed from the
    /// same roots it uses (see [`Outlook::keep_reasons`]).
    pub fn keep_reasons(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<KeepReason>>, StoreError> {
        Ok(self.collection_outlook()?.keep_reasons(repo, digest))
    }

    fn lock_file(&self) -> Result<File, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join(LOCK_FILE);
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))
    }

    /// The lock ingest holds while it relies on stored blobs and publishes its own; any number
    /// of ingests share it, collection waits for all of them.
    pub fn ingest_lock(&self) -> Result<CollectionLock, StoreError> {
        let file = self.lock_file()?;
        file.lock_shared()
            .map_err(|e| StoreError::io(&self.root.join(LOCK_FILE), e))?;
        Ok(CollectionLock { _file: file })
    }

    fn collection_lock(&self) -> Result<CollectionLock, StoreError> {
        let file = self.lock_file()?;
        file.lock()
            .map_err(|e| StoreError::io(&self.root.join(LOCK_FILE), e))?;
        Ok(CollectionLock { _file: file })
    }

    /// Collects garbage (see the module's documentation): first the files of a collection that
    /// stopped, then this one's.
    pub fn gc(&self, options: GcOptions) -> Result<Collection, StoreError> {
        let _lock = self.collection_lock()?;
        let pending_finished = if options.dry_run {
            0
        } else {
            self.delete_tombstoned(None)?
        };
        let read = |digest: &Digest| self.blobs.read(digest);
        let (graph, plan) = self.db.collect_rows(&read, options.dry_run)?;
        let name = |repo_id: &i64| graph.repos.get(repo_id).cloned().unwrap_or_default();
        let collection = Collection {
            tags: plan
                .tags
                .iter()
                .map(|(r, t)| format!("{}:{t}", name(r)))
                .collect(),
            manifests: plan
                .manifests
                .iter()
                .map(|(r, d)| format!("{}@{d}", name(r)))
                .collect(),
            blobs: plan.blobs.len() as u64,
            bytes: plan.blobs.iter().map(|(_, size)| size).sum(),
            builds: plan.builds.clone(),
            usage: plan::usage(&graph, &plan),
            pending_finished,
        };
        let mut sorted = collection;
        sorted.tags.sort();
        sorted.manifests.sort();
        if options.dry_run || options.stop == Some(StopPoint::AfterRows) {
            return Ok(sorted);
        }
        let files = match options.stop {
            Some(StopPoint::AfterFiles(n)) => Some(n),
            _ => None,
        };
        self.delete_tombstoned(files)?;
        tracing::info!(
            tags = sorted.tags.len(),
            manifests = sorted.manifests.len(),
            blobs = sorted.blobs,
            bytes = sorted.bytes,
            "garbage collected"
        );
        Ok(sorted)
    }

    /// Deletes the files of pending tombstones (a collection that stopped): what `serve` does
    /// when it starts. Returns how many files went.
    pub fn finish_pending_collection(&self) -> Result<u64, StoreError> {
        let _lock = self.collection_lock()?;
        self.delete_tombstoned(None)
    }

    /// Deletes tombstoned files, syncs their directories, then drops the tombstones, a batch
    /// at a time; with `stop`, returns after deleting that many files, tombstones left.
    fn delete_tombstoned(&self, stop: Option<usize>) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            let batch = self.db.tombstones(BATCH)?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            let mut doomed: Vec<Digest> = batch
                .iter()
                .filter(|(_, stored_again)| !stored_again)
                .map(|(digest, _)| digest.clone())
                .collect();
            if let Some(stop) = stop {
                let room = stop.saturating_sub(deleted as usize);
                if doomed.len() >= room {
                    doomed.truncate(room);
                    deleted += self.blobs.delete(&doomed)?;
                    return Ok(deleted);
                }
            }
            deleted += self.blobs.delete(&doomed)?;
            let digests: Vec<Digest> = batch.into_iter().map(|(d, _)| d).collect();
            self.db.drop_tombstones(&digests)?;
        }
    }
}
