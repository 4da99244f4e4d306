//! The registry app over a store in a temporary data directory, synthetic image archives to
//! seed it, and the checks the modules share.
//!
//! Every request runs the real actix app in process (`actix_web::test::init_service`) on a
//! fresh actix system, so the tests themselves are plain synchronous `#[test]`s and each
//! `#[track_caller] fn check` reports the line of the failing case.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, test, web};
use buildgrid_access::Access;
use buildgrid_core::media_type::{OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};
use buildgrid_core::{Digest, RepoName, Tag};
use buildgrid_registry::{AuthSettings, Registry};
use buildgrid_store::Store;
use buildgrid_store::ingest::import_archive;
use bytes::Bytes;
use serde_json::{Value, json};

pub const SBOM_TYPE: &str = "application/vnd.example.sbom";

/// The registry over a seeded store. The temporary directory holds the data directory
/// (`data/`) and the archives the store was seeded from.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub registry: web::Data<Registry>,
    pub seed: Seed,
}

/// What `spawn_app` stored:
/// - `library/app`, a `docker save` (legacy) image tagged `1.0 1.1 10 2.0 A latest v1`;
/// - `other/tool`, another legacy image, tagged `latest`;
/// - `acme/sbom`, an OCI archive whose index (tagged `latest`) holds an image and an SBOM
///   artifact whose subject is that image.
pub struct Seed {
    pub app_manifest: Digest,
    pub app_config: Digest,
    pub app_layer: Digest,
    pub tool_manifest: Digest,
    pub tool_layer: Digest,
    pub sbom: OciSeed,
}

/// The blobs of the OCI archive, as written into it (ingest keeps them byte for byte).
pub struct OciSeed {
    pub index: Blob,
    pub image: Blob,
    pub artifact: Blob,
}

#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: Digest::of(&bytes),
            bytes,
        }
    }

    pub fn descriptor(&self, media_type: &str) -> Value {
        json!({
            "mediaType": media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }
}

pub fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());

    let app_image = docker_archive("app", &[layer_tar(&[("etc/app.conf", b"name = app\n")])]);
    for tag in ["latest", "1.0", "1.1", "10", "2.0", "A", "v1"] {
        import(
            &store,
            dir.path(),
            "app.tar",
            &app_image,
            "library/app",
            tag,
        );
    }
    let app_manifest = stored_manifest(&store, "library/app", "latest");

    let tool_image = docker_archive("tool", &[layer_tar(&[("usr/bin/tool", b"#!/bin/sh\n")])]);
    import(
        &store,
        dir.path(),
        "tool.tar",
        &tool_image,
        "other/tool",
        "latest",
    );
    let tool_manifest = stored_manifest(&store, "other/tool", "latest");

    let (sbom, sbom_blobs) = oci_with_referrer();
    let sbom_archive = oci_archive(&sbom.index, &sbom_blobs);
    import(
        &store,
        dir.path(),
        "sbom.tar",
        &sbom_archive,
        "acme/sbom",
        "latest",
    );

    let seed = Seed {
        app_manifest: Digest::of(&app_manifest),
        app_config: manifest_digest(&app_manifest, "/config/digest"),
        app_layer: manifest_digest(&app_manifest, "/layers/0/digest"),
        tool_manifest: Digest::of(&tool_manifest),
        tool_layer: manifest_digest(&tool_manifest, "/layers/0/digest"),
        sbom,
    };
    // The seeded namespaces are public, so the other modules test the API without credentials;
    // `access` makes them private where it needs to.
    for namespace in [
        "library", "other", "acme", "big", "mirror", "nobody", "new", "a",
    ] {
        store.db.set_namespace_public(namespace, true).unwrap();
    }
    let access = Arc::new(Access::new(store.clone()).unwrap());
    TestApp {
        dir,
        registry: web::Data::new(Registry::new(
            store.clone(),
            access,
            AuthSettings::for_public_url("http://registry.test"),
        )),
        store,
        seed,
    }
}

/// Writes `bytes` as `<dir>/<file>` and imports it as `repo:tag`; returns the tagged digest.
fn import(store: &Store, dir: &Path, file: &str, bytes: &[u8], repo: &str, tag: &str) -> Digest {
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    import_archive(store, &path, &repo_name(repo), &Tag::parse(tag).unwrap())
        .unwrap_or_else(|error| panic!("importing {file} as {repo}:{tag}: {error}"))
        .digest
}

/// The bytes of the manifest `repo:tag` as the store holds them (not through the API).
fn stored_manifest(store: &Store, repo: &str, tag: &str) -> Vec<u8> {
    let row = store
        .db
        .manifest_by_tag(&repo_name(repo), &Tag::parse(tag).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("{repo}:{tag} is not stored"));
    store.blobs.read(&row.digest).unwrap()
}

/// A user with registry credentials.
pub struct TestUser {
    pub name: String,
    pub password: String,
}

impl TestUser {
    pub fn basic(&self) -> String {
        basic(&self.name, &self.password)
    }
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl TestApp {
    /// A new user (not an admin, member of nothing) with a registry password.
    pub fn user_with_registry_password(&self, name: &str) -> TestUser {
        let (user, _) = buildgrid_access::create_user(&self.store, name, false).unwrap();
        let password = buildgrid_access::regenerate_registry_password(&self.store, &user).unwrap();
        TestUser {
            name: name.to_owned(),
            password,
        }
    }

    /// A token of `user` with `scopes`, e.g. `pull:acme`.
    pub fn token(&self, user: &str, scopes: &str, expires_at: Option<i64>) -> String {
        let user = buildgrid_access::user(&self.store, user).unwrap();
        let scopes = buildgrid_access::Scope::parse_list(scopes).unwrap();
        buildgrid_access::create_token(&self.store, &user, "test", &scopes, expires_at)
            .unwrap()
            .1
    }

    pub fn import(&self, file: &str, bytes: &[u8], repo: &str, tag: &str) -> Digest {
        import(&self.store, self.dir.path(), file, bytes, repo, tag)
    }

    pub fn stored_manifest(&self, repo: &str, tag: &str) -> Vec<u8> {
        stored_manifest(&self.store, repo, tag)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Sends one request through the real app, on a fresh actix system.
    pub fn send(&self, request: test::TestRequest) -> Response {
        let registry = self.registry.clone();
        actix_web::rt::System::new().block_on(async move {
            let service = test::init_service(
                App::new().configure(|cfg| buildgrid_registry::configure(cfg, registry)),
            )
            .await;
            let response = test::call_service(&service, request.to_request()).await;
            let status = response.status();
            let headers = response.headers().clone();
            let body_size = response.response().body().size();
            let body = test::read_body(response).await;
            Response {
                status,
                headers,
                body_size,
                body,
            }
        })
    }

    pub fn get(&self, uri: &str) -> Response {
        self.send(test::TestRequest::get().uri(uri))
    }

    pub fn head(&self, uri: &str) -> Response {
        self.send(request(Method::HEAD, uri))
    }
}

pub fn request(method: Method, uri: &str) -> test::TestRequest {
    test::TestRequest::default().method(method).uri(uri)
}

/// A response, with its body read.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// What the body said of its size before it was read: a sized body makes actix write
    /// `Content-Length` on the wire; a stream relies on the handler's own header.
    pub body_size: BodySize,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("header values are ASCII"))
    }

    /// The `Content-Length` actix writes on the wire: the body's own size when it has one,
    /// else the handler's header (always the header on a 304, whose body actix drops).
    pub fn content_length(&self) -> Option<u64> {
        match self.body_size {
            BodySize::Sized(size) if self.status != StatusCode::NOT_MODIFIED => Some(size),
            _ => self.header("content-length").map(|v| v.parse().unwrap()),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn body_digest(&self) -> Digest {
        Digest::of(&self.body)
    }
}

/// The parts of an OCI error answer the tables state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorAnswer {
    pub status: u16,
    pub code: String,
}

/// Checks that `response` is an OCI error envelope, `{"errors":[{"code","message"[,"detail"]}]}`
/// as JSON with the API version header, and returns the status, code and message.
#[track_caller]
pub fn oci_error(response: &Response) -> (ErrorAnswer, String) {
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    assert_eq!(
        response.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let body = response.json();
    let errors = body["errors"].as_array().expect("an errors list");
    assert_eq!(errors.len(), 1, "{body}");
    let entry = errors[0].as_object().unwrap();
    for key in entry.keys() {
        assert!(
            ["code", "message", "detail"].contains(&key.as_str()),
            "unexpected field {key} in {body}"
        );
    }
    let message = entry["message"].as_str().expect("a message").to_owned();
    assert!(!message.is_empty(), "{body}");
    let answer = ErrorAnswer {
        status: response.status.as_u16(),
        code: entry["code"].as_str().expect("a code").to_owned(),
    };
    (answer, message)
}

pub fn error(status: u16, code: &str) -> ErrorAnswer {
    ErrorAnswer {
        status,
        code: code.to_owned(),
    }
}

pub fn repo_name(text: &str) -> RepoName {
    RepoName::parse(text).unwrap()
}

pub fn digest(text: &str) -> Digest {
    Digest::parse(text).unwrap()
}

fn manifest_digest(manifest: &[u8], pointer: &str) -> Digest {
    let value: Value = serde_json::from_slice(manifest).unwrap();
    digest(value.pointer(pointer).and_then(Value::as_str).unwrap())
}

/// A tar of regular files with fixed owners and times.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(bytes.len() as u64);
        builder.append_data(&mut header, name, *bytes).unwrap();
    }
    builder.into_inner().unwrap()
}

/// `len` pseudo-random bytes (xorshift64*), the same for the same seed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn image_config(label: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"example.label": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A legacy `docker save` archive (engines before Docker 25) of one image with uncompressed
/// `layers`.
pub fn docker_archive(label: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let config = image_config(label, layers);
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let layer_names: Vec<String> = layers
        .iter()
        .map(|layer| format!("{}/layer.tar", Digest::of(layer).hex()))
        .collect();
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [],
        "Layers": layer_names,
    }]);
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap(),
        ),
        (config_name, config),
    ];
    for (name, layer) in layer_names.iter().zip(layers) {
        files.push((name.clone(), layer.clone()));
    }
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    layer_tar(&files)
}

/// An OCI layout archive: `oci-layout`, an `index.json` listing `top` (an image index) and
/// `blobs/sha256/<hex>` for every blob.
pub fn oci_archive(top: &Blob, blobs: &[Blob]) -> Vec<u8> {
    let index_json = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [top.descriptor(OCI_INDEX)],
    });
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (
            "index.json".into(),
            serde_json::to_vec(&index_json).unwrap(),
        ),
    ];
    for blob in blobs {
        files.push((
            format!("blobs/sha256/{}", blob.digest.hex()),
            blob.bytes.clone(),
        ));
    }
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    layer_tar(&files)
}

/// An image index holding a linux/amd64 image (one gzip layer, so ingest keeps the manifest
/// byte for byte) and an SBOM artifact whose `subject` is that image; and every blob of it.
pub fn oci_with_referrer() -> (OciSeed, Vec<Blob>) {
    let layer = layer_tar(&[("etc/sbom-app.conf", b"name = sbom-app\n")]);
    let config = Blob::new(image_config("sbom-app", std::slice::from_ref(&layer)));
    let compressed = Blob::new(gzip(&layer));
    let image = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [compressed.descriptor(OCI_LAYER_GZIP)],
        }))
        .unwrap(),
    );
    let empty = Blob::new(b"{}".to_vec());
    let sbom = Blob::new(br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#.to_vec());
    let artifact = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": empty.descriptor(OCI_EMPTY),
            "layers": [sbom.descriptor("application/spdx+json")],
            "subject": image.descriptor(OCI_MANIFEST),
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        }))
        .unwrap(),
    );
    let mut image_entry = image.descriptor(OCI_MANIFEST);
    image_entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut artifact_entry = artifact.descriptor(OCI_MANIFEST);
    artifact_entry["artifactType"] = json!(SBOM_TYPE);
    let index = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [image_entry, artifact_entry],
        }))
        .unwrap(),
    );
    let blobs = vec![
        config,
        compressed,
        empty,
        sbom,
        image.clone(),
        artifact.clone(),
        index.clone(),
    ];
    let seed = OciSeed {
        index,
        image,
        artifact,
    };
    (seed, blobs)
}

/// Every file under `<data>/blobs`, relative to it, sorted.
pub fn blob_files(data: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let root = data.join("blobs");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    files
}
