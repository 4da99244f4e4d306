//! The *Details* of an image: what its manifest and config say, and what ingest collected.

use std::collections::BTreeMap;

use buildgrid_core::media_type;
use buildgrid_core::{Digest, RepoName};
use serde_json::Value;

use super::OsRelease;
use crate::{Store, StoreError};

/// An image manifest as the image page describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDetails {
    pub digest: Digest,
    pub manifest_size: u64,
    pub config_digest: Digest,
    /// `os/architecture[/variant]` from the config.
    pub platform: String,
    /// The config's `created` (RFC 3339), as the builder wrote it.
    pub created: Option<String>,
    /// When buildgrid stored the manifest in this repository (seconds since the epoch).
    pub stored_at: i64,
    /// Pulls of this manifest from this repository (manifest GETs; HEADs only check).
    pub downloads: u64,
    /// Whole downloads of this image's archive from the image page.
    pub archive_downloads: u64,
    /// The config's `ExposedPorts` (`8080/tcp`), in order.
    pub exposed_ports: Vec<String>,
    /// The config's labels (`org.opencontainers.image.*` among them).
    pub labels: BTreeMap<String, String>,
    /// Lowest first.
    pub layers: Vec<LayerDetails>,
    /// The config and the layers as stored (compressed), in bytes.
    pub compressed_size: u64,
    /// Base images (`FROM` lines) of a built image.
    pub bases: Vec<String>,
    /// `None`: the files were not collected (see `ImageFiles::NotCollected`).
    pub files: Option<FilesSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDetails {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// The uncompressed layer's digest, from the config.
    pub diff_id: Option<Digest>,
}

/// What the final file tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesSummary {
    /// Entries that are not directories.
    pub files: u64,
    /// Bytes of regular files, uncompressed.
    pub size: u64,
    /// From the tree's `etc/os-release` (or `usr/lib/os-release`), when it has one.
    pub os: Option<OsRelease>,
}

/// One image of a multi-platform index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// `os/architecture[/variant]`, or `unknown/unknown` (attestations).
    pub platform: String,
}

/// The details of the image manifest `digest` of `repo`; `None` when the repository has no
/// such manifest or it is an index (see `platform_manifests`).
pub fn image_details(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<ImageDetails>, StoreError> {
    let Some(row) = store.db.manifest_by_digest(repo, digest)? else {
        return Ok(None);
    };
    if media_type::is_index(&row.media_type) {
        return Ok(None);
    }
    let manifest = read_json(store, digest)?;
    let config_digest = digest_at(&manifest, "/config/digest", digest)?;
    let config = read_json(store, &config_digest)?;
    let diff_ids: Vec<Option<Digest>> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .map(|id| id.as_str().and_then(|id| Digest::parse(id).ok()))
                .collect()
        })
        .unwrap_or_default();
    let mut layers = Vec::new();
    let descriptors = manifest.get("layers").and_then(Value::as_array);
    for (i, layer) in descriptors.into_iter().flatten().enumerate() {
        layers.push(LayerDetails {
            digest: digest_at(layer, "/digest", digest)?,
            size: layer.get("size").and_then(Value::as_u64).unwrap_or(0),
            media_type: text(layer, "/mediaType").unwrap_or_default(),
            diff_id: diff_ids.get(i).cloned().flatten(),
        });
    }
    let config_size = manifest.pointer("/config/size").and_then(Value::as_u64);
    let compressed_size = config_size.unwrap_or(0) + layers.iter().map(|l| l.size).sum::<u64>();
    let labels = config
        .pointer("/config/Labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let files = store.db.image_files(repo, digest)?.map(|row| FilesSummary {
        files: row.files,
        size: row.size,
        os: row.os_release.as_deref().map(OsRelease::parse),
    });
    Ok(Some(ImageDetails {
        digest: digest.clone(),
        manifest_size: row.size,
        config_digest,
        platform: platform(&config),
        created: text(&config, "/created"),
        stored_at: store.db.manifest_stored_at(repo, digest)?.unwrap_or(0),
        downloads: store.db.downloads(repo, digest)?,
        archive_downloads: store.db.archive_downloads(repo, digest)?,
        exposed_ports: config
            .pointer("/config/ExposedPorts")
            .and_then(Value::as_object)
            .map(|ports| ports.keys().cloned().collect())
            .unwrap_or_default(),
        labels,
        layers,
        compressed_size,
        bases: store.db.image_bases(repo, digest)?,
        files,
    }))
}

/// The manifests an index of `repo` lists, in its order; `None` when the repository has no
/// such manifest or it is not an index.
pub fn platform_manifests(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<Vec<PlatformManifest>>, StoreError> {
    let Some(row) = store.db.manifest_by_digest(repo, digest)? else {
        return Ok(None);
    };
    if !media_type::is_index(&row.media_type) {
        return Ok(None);
    }
    let index = read_json(store, digest)?;
    let mut platforms = Vec::new();
    let entries = index.get("manifests").and_then(Value::as_array);
    for entry in entries.into_iter().flatten() {
        platforms.push(PlatformManifest {
            digest: digest_at(entry, "/digest", digest)?,
            media_type: text(entry, "/mediaType").unwrap_or_default(),
            size: entry.get("size").and_then(Value::as_u64).unwrap_or(0),
            platform: entry
                .get("platform")
                .map(platform)
                .unwrap_or_else(|| "unknown/unknown".into()),
        });
    }
    Ok(Some(platforms))
}

/// `os/architecture[/variant]` of a config or a descriptor's `platform`.
fn platform(value: &Value) -> String {
    let os = text(value, "/os").unwrap_or_else(|| "unknown".into());
    let arch = text(value, "/architecture").unwrap_or_else(|| "unknown".into());
    match text(value, "/variant") {
        Some(variant) => format!("{os}/{arch}/{variant}"),
        None => format!("{os}/{arch}"),
    }
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

pub(super) fn read_json(store: &Store, digest: &Digest) -> Result<Value, StoreError> {
    let bytes = store.blobs.read(digest)?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Unreadable {
        digest: digest.clone(),
        reason: e.to_string(),
    })
}

pub(super) fn digest_at(
    value: &Value,
    pointer: &str,
    within: &Digest,
) -> Result<Digest, StoreError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| StoreError::Unreadable {
            digest: within.clone(),
            reason: format!("no valid digest at {pointer}"),
        })
}
