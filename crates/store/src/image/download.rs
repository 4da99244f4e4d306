//! An image as one archive that `docker load` accepts, built from stored blobs: an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`) with the `manifest.json` of
//! `docker save`, whose layers are the stored gzip blobs (docker decompresses them on load).
//! Fixed order, times, owners and modes make it the same bytes every time, so its checksums
//! are computed once and stored.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};

use buildgrid_core::media_type::{self, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use buildgrid_core::{Digest, RepoName};
use md5::Md5;
use serde::Serialize;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

use super::details::{digest_at, read_json};
use crate::{ArchiveChecksums, Store, StoreError};

/// Writes the archive of the image manifest `digest` of `repo` into `out`, naming the image
/// `repo_tag` (`host/name:tag`) for `docker load` when given. Returns the archive's checksums
/// (stored on first write); `None` when the repository has no such image manifest (an index,
/// an artifact).
pub fn write_image_archive(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    repo_tag: Option<&str>,
    out: &mut dyn Write,
) -> Result<Option<ArchiveChecksums>, StoreError> {
    let Some(members) = members(store, repo, digest, repo_tag)? else {
        return Ok(None);
    };
    let key = repo_tag.unwrap_or("");
    if let Some(sums) = store.db.archive_checksums(digest, key)? {
        write(store, &members, out)?;
        return Ok(Some(sums));
    }
    let sums = write_hashing(store, &members, out)?;
    store.db.add_archive_checksums(digest, key, &sums)?;
    Ok(Some(sums))
}

/// The size and checksums of the archive `write_image_archive` writes, computed (by writing it
/// nowhere) on the first request and stored.
pub fn archive_checksums(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    repo_tag: Option<&str>,
) -> Result<Option<ArchiveChecksums>, StoreError> {
    if store.db.manifest_by_digest(repo, digest)?.is_none() {
        return Ok(None);
    }
    if let Some(sums) = store.db.archive_checksums(digest, repo_tag.unwrap_or(""))? {
        return Ok(Some(sums));
    }
    write_image_archive(store, repo, digest, repo_tag, &mut io::sink())
}

enum Content {
    Dir,
    Bytes(Vec<u8>),
    Blob(Digest, u64),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// The archive's members in order; `None` when `repo` has no such image manifest.
fn members(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    repo_tag: Option<&str>,
) -> Result<Option<Vec<(String, Content)>>, StoreError> {
    let Some(row) = store.db.manifest_by_digest(repo, digest)? else {
        return Ok(None);
    };
    if media_type::is_index(&row.media_type) {
        return Ok(None);
    }
    let manifest = read_json(store, digest)?;
    if manifest
        .pointer("/config/mediaType")
        .and_then(Value::as_str)
        != Some(OCI_CONFIG)
    {
        return Ok(None); // an artifact, not an image docker could load
    }
    let size_of = |descriptor: &Value| descriptor.get("size").and_then(Value::as_u64);
    let config = digest_at(&manifest, "/config/digest", digest)?;
    let mut blobs = vec![(config.clone(), size_of(&manifest["config"]))];
    let mut layers = Vec::new();
    let descriptors = manifest.get("layers").and_then(Value::as_array);
    for layer in descriptors.into_iter().flatten() {
        let layer_digest = digest_at(layer, "/digest", digest)?;
        layers.push(blob_path(&layer_digest));
        blobs.push((layer_digest, size_of(layer)));
    }
    blobs.push((digest.clone(), Some(row.size)));
    let mut members = vec![
        ("blobs/".to_owned(), Content::Dir),
        ("blobs/sha256/".to_owned(), Content::Dir),
    ];
    for (blob, size) in blobs {
        let path = blob_path(&blob);
        if members.iter().any(|(p, _)| *p == path) {
            continue; // a layer repeated in the image is stored once
        }
        let size = size.ok_or_else(|| StoreError::Unreadable {
            digest: digest.clone(),
            reason: format!("the descriptor of {blob} has no size"),
        })?;
        members.push((path, Content::Blob(blob, size)));
    }
    let mut annotations = BTreeMap::new();
    if let Some(name) = repo_tag {
        annotations.insert("io.containerd.image.name", name.to_owned());
        let tag = name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| !t.contains('/'));
        if let Some(tag) = tag {
            annotations.insert("org.opencontainers.image.ref.name", tag.to_owned());
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: vec![Descriptor {
            media_type: OCI_MANIFEST,
            digest: digest.to_string(),
            size: row.size,
            annotations,
        }],
    };
    let docker = [DockerManifestEntry {
        config: blob_path(&config),
        repo_tags: repo_tag.map(|t| vec![t.to_owned()]),
        layers,
    }];
    // Structs, not `json!` maps: their field order is fixed whatever serde_json's features.
    let index = serde_json::to_vec(&index).expect("plain structs serialize");
    let docker = serde_json::to_vec(&docker).expect("plain structs serialize");
    members.push(("index.json".into(), Content::Bytes(index)));
    members.push(("manifest.json".into(), Content::Bytes(docker)));
    members.push((
        "oci-layout".into(),
        Content::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ));
    Ok(Some(members))
}

fn write(
    store: &Store,
    members: &[(String, Content)],
    out: &mut dyn Write,
) -> Result<(), StoreError> {
    let mut builder = tar::Builder::new(out);
    for (path, content) in members {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let result = match content {
            Content::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, io::empty())
            }
            Content::Bytes(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, path, bytes.as_slice())
            }
            Content::Blob(digest, size) => {
                let file = open_blob(store, digest, *size)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(*size);
                let reader = BufReader::with_capacity(1 << 20, file).take(*size);
                builder.append_data(&mut header, path, reader)
            }
        };
        result.map_err(StoreError::Write)?;
    }
    builder.into_inner().map_err(StoreError::Write)?;
    Ok(())
}

/// A stored blob of exactly `size` bytes.
fn open_blob(
    store: &Store,
    digest: &Digest,
    size: u64,
) -> Result<Box<dyn io::Read + Send>, StoreError> {
    let len = store
        .blobs
        .stat(digest)?
        .ok_or_else(|| StoreError::BlobMissing(digest.clone()))?;
    if len != size {
        return Err(store.blobs.read_error(
            digest,
            io::Error::other(format!(
                "the blob has {len} bytes, its descriptor says {size}"
            )),
        ));
    }
    store.blobs.reader(digest)
}

/// Writes `members` into `out` and returns their checksums. MD5 and SHA-1 are computed on a
/// second thread, SHA-256 and SHA-512 on this one: about twice as fast on two cores.
fn write_hashing(
    store: &Store,
    members: &[(String, Content)],
    out: &mut dyn Write,
) -> Result<ArchiveChecksums, StoreError> {
    std::thread::scope(|scope| {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let helper = scope.spawn(move || {
            let (mut md5, mut sha1) = (Md5::new(), Sha1::new());
            for chunk in received {
                md5.update(&chunk);
                sha1.update(&chunk);
            }
            (hex::encode(md5.finalize()), hex::encode(sha1.finalize()))
        });
        let mut hashing = Hashing {
            out,
            chunks,
            size: 0,
            sha256: Sha256::new(),
            sha512: Sha512::new(),
        };
        let written = write(store, members, &mut hashing);
        let Hashing {
            chunks,
            size,
            sha256,
            sha512,
            ..
        } = hashing;
        drop(chunks);
        let (md5, sha1) = helper.join().expect("the hashing thread does not panic");
        written?;
        Ok(ArchiveChecksums {
            size,
            md5,
            sha1,
            sha256: hex::encode(sha256.finalize()),
            sha512: hex::encode(sha512.finalize()),
        })
    })
}

/// Passes bytes on to `out`, hashes them, and sends them to the other hashing thread.
struct Hashing<'a> {
    out: &'a mut dyn Write,
    chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
    size: u64,
    sha256: Sha256,
    sha512: Sha512,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        let written = &buf[..n];
        self.size += n as u64;
        self.chunks
            .send(written.to_vec())
            .map_err(|_| io::Error::other("the hashing thread stopped"))?;
        self.sha256.update(written);
        self.sha512.update(written);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
