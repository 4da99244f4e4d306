//! Ingest: an image archive (`docker save`, legacy or OCI layout, or an OCI archive) becomes
//! blobs, OCI manifests and a tag in the store. The builder and `buildgrid import` share it.
//!
//! Uncompressed layers are gzip-compressed deterministically, so the same layer always gets the
//! same digest, and a layer already stored (same diff id) is reused without compressing it
//! again. Blobs are staged and verified first; they are published and the metadata committed in
//! one transaction only when everything checked out, so a failed import changes nothing.

mod archive;
mod compress;
mod docker;
mod oci;
mod spool;
mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buildgrid_core::{Digest, RepoName, Tag};

use crate::{Store, StoreError};
use archive::{Archive, Substitute};
use buildgrid_core::media_type::OCI_LAYER_GZIP;
pub use spool::{Prepared, spool_archive};
use stage::Staging;

/// The libdeflate level of compressed layers (1 to 12). Changing it changes every new layer
/// digest; layers already stored keep theirs and are reused by diff id.
pub const GZIP_LEVEL: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an image archive (a tar written by `docker save` or an OCI archive): {reason}"
    )]
    NotAnArchive { path: PathBuf, reason: String },
    #[error("{path} is truncated: {member} should end at byte {end} but the file has {len} bytes")]
    Truncated {
        path: PathBuf,
        member: String,
        end: u64,
        len: u64,
    },
    #[error("{path} lacks {member}: the archive is incomplete or truncated")]
    MissingMember { path: PathBuf, member: String },
    #[error("invalid image archive: {0}")]
    Invalid(String),
    /// Writing what the archive holds failed: the archive is fine, the store's disk is not.
    #[error("cannot store {member}: {source}")]
    Write {
        member: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{member} does not match its digest (expected {expected}, got {actual}): the archive is corrupt"
    )]
    Corrupt {
        member: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// An I/O error of a pass that reads the archive and writes the store at once: a full disk
    /// is the store's (`Write`), anything else what `otherwise` makes of it.
    pub(crate) fn from_io(
        member: &str,
        error: std::io::Error,
        otherwise: impl FnOnce(std::io::Error) -> IngestError,
    ) -> IngestError {
        if error.kind() == std::io::ErrorKind::StorageFull {
            return IngestError::Write {
                member: member.to_owned(),
                source: error,
            };
        }
        otherwise(error)
    }
}

/// What an import stored.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub repo: RepoName,
    pub tag: Tag,
    /// The tagged manifest or index.
    pub digest: Digest,
    pub media_type: String,
    /// Platforms (`os/arch`) of the images, one for a single-platform image.
    pub platforms: Vec<String>,
    pub layers_compressed: usize,
    pub layers_reused: usize,
    pub layers_copied: usize,
}

/// Imports an image archive and tags it `repo:tag`.
pub fn import_archive(
    store: &Store,
    path: &Path,
    repo: &RepoName,
    tag: &Tag,
) -> Result<ImportReport, IngestError> {
    import_archive_with(
        store,
        path,
        repo,
        tag,
        &BTreeMap::new(),
        Prepared::default(),
    )
}

/// Imports an image archive, adds `labels` to its configuration, and tags it `repo:tag`.
/// `prepared` holds layers `spool_archive` compressed while the archive arrived.
#[tracing::instrument(skip(store, path, labels, prepared), fields(archive = %path.display()))]
pub fn import_archive_with(
    store: &Store,
    path: &Path,
    repo: &RepoName,
    tag: &Tag,
    labels: &BTreeMap<String, String>,
    prepared: Prepared,
) -> Result<ImportReport, IngestError> {
    let mut archive = Archive::open(path)?;
    archive.fill_holes(
        prepared
            .layers
            .values()
            .map(|layer| {
                let substitute = Substitute {
                    path: layer.blob.path.clone(),
                    gzip: layer.row.media_type == OCI_LAYER_GZIP,
                };
                (layer.offset, substitute)
            })
            .collect(),
    );
    let mut staging = Staging::new(store, labels, prepared.layers)?;
    let top = if archive.contains("index.json") {
        oci::ingest(&archive, &mut staging)?
    } else if archive.contains("manifest.json") {
        docker::ingest(&archive, &mut staging)?
    } else {
        return Err(IngestError::NotAnArchive {
            path: path.to_owned(),
            reason: "it has neither index.json (OCI layout) nor manifest.json (docker save)".into(),
        });
    };
    let report = ImportReport {
        repo: repo.clone(),
        tag: tag.clone(),
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        platforms: staging.platforms.clone(),
        layers_compressed: staging.layers_compressed,
        layers_reused: staging.layers_reused,
        layers_copied: staging.layers_copied,
    };
    staging.commit(repo, Some(tag))?;
    tracing::info!(%repo, %tag, digest = %report.digest, "image stored");
    Ok(report)
}

/// A manifest or index as stored: what a parent descriptor needs.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

pub(crate) fn parse_digest(text: &str, what: &str) -> Result<Digest, IngestError> {
    Digest::parse(text).map_err(|e| IngestError::Invalid(format!("{what}: {e}")))
}
