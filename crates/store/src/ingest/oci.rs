//! The OCI image layout: `index.json` and `blobs/<alg>/<hex>`, as written by Docker 25+
//! `docker save`, `skopeo copy … oci-archive:` and other OCI tools.

use buildgrid_core::Digest;
use buildgrid_core::media_type::{
    self, DOCKER_CONFIG, DOCKER_LAYER_GZIP, LayerCompression, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER_GZIP, OCI_MANIFEST,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::archive::Archive;
use super::stage::Staging;
use super::{IngestError, Stored, parse_digest};
use crate::ManifestRecord;

/// The parts of an image configuration ingest needs.
#[derive(Deserialize)]
pub(super) struct ConfigSummary {
    pub rootfs: RootFs,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RootFs {
    pub diff_ids: Vec<String>,
}

impl ConfigSummary {
    pub(super) fn platform(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}/{}/{variant}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, IngestError> {
    serde_json::from_slice(bytes).map_err(|e| IngestError::Invalid(format!("{what}: {e}")))
}

pub(super) fn ingest(archive: &Archive, staging: &mut Staging<'_>) -> Result<Stored, IngestError> {
    let index: Value = parse_json(&archive.read_json_file("index.json")?, "index.json")?;
    let mut entries = descriptors(&index, "manifests", "index.json")?;
    // `docker save` of one image under several tags lists it once per tag.
    let mut seen = Vec::new();
    entries.retain(|d| {
        let digest = d.get("digest").and_then(Value::as_str).unwrap_or("");
        let first = !seen.contains(&digest);
        seen.push(digest);
        first
    });
    match entries.as_slice() {
        [] => Err(IngestError::Invalid("index.json lists no image".into())),
        [entry] => {
            let stored = ingest_manifest(archive, staging, entry)?;
            Ok(stored.expect("a lone entry is required"))
        }
        many => {
            let platforms: Vec<Option<&Value>> = many.iter().map(|d| d.get("platform")).collect();
            let distinct = platforms.iter().all(Option::is_some)
                && (1..platforms.len()).all(|i| !platforms[..i].contains(&platforms[i]));
            if !distinct {
                let names: Vec<&str> = many
                    .iter()
                    .map(|d| {
                        d.pointer("/annotations/io.containerd.image.name")
                            .or_else(|| d.pointer("/annotations/org.opencontainers.image.ref.name"))
                            .or_else(|| d.get("digest"))
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                    })
                    .collect();
                return Err(IngestError::Invalid(format!(
                    "index.json lists {} images ({}); an archive must hold one image, or one per platform",
                    many.len(),
                    names.join(", ")
                )));
            }
            let index = json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": many,
            });
            let bytes = serde_json::to_vec(&index).expect("JSON values serialize");
            ingest_index_bytes(archive, staging, &bytes, OCI_INDEX)
        }
    }
}

fn descriptors<'v>(
    value: &'v Value,
    field: &str,
    what: &str,
) -> Result<Vec<&'v Value>, IngestError> {
    let list = value
        .get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| IngestError::Invalid(format!("{what} has no {field} list")))?;
    Ok(list.iter().collect())
}

fn field<'v>(descriptor: &'v Value, name: &str, what: &str) -> Result<&'v str, IngestError> {
    descriptor
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| IngestError::Invalid(format!("a descriptor in {what} has no {name}")))
}

fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Reads a blob of the layout and checks it against its digest.
fn read_blob(archive: &Archive, digest: &Digest) -> Result<Vec<u8>, IngestError> {
    let member = blob_member(digest);
    let bytes = archive.read_json_file(&member)?;
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(IngestError::Corrupt {
            member,
            expected: digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Stores the manifest or index a descriptor points to. `None` when its blob is absent from
/// the archive and `optional` allowed that.
fn ingest_descriptor(
    archive: &Archive,
    staging: &mut Staging<'_>,
    descriptor: &Value,
    optional: bool,
) -> Result<Option<Stored>, IngestError> {
    let media_type = field(descriptor, "mediaType", "index")?;
    let digest = parse_digest(field(descriptor, "digest", "index")?, "index entry")?;
    if optional && !archive.contains(&blob_member(&digest)) {
        tracing::warn!(%digest, "the archive lacks one platform of the index; leaving it out");
        return Ok(None);
    }
    let bytes = read_blob(archive, &digest)?;
    let stored = if media_type::is_index(media_type) {
        ingest_index_bytes(archive, staging, &bytes, media_type)?
    } else if media_type::is_manifest(media_type) {
        ingest_manifest_bytes(archive, staging, &bytes, media_type)?
    } else {
        return Err(IngestError::Invalid(format!(
            "{digest} has media type {media_type}, which is neither an image manifest nor an index"
        )));
    };
    if stored.digest != digest {
        staging.renamed.insert(digest, stored.clone());
    }
    Ok(Some(stored))
}

/// Whether a manifest of the archive refers to another (`subject`); such manifests are stored
/// after the others, so that they can follow a subject whose digest ingest changed.
fn has_subject(archive: &Archive, descriptor: &Value) -> bool {
    let Some(digest) = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .and_then(|d| Digest::parse(d).ok())
    else {
        return false;
    };
    read_blob(archive, &digest)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|manifest| manifest.get("subject").is_some())
}

/// Points `subject` at the stored digest when ingest changed the subject's digest.
fn follow_subject(manifest: &mut Value, staging: &Staging<'_>) -> Result<bool, IngestError> {
    let Some(subject) = subject_of(manifest)? else {
        return Ok(false);
    };
    let Some(stored) = staging.renamed.get(&subject) else {
        return Ok(false);
    };
    manifest["subject"]["digest"] = json!(stored.digest.to_string());
    manifest["subject"]["size"] = json!(stored.size);
    manifest["subject"]["mediaType"] = json!(stored.media_type);
    Ok(true)
}

fn ingest_manifest(
    archive: &Archive,
    staging: &mut Staging<'_>,
    descriptor: &Value,
) -> Result<Option<Stored>, IngestError> {
    ingest_descriptor(archive, staging, descriptor, false)
}

fn ingest_index_bytes(
    archive: &Archive,
    staging: &mut Staging<'_>,
    bytes: &[u8],
    media_type: &str,
) -> Result<Stored, IngestError> {
    let mut index: Value = parse_json(bytes, "image index")?;
    let mut changed = media_type != OCI_INDEX;
    changed |= follow_subject(&mut index, staging)?;
    let children: Vec<Value> = descriptors(&index, "manifests", "image index")?
        .into_iter()
        .cloned()
        .collect();
    let mut order: Vec<usize> = (0..children.len()).collect();
    order.sort_by_key(|&i| has_subject(archive, &children[i]));
    let mut stored_children = vec![None; children.len()];
    for i in order {
        stored_children[i] = ingest_descriptor(archive, staging, &children[i], true)?;
    }
    let mut kept = Vec::with_capacity(children.len());
    for (mut child, stored) in children.into_iter().zip(stored_children) {
        let Some(stored) = stored else {
            changed = true;
            continue;
        };
        let old_digest = child.get("digest").and_then(Value::as_str).unwrap_or("");
        if old_digest != stored.digest.to_string() {
            changed = true;
        }
        child["mediaType"] = json!(stored.media_type);
        child["digest"] = json!(stored.digest.to_string());
        child["size"] = json!(stored.size);
        kept.push(child);
    }
    if kept.is_empty() {
        return Err(IngestError::Invalid(
            "the archive holds none of the images its index lists".into(),
        ));
    }
    let bytes = if changed {
        index["mediaType"] = json!(OCI_INDEX);
        index["manifests"] = Value::Array(kept);
        serde_json::to_vec(&index).expect("JSON values serialize")
    } else {
        bytes.to_vec()
    };
    record(staging, &bytes, &index, OCI_INDEX, None)
}

fn subject_of(manifest: &Value) -> Result<Option<Digest>, IngestError> {
    match manifest.pointer("/subject/digest").and_then(Value::as_str) {
        Some(text) => Ok(Some(parse_digest(text, "subject")?)),
        None => Ok(None),
    }
}

fn ingest_manifest_bytes(
    archive: &Archive,
    staging: &mut Staging<'_>,
    bytes: &[u8],
    media_type: &str,
) -> Result<Stored, IngestError> {
    let mut manifest: Value = parse_json(bytes, "image manifest")?;
    let mut changed = media_type != OCI_MANIFEST;
    changed |= follow_subject(&mut manifest, staging)?;

    let config = manifest
        .get("config")
        .cloned()
        .ok_or_else(|| IngestError::Invalid("an image manifest has no config".into()))?;
    let config_type = field(&config, "mediaType", "manifest config")?.to_owned();
    let config_digest = parse_digest(field(&config, "digest", "manifest config")?, "config")?;
    let config_bytes = read_blob(archive, &config_digest)?;
    let is_image = config_type == OCI_CONFIG || config_type == DOCKER_CONFIG;
    let summary: Option<ConfigSummary> = if is_image {
        let summary: ConfigSummary = parse_json(&config_bytes, "image config")?;
        staging.platforms.push(summary.platform());
        Some(summary)
    } else {
        None
    };
    let stored_config = staging.config(&config_bytes)?;
    if stored_config.digest != config_digest {
        manifest["config"]["digest"] = json!(stored_config.digest.to_string());
        manifest["config"]["size"] = json!(stored_config.size);
        changed = true;
    }
    if config_type == DOCKER_CONFIG {
        manifest["config"]["mediaType"] = json!(OCI_CONFIG);
        changed = true;
    }

    let layers: Vec<Value> = descriptors(&manifest, "layers", "image manifest")?
        .into_iter()
        .cloned()
        .collect();
    let mut new_layers = Vec::with_capacity(layers.len());
    for (i, mut layer) in layers.into_iter().enumerate() {
        let layer_type = field(&layer, "mediaType", "image manifest")?.to_owned();
        let digest = parse_digest(field(&layer, "digest", "image manifest")?, "layer")?;
        let member = blob_member(&digest);
        let diff_id = match summary.as_ref().and_then(|s| s.rootfs.diff_ids.get(i)) {
            Some(text) => Some(parse_digest(text, "image config diff id")?),
            None => None,
        };
        let reader =
            || -> Result<Box<dyn std::io::BufRead>, IngestError> { archive.reader(&member) };
        let stored = match media_type::layer_compression(&layer_type) {
            Some(LayerCompression::None) => {
                // An uncompressed layer's digest is its diff id.
                staging.uncompressed_layer(&member, &digest, reader)?
            }
            Some(LayerCompression::Gzip) => {
                let stored_type = if layer_type == DOCKER_LAYER_GZIP {
                    OCI_LAYER_GZIP
                } else {
                    layer_type.as_str()
                };
                staging.compressed_layer(
                    &member,
                    Some(&digest),
                    stored_type,
                    reader()?,
                    diff_id.as_ref(),
                )?
            }
            _ => staging.compressed_layer(&member, Some(&digest), &layer_type, reader()?, None)?,
        };
        if stored.digest != digest || stored.media_type != layer_type {
            changed = true;
        }
        layer["mediaType"] = json!(stored.media_type);
        layer["digest"] = json!(stored.digest.to_string());
        layer["size"] = json!(stored.size);
        new_layers.push(layer);
    }
    let layer_count = new_layers.len();
    let bytes = if changed {
        manifest["mediaType"] = json!(OCI_MANIFEST);
        manifest["layers"] = Value::Array(new_layers);
        serde_json::to_vec(&manifest).expect("JSON values serialize")
    } else {
        bytes.to_vec()
    };
    // Without an artifactType, a manifest's artifact type is its config's media type.
    let config_type = config_type.replace(DOCKER_CONFIG, OCI_CONFIG);
    let stored = record(staging, &bytes, &manifest, OCI_MANIFEST, Some(&config_type))?;
    if let Some(summary) = summary
        && summary.rootfs.diff_ids.len() == layer_count
    {
        let diff_ids = summary
            .rootfs
            .diff_ids
            .iter()
            .map(|d| parse_digest(d, "image config diff id"))
            .collect::<Result<Vec<_>, _>>()?;
        staging.images.push((stored.digest.clone(), diff_ids));
    }
    Ok(stored)
}

/// Stages a manifest or index as stored (`bytes`, parsed as `value`) and records what the
/// referrers API needs of it.
fn record(
    staging: &mut Staging<'_>,
    bytes: &[u8],
    value: &Value,
    media_type: &str,
    default_artifact_type: Option<&str>,
) -> Result<Stored, IngestError> {
    let artifact_type = value
        .get("artifactType")
        .and_then(Value::as_str)
        .or(default_artifact_type)
        .map(str::to_owned);
    let subject = subject_of(value)?;
    let annotations = value.get("annotations").map(Value::to_string);
    staging.manifest(bytes, |digest, size| ManifestRecord {
        digest,
        media_type: media_type.to_owned(),
        size,
        artifact_type,
        subject,
        annotations,
    })
}
