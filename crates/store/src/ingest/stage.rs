//! Staged blobs and rows of one ingest, published together at the end.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};

use buildgrid_core::media_type::{LayerCompression, OCI_LAYER_GZIP};
use buildgrid_core::{Digest, RepoName, Sha256Writer, Tag};
use flate2::bufread::MultiGzDecoder;

use super::compress::compress_layer;
use super::spool::PreparedLayer;
use super::{IngestError, Stored};
use crate::blobs::stage_bytes;
use crate::image::collect::read_layer;
use crate::image::{self, LayerFiles};
use crate::{
    BlobRow, BlobWriter, ImageRecord, LayerRow, ManifestRecord, StagedBlob, Store, StoreError,
};

pub(crate) struct Staging<'a> {
    store: &'a Store,
    /// Held from before a stored layer is looked up until the image's rows commit, so that
    /// collection never deletes what this ingest relies on (see `gc`).
    _lock: crate::gc::CollectionLock,
    dir: tempfile::TempDir,
    staged: Vec<StagedBlob>,
    blobs: Vec<BlobRow>,
    repo_blobs: Vec<Digest>,
    layers: Vec<LayerRow>,
    manifests: Vec<ManifestRecord>,
    layers_by_diff_id: HashMap<Digest, LayerRow>,
    /// Layers compressed ahead, while the archive was still arriving (see `spool_archive`).
    prepared: HashMap<Digest, PreparedLayer>,
    /// File lists of the layers this ingest read, by diff id.
    layer_files: HashMap<Digest, LayerFiles>,
    /// Image manifests stored and their layers' diff ids, lowest first.
    pub images: Vec<(Digest, Vec<Digest>)>,
    /// Labels added to every image configuration.
    labels: BTreeMap<String, String>,
    /// Manifests whose digest ingest changed (by compressing layers): archive digest → stored.
    pub renamed: HashMap<Digest, Stored>,
    pub platforms: Vec<String>,
    pub legacy_paths: Vec<(String, Digest)>,
    pub layers_compressed: usize,
    pub layers_reused: usize,
    pub layers_copied: usize,
}

/// A layer as the new manifest describes it.
pub(crate) struct StoredLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl<'a> Staging<'a> {
    pub(crate) fn new(
        store: &'a Store,
        labels: &BTreeMap<String, String>,
        prepared: HashMap<Digest, PreparedLayer>,
    ) -> Result<Staging<'a>, IngestError> {
        Ok(Staging {
            _lock: store.ingest_lock()?,
            store,
            prepared,
            labels: labels.clone(),
            dir: store.blobs.scratch()?,
            staged: Vec::new(),
            blobs: Vec::new(),
            repo_blobs: Vec::new(),
            layers: Vec::new(),
            manifests: Vec::new(),
            layers_by_diff_id: HashMap::new(),
            layer_files: HashMap::new(),
            images: Vec::new(),
            renamed: HashMap::new(),
            platforms: Vec::new(),
            legacy_paths: Vec::new(),
            layers_compressed: 0,
            layers_reused: 0,
            layers_copied: 0,
        })
    }

    /// Stages a config blob (kept byte for byte, so the image ID stays the same).
    pub(crate) fn config(&mut self, bytes: &[u8]) -> Result<BlobRow, IngestError> {
        let labelled;
        let bytes = if self.labels.is_empty() {
            bytes
        } else {
            labelled = with_labels(bytes, &self.labels)?;
            &labelled
        };
        let blob = stage_bytes(self.dir.path(), bytes)?;
        let row = BlobRow {
            digest: blob.digest.clone(),
            size: blob.size,
        };
        self.repo_blobs.push(blob.digest.clone());
        self.blobs.push(row.clone());
        self.staged.push(blob);
        Ok(row)
    }

    /// Stages a manifest or index and records it.
    pub(crate) fn manifest(
        &mut self,
        bytes: &[u8],
        record: impl FnOnce(Digest, u64) -> ManifestRecord,
    ) -> Result<Stored, IngestError> {
        let blob = stage_bytes(self.dir.path(), bytes)?;
        let record = record(blob.digest.clone(), blob.size);
        let stored = Stored {
            digest: record.digest.clone(),
            media_type: record.media_type.clone(),
            size: record.size,
        };
        self.blobs.push(BlobRow {
            digest: blob.digest.clone(),
            size: blob.size,
        });
        self.staged.push(blob);
        self.manifests.push(record);
        Ok(stored)
    }

    fn known_layer(&self, diff_id: &Digest) -> Result<Option<LayerRow>, StoreError> {
        if let Some(layer) = self.layers_by_diff_id.get(diff_id) {
            return Ok(Some(layer.clone()));
        }
        self.store.db.layer_by_diff_id(diff_id)
    }

    fn use_layer(&mut self, layer: LayerRow) -> StoredLayer {
        self.repo_blobs.push(layer.digest.clone());
        self.blobs.push(BlobRow {
            digest: layer.digest.clone(),
            size: layer.size,
        });
        self.layers_by_diff_id
            .insert(layer.diff_id.clone(), layer.clone());
        self.layers.push(layer.clone());
        StoredLayer {
            digest: layer.digest,
            size: layer.size,
            media_type: layer.media_type,
        }
    }

    /// Stores an uncompressed layer compressed with gzip, or reuses the stored blob of the same
    /// diff id. `diff_id` is what the image config declares; the content is checked against it.
    pub(crate) fn uncompressed_layer(
        &mut self,
        member: &str,
        diff_id: &Digest,
        content: impl FnOnce() -> Result<Box<dyn BufRead>, IngestError>,
    ) -> Result<StoredLayer, IngestError> {
        if let Some(layer) = self.known_layer(diff_id)? {
            self.layers_reused += 1;
            if !self.layer_files.contains_key(diff_id) && !self.store.db.has_layer_files(diff_id)? {
                self.list_known_layer(member, diff_id, content()?)?;
            }
            return Ok(self.use_layer(layer));
        }
        if let Some(prepared) = self.prepared.remove(diff_id) {
            self.staged.push(prepared.blob);
            self.layers_compressed += 1;
            if let Some(files) = prepared.files {
                self.layer_files.insert(diff_id.clone(), files);
            }
            return Ok(self.use_layer(prepared.row));
        }
        let mut input = content()?;
        let peek = input.fill_buf().map_err(|e| read_error(member, e))?;
        if peek.starts_with(&[0x1f, 0x8b]) {
            // Some tools write compressed layers where docker writes plain tars.
            return self.compressed_layer(member, None, OCI_LAYER_GZIP, input, Some(diff_id));
        }
        let (layer, blob, files) = compress_layer(self.dir.path(), member, &mut input)?;
        if layer.diff_id != *diff_id {
            return Err(IngestError::Corrupt {
                member: member.to_owned(),
                expected: diff_id.clone(),
                actual: layer.diff_id,
            });
        }
        self.staged.push(blob);
        self.layers_compressed += 1;
        if let Some(files) = files {
            self.layer_files.insert(layer.diff_id.clone(), files);
        }
        Ok(self.use_layer(layer))
    }

    /// Lists a layer stored before ingest listed files, from its copy in the archive. The
    /// content must be the layer the store has; if it is not, the layer stays unlisted.
    fn list_known_layer(
        &mut self,
        member: &str,
        diff_id: &Digest,
        mut input: Box<dyn BufRead>,
    ) -> Result<(), IngestError> {
        let mut hash = Sha256Writer::new();
        let peek = input.fill_buf().map_err(|e| read_error(member, e))?;
        let files = if peek.starts_with(&[0x1f, 0x8b]) {
            read_layer(&mut MultiGzDecoder::new(input), &mut hash)
        } else {
            read_layer(&mut input, &mut hash)
        };
        let files = files.map_err(|e| read_error(member, e))?;
        let (actual, _) = hash.finish();
        match files {
            Some(files) if actual == *diff_id => {
                self.layer_files.insert(actual, files);
            }
            _ => tracing::warn!(%member, %diff_id, "could not list the files of a stored layer"),
        }
        Ok(())
    }

    /// Stores an already compressed layer as it is, verified against `digest` when known. A gzip
    /// layer is also decompressed to check its diff id, so that later images may reuse it.
    pub(crate) fn compressed_layer(
        &mut self,
        member: &str,
        digest: Option<&Digest>,
        media_type: &str,
        mut input: Box<dyn BufRead>,
        diff_id: Option<&Digest>,
    ) -> Result<StoredLayer, IngestError> {
        let compression = buildgrid_core::media_type::layer_compression(media_type);
        let mut writer = BlobWriter::create(self.dir.path())?;
        let mut files = None;
        let actual_diff_id = if compression == Some(LayerCompression::Gzip) {
            let mut uncompressed = Sha256Writer::new();
            let tee = Tee {
                inner: &mut input,
                copy: &mut writer,
            };
            let mut decoder = MultiGzDecoder::new(BufReader::with_capacity(1 << 20, tee));
            files =
                read_layer(&mut decoder, &mut uncompressed).map_err(|e| read_error(member, e))?;
            // Whatever follows the gzip stream is part of the blob too.
            let mut rest = decoder.into_inner();
            io::copy(&mut rest, &mut io::sink()).map_err(|e| read_error(member, e))?;
            Some(uncompressed.finish().0)
        } else {
            io::copy(&mut input, &mut writer).map_err(|e| read_error(member, e))?;
            None
        };
        let blob = writer.finish(digest).map_err(|e| match e {
            StoreError::DigestMismatch { expected, actual } => IngestError::Corrupt {
                member: member.to_owned(),
                expected,
                actual,
            },
            e => e.into(),
        })?;
        if let (Some(expected), Some(actual)) = (diff_id, &actual_diff_id)
            && expected != actual
        {
            return Err(IngestError::Corrupt {
                member: format!("{member} (uncompressed)"),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
        let row = BlobRow {
            digest: blob.digest.clone(),
            size: blob.size,
        };
        let stored = StoredLayer {
            digest: blob.digest.clone(),
            size: blob.size,
            media_type: media_type.to_owned(),
        };
        self.staged.push(blob);
        self.layers_copied += 1;
        match actual_diff_id {
            Some(diff_id) => {
                if let Some(files) = files {
                    self.layer_files.insert(diff_id.clone(), files);
                }
                self.use_layer(LayerRow {
                    diff_id,
                    digest: row.digest,
                    size: row.size,
                    media_type: media_type.to_owned(),
                });
            }
            None => {
                self.repo_blobs.push(row.digest.clone());
                self.blobs.push(row);
            }
        }
        Ok(stored)
    }

    /// Publishes the staged blobs, then records everything in one transaction.
    pub(crate) fn commit(self, repo: &RepoName, tag: Option<&Tag>) -> Result<(), IngestError> {
        let mut image_files = Vec::new();
        let mut trees = Vec::new();
        for (digest, diff_ids) in &self.images {
            if let Some(tree) = image::tree_of(self.store, diff_ids, &self.layer_files)? {
                image_files.push(image::files_row(digest, diff_ids, &tree));
                trees.push((digest.clone(), tree));
            }
        }
        let mut layer_files: Vec<_> = self
            .layer_files
            .iter()
            .map(|(diff_id, files)| files.to_row(diff_id))
            .collect();
        layer_files.sort_by(|a, b| a.diff_id.cmp(&b.diff_id));
        self.store.blobs.publish(&self.staged)?;
        if let Some(pause) = self
            .store
            .between_publish_and_commit
            .lock()
            .unwrap()
            .as_ref()
        {
            pause();
        }
        self.store.db.commit_image(&ImageRecord {
            repo: repo.clone(),
            tag: tag.cloned(),
            blobs: self.blobs,
            repo_blobs: self.repo_blobs,
            layers: self.layers,
            manifests: self.manifests,
            legacy_paths: self.legacy_paths,
            layer_files,
            image_files,
        })?;
        // The page of a new image is likely to be looked at soon.
        for (digest, tree) in trees {
            self.store.trees.put(&digest, tree);
        }
        Ok(())
    }
}

/// A failure while a member is read and stored: a full disk is the store's, anything else the
/// archive's.
pub(super) fn read_error(member: &str, error: io::Error) -> IngestError {
    IngestError::from_io(member, error, |error| {
        IngestError::Invalid(format!("cannot read {member}: {error}"))
    })
}

/// Reads from `inner` and writes what it read into `copy`.
pub(crate) struct Tee<'w, R> {
    pub inner: R,
    pub copy: &'w mut dyn Write,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// An image configuration with `labels` added to `config.Labels`.
fn with_labels(bytes: &[u8], labels: &BTreeMap<String, String>) -> Result<Vec<u8>, IngestError> {
    let mut config: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| IngestError::Invalid(format!("image config: {e}")))?;
    let Some(object) = config.as_object_mut() else {
        return Err(IngestError::Invalid(
            "the image config is not a JSON object".into(),
        ));
    };
    let inner = object
        .entry("config")
        .or_insert_with(|| serde_json::json!({}));
    if inner.get("Labels").is_none_or(serde_json::Value::is_null) {
        inner["Labels"] = serde_json::json!({});
    }
    for (key, value) in labels {
        inner["Labels"][key] = serde_json::json!(value);
    }
    Ok(serde_json::to_vec(&config).expect("JSON values serialize"))
}
