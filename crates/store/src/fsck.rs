//! `buildgrid fsck`: the store checked both ways. Every blob row has its blob, of the row's
//! size, hashing to its digest; every blob the backend lists is one some row names; every
//! manifest's config, layers and children are stored and served by its repository; SQLite finds
//! its own pages and foreign keys sound.
//!
//! It reads only, so it may run beside `serve`. A blob an import has just published but not yet
//! recorded would look unreferenced; such a file is looked up again at the end before it is
//! reported. A file whose rows a garbage collection deleted and whose tombstone is still there
//! is pending collection (`Report::pending_collection`), not a problem.

use std::collections::{HashMap, HashSet};
use std::io;

use buildgrid_core::{Digest, Sha256Writer};

use crate::{Store, StoreError};

/// What `fsck` looked at and what it found wrong.
#[derive(Debug, Default)]
pub struct Report {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub manifests: u64,
    /// Files of blobs a collection deleted the rows of, still to be deleted (see `gc`).
    pub pending_collection: u64,
    /// One line per problem, naming the blob, file or manifest.
    pub problems: Vec<String>,
}

/// Media types of layers a manifest may name without the registry holding them.
const FOREIGN_LAYERS: [&str; 3] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
];

impl Store {
    pub fn fsck(&self) -> Result<Report, StoreError> {
        let mut report = Report::default();
        report.problems.extend(self.db.integrity_problems()?);
        let mut files = HashMap::new();
        self.blobs.backend().list(
            &mut |digest, size| {
                files.insert(digest, size);
            },
            &mut |name| {
                report
                    .problems
                    .push(format!("unexpected file {name} in the blob store"))
            },
        )?;
        let place = self.blobs.describe();
        let rows = self.db.all_blobs()?;
        let mut stored = HashSet::new();
        for row in &rows {
            stored.insert(row.digest.clone());
            report.blobs += 1;
            if !files.contains_key(&row.digest) {
                report.problems.push(format!(
                    "blob {}: missing: its row says {} bytes, and {place} has no such blob",
                    row.digest, row.size,
                ));
                continue;
            }
            match self.hash_blob(&row.digest) {
                Ok((actual, size)) => {
                    report.blob_bytes += size;
                    if size != row.size {
                        report.problems.push(format!(
                            "blob {}: {size} bytes in {place}, {} in its row",
                            row.digest, row.size
                        ));
                    } else if actual != row.digest {
                        report.problems.push(format!(
                            "blob {}: damaged: its bytes in {place} hash to {actual}",
                            row.digest,
                        ));
                    }
                }
                Err(e) => report
                    .problems
                    .push(format!("blob {}: cannot read it: {e}", row.digest)),
            }
        }
        let tombstones = self.db.all_tombstones()?;
        let mut unreferenced: Vec<&Digest> = files
            .keys()
            .filter(|digest| !stored.contains(*digest))
            .collect();
        unreferenced.retain(|digest| {
            let pending = tombstones.contains(*digest);
            report.pending_collection += u64::from(pending);
            !pending
        });
        if !unreferenced.is_empty() {
            // Rows committed since the first read (an import finishing) are not problems.
            let now: HashSet<Digest> = self.db.all_blobs()?.into_iter().map(|r| r.digest).collect();
            unreferenced.retain(|digest| !now.contains(*digest));
        }
        unreferenced.sort();
        for digest in unreferenced {
            report.problems.push(format!(
                "blob {digest}: unreferenced: {place} holds it and no blob row names it"
            ));
        }
        self.check_manifests(&stored, &mut report)?;
        Ok(report)
    }

    /// Every manifest's config, layers and (for an index) children are stored, and its
    /// repository may serve them.
    fn check_manifests(
        &self,
        stored: &HashSet<Digest>,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        for repo in self.db.all_repositories()? {
            let manifests: HashSet<&Digest> = repo.manifests.iter().map(|(d, _)| d).collect();
            for (digest, _) in &repo.manifests {
                report.manifests += 1;
                let name = format!("manifest {}@{digest}", repo.name);
                let Ok(bytes) = self.blobs.read(digest) else {
                    continue; // reported with the blobs
                };
                let document: serde_json::Value = match serde_json::from_slice(&bytes) {
                    Ok(document) => document,
                    Err(e) => {
                        report.problems.push(format!("{name}: not JSON: {e}"));
                        continue;
                    }
                };
                for (role, reference) in references(&document) {
                    let Ok(reference) = Digest::parse(&reference) else {
                        report.problems.push(format!(
                            "{name}: its {role} has an invalid digest {reference:?}"
                        ));
                        continue;
                    };
                    let problem = if !stored.contains(&reference) {
                        Some("which is not stored")
                    } else if role == "child manifest" && !manifests.contains(&reference) {
                        Some("which is not a manifest of this repository")
                    } else if role != "child manifest" && !repo.blobs.contains(&reference) {
                        Some("which this repository does not serve")
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        report
                            .problems
                            .push(format!("{name}: its {role} is {reference}, {problem}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The digests a manifest or index names: config, layers (foreign ones aside) and children.
pub(crate) fn references(document: &serde_json::Value) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let digest =
        |v: &serde_json::Value| v.get("digest").and_then(|d| d.as_str()).map(str::to_owned);
    if let Some(config) = document.get("config").and_then(digest) {
        found.push(("config", config));
    }
    for layer in document
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        let media_type = layer
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or("");
        if let Some(d) = digest(layer)
            && !FOREIGN_LAYERS.contains(&media_type)
        {
            found.push(("layer", d));
        }
    }
    for child in document
        .get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(d) = digest(child) {
            found.push(("child manifest", d));
        }
    }
    found
}

impl Store {
    /// The SHA-256 digest and size of a stored blob, read in a stream.
    fn hash_blob(&self, digest: &Digest) -> Result<(Digest, u64), StoreError> {
        let mut reader = self.blobs.reader(digest)?;
        let mut hash = Sha256Writer::new();
        io::copy(&mut reader, &mut hash).map_err(|e| self.blobs.read_error(digest, e))?;
        Ok(hash.finish())
    }
}
