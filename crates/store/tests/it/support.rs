//! A store in a temporary directory, synthetic image archives, and checks shared by the modules.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use buildgrid_core::media_type::{
    OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
use buildgrid_core::{Digest, RepoName, Tag};
use buildgrid_store::ingest::{ImportReport, IngestError, import_archive};
use buildgrid_store::{BlobRow, Store};
use serde_json::{Value, json};

/// A store whose data directory is `<dir>/data`; archives are written next to it.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

pub fn test_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    TestStore { dir, store }
}

impl TestStore {
    /// Writes `bytes` as `<dir>/<name>` and imports it as `repo:tag`.
    pub fn import(
        &self,
        name: &str,
        bytes: &[u8],
        repo: &str,
        tag: &str,
    ) -> Result<ImportReport, IngestError> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        import_archive(&self.store, &path, &repo_name(repo), &tag_name(tag))
    }
}

pub fn repo_name(text: &str) -> RepoName {
    RepoName::parse(text).unwrap()
}

pub fn tag_name(text: &str) -> Tag {
    Tag::parse(text).unwrap()
}

/// A member of a tar archive.
#[derive(Clone, Debug)]
pub enum Member {
    File(String, Vec<u8>),
    Symlink(String, String),
    Hardlink(String, String),
    /// A directory, mode 0755.
    Dir(String),
}

pub fn file(name: &str, bytes: impl Into<Vec<u8>>) -> Member {
    Member::File(name.to_owned(), bytes.into())
}

/// A tar of `members`, in that order, with fixed owners and times so that it is reproducible.
pub fn tar(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(0o644);
        match member {
            Member::File(name, bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                builder
                    .append_data(&mut header, name, bytes.as_slice())
                    .unwrap();
            }
            Member::Dir(name) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, name, std::io::empty())
                    .unwrap();
            }
            Member::Symlink(name, target) | Member::Hardlink(name, target) => {
                let kind = match member {
                    Member::Symlink(..) => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                };
                header.set_entry_type(kind);
                header.set_size(0);
                builder.append_link(&mut header, name, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// The content of a layer: a tar of a few files whose content depends on `seed`.
pub fn layer(seed: &str) -> Vec<u8> {
    tar(&[
        file(&format!("etc/{seed}.conf"), format!("name = {seed}\n")),
        file(
            "usr/bin/tool",
            format!("#!/bin/sh\necho {seed}\n").repeat(50),
        ),
        Member::Symlink(format!("usr/bin/{seed}"), "tool".to_owned()),
    ])
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// An image: its configuration and its uncompressed layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
}

impl Image {
    /// A linux image whose configuration declares the diff ids of `layers`.
    pub fn new(architecture: &str, layers: &[Vec<u8>]) -> Image {
        Image {
            config: image_config(architecture, layers),
            layers: layers.to_vec(),
        }
    }
}

pub fn image_config(architecture: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    json_bytes(&json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
}

/// The members of a legacy `docker save` archive holding `images` (each with its `RepoTags`
/// entry), in the order docker writes them: layer directories, configs, `manifest.json`. As
/// docker does, a layer seen before in the same image becomes a symlink to the first copy.
pub fn docker_save(images: &[(&str, &Image)]) -> Vec<Member> {
    let mut members = Vec::new();
    let mut manifest = Vec::new();
    for (repo_tag, image) in images {
        let mut parent = String::new();
        let mut first_copy: BTreeMap<Digest, String> = BTreeMap::new();
        let mut layer_paths = Vec::new();
        for layer in &image.layers {
            // Legacy layer ids chain the parent id, so a repeated layer gets a new directory.
            let diff_id = Digest::of(layer);
            let id = Digest::of(format!("{parent}{diff_id}").as_bytes())
                .hex()
                .to_owned();
            let path = format!("{id}/layer.tar");
            match first_copy.get(&diff_id) {
                Some(first) => members.push(Member::Symlink(path.clone(), format!("../{first}"))),
                None => {
                    members.push(file(&path, layer.clone()));
                    first_copy.insert(diff_id, path.clone());
                }
            }
            members.push(file(&format!("{id}/VERSION"), "1.0"));
            layer_paths.push(path);
            parent = id;
        }
        let config_name = format!("{}.json", Digest::of(&image.config).hex());
        members.push(file(&config_name, image.config.clone()));
        manifest.push(json!({
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_paths,
        }));
    }
    members.push(file("manifest.json", json_bytes(&Value::Array(manifest))));
    members
}

/// How an OCI archive holds its layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFormat {
    Tar,
    Gzip,
}

/// An image manifest and the blobs it references, as an OCI layout holds them.
#[derive(Clone, Debug)]
pub struct OciImage {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    /// The config, then the layers as stored in the archive.
    pub blobs: Vec<Vec<u8>>,
}

pub fn oci_image(image: &Image, format: LayerFormat) -> OciImage {
    let (media_type, layer_blobs): (&str, Vec<Vec<u8>>) = match format {
        LayerFormat::Tar => (OCI_LAYER_TAR, image.layers.clone()),
        LayerFormat::Gzip => (
            OCI_LAYER_GZIP,
            image.layers.iter().map(|l| gzip(l)).collect(),
        ),
    };
    let layers: Vec<Value> = layer_blobs
        .iter()
        .map(|blob| descriptor(media_type, blob))
        .collect();
    let manifest = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &image.config),
        "layers": layers,
    }));
    let mut blobs = vec![image.config.clone()];
    blobs.extend(layer_blobs);
    OciImage {
        digest: Digest::of(&manifest),
        manifest,
        blobs,
    }
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// `descriptor` with a linux platform.
pub fn platform_descriptor(media_type: &str, bytes: &[u8], architecture: &str) -> Value {
    let mut descriptor = descriptor(media_type, bytes);
    descriptor["platform"] = json!({"os": "linux", "architecture": architecture});
    descriptor
}

pub fn oci_index(manifests: &[Value]) -> Vec<u8> {
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
}

/// The members of an OCI layout archive: `oci-layout`, `index.json` listing `entries`, and
/// each blob (once) named by its digest.
pub fn oci_layout(entries: &[Value], blobs: &[&[u8]]) -> Vec<Member> {
    let mut members = vec![file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#)];
    let mut names = Vec::new();
    for blob in blobs {
        let name = blob_member(&Digest::of(blob));
        if !names.contains(&name) {
            members.push(file(&name, blob.to_vec()));
            names.push(name);
        }
    }
    members.push(file("index.json", oci_index(entries)));
    members
}

/// The members of an OCI layout archive holding one image manifest.
pub fn oci_single(image: &OciImage) -> Vec<Member> {
    let mut blobs: Vec<&[u8]> = image.blobs.iter().map(Vec::as_slice).collect();
    blobs.push(&image.manifest);
    oci_layout(&[descriptor(OCI_MANIFEST, &image.manifest)], &blobs)
}

pub fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// `members` with the content of the file `name` replaced.
pub fn with_file(members: &[Member], name: &str, bytes: &[u8]) -> Vec<Member> {
    let mut found = false;
    let members = members
        .iter()
        .map(|member| match member {
            Member::File(n, _) if n == name => {
                found = true;
                file(name, bytes)
            }
            other => other.clone(),
        })
        .collect();
    assert!(found, "no file {name} to replace");
    members
}

/// What a refused import must leave as it was: row counts, and every file (with its size)
/// under `blobs/` and `tmp/` of the data directory.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub rows: Vec<(String, i64)>,
    pub files: BTreeMap<PathBuf, u64>,
}

pub fn snapshot(store: &Store) -> Snapshot {
    let mut files = BTreeMap::new();
    for dir in ["blobs", "tmp"] {
        collect_files(store.root(), &store.root().join(dir), &mut files);
    }
    Snapshot {
        rows: store.db.row_counts().unwrap(),
        files,
    }
}

fn collect_files(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, u64>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            collect_files(root, &path, files);
        } else {
            let size = entry.metadata().unwrap().len();
            files.insert(path.strip_prefix(root).unwrap().to_owned(), size);
        }
    }
}

/// Every file under `blobs/sha256` is named `<2 hex>/<64 hex>` after the sha256 of its
/// content, and nothing is left in `tmp/`.
#[track_caller]
pub fn check_blob_files(store: &Store) {
    let files = snapshot(store).files;
    assert!(!files.is_empty());
    for path in files.keys() {
        let parts: Vec<&str> = path.iter().map(|p| p.to_str().unwrap()).collect();
        let ["blobs", "sha256", prefix, hex] = parts.as_slice() else {
            panic!("unexpected file {} in the data directory", path.display());
        };
        let content = std::fs::read(store.root().join(path)).unwrap();
        assert_eq!(Digest::of(&content).hex(), *hex, "{}", path.display());
        assert_eq!(&hex[..2], *prefix, "{}", path.display());
    }
}

/// The manifest `digest` of `repo` is an OCI image manifest of `image`: it, its config and its
/// layers (gzip-compressed, decompressing to the original tars) are on disk under their
/// sha256 and served for `repo`. Returns the manifest.
#[track_caller]
pub fn check_stored_image(store: &Store, repo: &RepoName, digest: &Digest, image: &Image) -> Value {
    let row = store
        .db
        .manifest_by_digest(repo, digest)
        .unwrap()
        .expect("manifest stored");
    assert_eq!(row.media_type, OCI_MANIFEST);
    let bytes = store.blobs.read(digest).unwrap();
    assert_eq!(Digest::of(&bytes), *digest);
    assert_eq!(row.size, bytes.len() as u64);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);

    let config = &manifest["config"];
    assert_eq!(config["mediaType"], OCI_CONFIG);
    let config_digest = Digest::of(&image.config);
    assert_eq!(config["digest"], config_digest.to_string());
    assert_eq!(config["size"], image.config.len());
    assert_eq!(check_served_blob(store, repo, config), image.config);

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), image.layers.len());
    for (descriptor, original) in layers.iter().zip(&image.layers) {
        assert_eq!(descriptor["mediaType"], OCI_LAYER_GZIP);
        let stored = check_served_blob(store, repo, descriptor);
        assert_eq!(gunzip(&stored), *original);
        let diff_id = Digest::of(original);
        let layer = store
            .db
            .layer_by_diff_id(&diff_id)
            .unwrap()
            .expect("layer row");
        assert_eq!(layer.digest.to_string(), descriptor["digest"]);
        assert_eq!(layer.size, stored.len() as u64);
        assert_eq!(layer.media_type, OCI_LAYER_GZIP);
    }
    manifest
}

/// The blob a descriptor names is served for `repo` with its size and is on disk under its
/// sha256. Returns its content.
#[track_caller]
pub fn check_served_blob(store: &Store, repo: &RepoName, descriptor: &Value) -> Vec<u8> {
    let digest = Digest::parse(descriptor["digest"].as_str().unwrap()).unwrap();
    let size = descriptor["size"].as_u64().unwrap();
    let row = store.db.repo_blob(repo, &digest).unwrap();
    assert_eq!(
        row,
        Some(BlobRow {
            digest: digest.clone(),
            size
        })
    );
    assert!(store.blobs.contains(&digest).unwrap());
    let content = store.blobs.read(&digest).unwrap();
    assert_eq!(Digest::of(&content), digest);
    assert_eq!(content.len() as u64, size);
    content
}

/// `index.json` → a nested OCI index of two platforms, as `docker save` of a multi-platform
/// image writes it. Returns the archive and the digest of its nested index.
pub fn multi_platform_archive(format: LayerFormat) -> (Vec<u8>, Digest, [Image; 2]) {
    let amd64 = Image::new("amd64", &[layer("base"), layer("amd64")]);
    let arm64 = Image::new("arm64", &[layer("base-arm"), layer("arm64")]);
    let amd64_oci = oci_image(&amd64, format);
    let arm64_oci = oci_image(&arm64, format);
    let nested = oci_index(&[
        platform_descriptor(OCI_MANIFEST, &amd64_oci.manifest, "amd64"),
        platform_descriptor(OCI_MANIFEST, &arm64_oci.manifest, "arm64"),
    ]);
    let mut blobs: Vec<&[u8]> = Vec::new();
    for oci in [&amd64_oci, &arm64_oci] {
        blobs.extend(oci.blobs.iter().map(Vec::as_slice));
        blobs.push(&oci.manifest);
    }
    blobs.push(&nested);
    let top = descriptor(OCI_INDEX, &nested);
    let archive = tar(&oci_layout(&[top], &blobs));
    (archive, Digest::of(&nested), [amd64, arm64])
}
