//! `buildgrid fsck`: the store checked both ways. Every blob row has its file, of the row's
//! size, hashing to its digest; every file in `blobs/` is a blob some row names; every
//! manifest's config, layers and children are stored and served by its repository; SQLite finds
//! its own pages and foreign keys sound.
//!
//! It reads only, so it may run beside `serve`. A blob an import has just published but not yet
//! recorded would look unreferenced; such a file is looked up again at the end before it is
//! reported. A file whose rows a garbage collection deleted and whose tombstone is still there
//! is pending collection (`Report::pending_collection`), not a problem.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

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
        let files = blob_files(
            &self.root.join("blobs").join("sha256"),
            &mut report.problems,
        )?;
        let rows = self.db.all_blobs()?;
        let mut stored = HashSet::new();
        for row in &rows {
            stored.insert(row.digest.clone());
            report.blobs += 1;
            let path = self.blobs.path(&row.digest);
            match hash_file(&path) {
                Ok((actual, size)) => {
                    report.blob_bytes += size;
                    if size != row.size {
                        report.problems.push(format!(
                            "blob {}: {size} bytes in {}, {} in its row",
                            row.digest,
                            path.display(),
                            row.size
                        ));
                    } else if actual != row.digest {
                        report.problems.push(format!(
                            "blob {}: damaged: the bytes of {} hash to {actual}",
                            row.digest,
                            path.display()
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => report.problems.push(format!(
                    "blob {}: missing: its row says {} bytes, and there is no file {}",
                    row.digest,
                    row.size,
                    path.display()
                )),
                Err(e) => report.problems.push(format!(
                    "blob {}: cannot read {}: {e}",
                    row.digest,
                    path.display()
                )),
            }
        }
        let tombstones = self.db.all_tombstones()?;
        let mut unreferenced: Vec<(&Digest, &PathBuf)> = files
            .iter()
            .filter(|(digest, _)| !stored.contains(*digest))
            .collect();
        unreferenced.retain(|(digest, _)| {
            let pending = tombstones.contains(*digest);
            report.pending_collection += u64::from(pending);
            !pending
        });
        if !unreferenced.is_empty() {
            // Rows committed since the first read (an import finishing) are not problems.
            let now: HashSet<Digest> = self.db.all_blobs()?.into_iter().map(|r| r.digest).collect();
            unreferenced.retain(|(digest, _)| !now.contains(*digest));
        }
        unreferenced.sort();
        for (digest, path) in unreferenced {
            report.problems.push(format!(
                "blob {digest}: unreferenced: {} has no blob row",
                path.display()
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
                let Ok(bytes) = fs::read(self.blobs.path(digest)) else {
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

/// Every file under `blobs/sha256/`, by the digest its name gives; anything else found there
/// is a problem.
fn blob_files(
    dir: &Path,
    problems: &mut Vec<String>,
) -> Result<HashMap<Digest, PathBuf>, StoreError> {
    let mut files = HashMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for prefix in entries {
        let prefix = prefix.map_err(|e| StoreError::io(dir, e))?.path();
        if !prefix.is_dir() {
            problems.push(format!(
                "unexpected file {} in the blob store",
                prefix.display()
            ));
            continue;
        }
        for entry in fs::read_dir(&prefix).map_err(|e| StoreError::io(&prefix, e))? {
            let path = entry.map_err(|e| StoreError::io(&prefix, e))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let digest = Digest::parse(&format!("sha256:{name}")).ok().filter(|d| {
                prefix
                    .file_name()
                    .is_some_and(|p| p.to_string_lossy() == d.hex()[..2])
            });
            match digest {
                Some(digest) if path.is_file() => {
                    files.insert(digest, path);
                }
                _ => problems.push(format!(
                    "unexpected file {} in the blob store",
                    path.display()
                )),
            }
        }
    }
    Ok(files)
}

/// The SHA-256 digest and size of a file, read in a stream.
fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hash = Sha256Writer::new();
    io::copy(&mut file, &mut hash)?;
    Ok(hash.finish())
}
