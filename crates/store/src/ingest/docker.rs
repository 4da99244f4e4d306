//! The layout `docker save` writes on engines before Docker 25: `manifest.json`, a config
//! `<hex>.json` and uncompressed `<id>/layer.tar` files.

use buildgrid_core::media_type::{OCI_CONFIG, OCI_MANIFEST};
use serde::Deserialize;
use serde_json::json;

use super::archive::Archive;
use super::oci::{ConfigSummary, parse_json};
use super::stage::Staging;
use super::{IngestError, Stored, parse_digest};
use crate::ManifestRecord;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub(super) fn ingest(archive: &Archive, staging: &mut Staging<'_>) -> Result<Stored, IngestError> {
    let entries: Vec<ManifestEntry> =
        parse_json(&archive.read_json_file("manifest.json")?, "manifest.json")?;
    let entry = match entries.as_slice() {
        [entry] => entry,
        [] => return Err(IngestError::Invalid("manifest.json lists no image".into())),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|e| {
                    e.repo_tags
                        .as_ref()
                        .and_then(|t| t.first().cloned())
                        .unwrap_or_else(|| e.config.clone())
                })
                .collect();
            return Err(IngestError::Invalid(format!(
                "the archive holds {} images ({}); save one image per archive",
                many.len(),
                names.join(", ")
            )));
        }
    };
    let config_bytes = archive.read_json_file(&entry.config)?;
    let config: ConfigSummary = parse_json(&config_bytes, &entry.config)?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(IngestError::Invalid(format!(
            "{} lists {} layers but manifest.json lists {}",
            entry.config,
            config.rootfs.diff_ids.len(),
            entry.layers.len()
        )));
    }
    let config_blob = staging.config(&config_bytes)?;
    let mut layers = Vec::with_capacity(entry.layers.len());
    let mut diff_ids = Vec::with_capacity(entry.layers.len());
    for (member, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let diff_id = parse_digest(diff_id, &format!("{} diff id", entry.config))?;
        diff_ids.push(diff_id.clone());
        staging
            .legacy_paths
            .push((super::archive::normalize(member), diff_id.clone()));
        let layer = staging.uncompressed_layer(member, &diff_id, || archive.reader(member))?;
        layers.push(json!({
            "mediaType": layer.media_type,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        }));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_blob.digest.to_string(),
            "size": config_blob.size,
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).expect("JSON values serialize");
    staging.platforms.push(config.platform());
    let stored = staging.manifest(&bytes, |digest, size| ManifestRecord {
        digest,
        media_type: OCI_MANIFEST.to_owned(),
        size,
        artifact_type: Some(OCI_CONFIG.to_owned()),
        subject: None,
        annotations: None,
    })?;
    staging.images.push((stored.digest.clone(), diff_ids));
    Ok(stored)
}
