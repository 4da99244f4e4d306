use actix_web::http::Method;
use buildgrid_core::Digest;
use buildgrid_core::media_type::{OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use serde_json::json;

use crate::support::{
    Blob, TestApp, docker_archive, error, layer_tar, oci_archive, oci_error, random_bytes, request,
    spawn_app,
};

/// What the tests look at in a blob answer. Error answers keep their code, not their body.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_range: Option<String>,
    content_length: Option<u64>,
    body: Vec<u8>,
    code: Option<String>,
}

fn full(bytes: &[u8]) -> Answer {
    Answer {
        status: 200,
        content_range: None,
        content_length: Some(bytes.len() as u64),
        body: bytes.to_vec(),
        code: None,
    }
}

/// `bytes[start..=end]` as a 206.
fn partial(bytes: &[u8], start: usize, end: usize) -> Answer {
    Answer {
        status: 206,
        content_range: Some(format!("bytes {start}-{end}/{}", bytes.len())),
        content_length: Some((end + 1 - start) as u64),
        body: bytes[start..=end].to_vec(),
        code: None,
    }
}

fn unsatisfiable(size: usize) -> Answer {
    Answer {
        status: 416,
        content_range: Some(format!("bytes */{size}")),
        content_length: None,
        body: Vec::new(),
        code: Some("RANGE_INVALID".to_owned()),
    }
}

/// GETs `uri` with `range` and compares; a successful GET also has to carry the blob headers
/// and a HEAD the same answer without the body.
#[track_caller]
fn check(app: &TestApp, uri: &str, range: Option<&str>, expected: Answer) {
    for method in [Method::GET, Method::HEAD] {
        let mut request = request(method.clone(), uri);
        if let Some(range) = range {
            request = request.insert_header(("Range", range));
        }
        let response = app.send(request);
        let success = response.status.is_success();
        let actual = Answer {
            status: response.status.as_u16(),
            content_range: response.header("content-range").map(str::to_owned),
            content_length: response.content_length().filter(|_| success),
            body: if success {
                response.body.to_vec()
            } else {
                Vec::new()
            },
            code: (!success).then(|| oci_error(&response).0.code),
        };
        let mut expected = expected.clone();
        if method == Method::HEAD {
            expected.body.clear();
        }
        assert_eq!(actual, expected, "{method} {uri} Range: {range:?}");
        if success {
            let digest = uri.rsplit('/').next().unwrap();
            assert_eq!(response.header("docker-content-digest"), Some(digest));
            assert_eq!(
                response.header("etag"),
                Some(format!("\"{digest}\"").as_str())
            );
            assert_eq!(
                response.header("content-type"),
                Some("application/octet-stream")
            );
            assert_eq!(response.header("accept-ranges"), Some("bytes"));
            assert_eq!(
                response.header("docker-distribution-api-version"),
                Some("registry/2.0")
            );
        }
    }
}

#[test]
fn blobs_serve_their_exact_bytes() {
    let app = spawn_app();
    let seed = &app.seed;
    for (repo, digest) in [
        ("library/app", &seed.app_config),
        ("library/app", &seed.app_layer),
        ("other/tool", &seed.tool_layer),
    ] {
        let bytes = app.store.blobs.read(digest).unwrap();
        assert_eq!(Digest::of(&bytes), *digest);
        check(
            &app,
            &format!("/v2/{repo}/blobs/{digest}"),
            None,
            full(&bytes),
        );
    }
    // The OCI archive's blobs come back as they were in the archive.
    let sbom_blob: serde_json::Value = serde_json::from_slice(&seed.sbom.artifact.bytes).unwrap();
    let sbom_layer = Digest::parse(sbom_blob["layers"][0]["digest"].as_str().unwrap()).unwrap();
    let sbom_config = Digest::parse(sbom_blob["config"]["digest"].as_str().unwrap()).unwrap();
    let sbom_bytes = app.store.blobs.read(&sbom_layer).unwrap();
    assert_eq!(sbom_bytes, br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#);
    check(
        &app,
        &format!("/v2/acme/sbom/blobs/{sbom_layer}"),
        None,
        full(&sbom_bytes),
    );
    check(
        &app,
        &format!("/v2/acme/sbom/blobs/{sbom_config}"),
        None,
        full(b"{}"),
    );
    // The body's digest is the one asked for.
    let response = app.get(&format!("/v2/library/app/blobs/{}", seed.app_layer));
    assert_eq!(response.body_digest(), seed.app_layer);
}

#[test]
fn ranges() {
    let app = spawn_app();
    let digest = &app.seed.app_layer;
    let uri = format!("/v2/library/app/blobs/{digest}");
    let bytes = app.store.blobs.read(digest).unwrap();
    let n = bytes.len();
    assert!(n > 20, "the layer is long enough to cut: {n}");

    check(&app, &uri, Some("bytes=0-9"), partial(&bytes, 0, 9));
    check(&app, &uri, Some("bytes=-5"), partial(&bytes, n - 5, n - 1));
    check(&app, &uri, Some("bytes=5-"), partial(&bytes, 5, n - 1));
    check(&app, &uri, Some("bytes=3-3"), partial(&bytes, 3, 3));
    check(
        &app,
        &uri,
        Some(&format!("bytes={}-", n - 1)),
        partial(&bytes, n - 1, n - 1),
    );
    // An end past the blob is cut to it; a suffix longer than the blob is the whole blob.
    check(
        &app,
        &uri,
        Some("bytes=10-99999999"),
        partial(&bytes, 10, n - 1),
    );
    check(
        &app,
        &uri,
        Some("bytes=-99999999"),
        partial(&bytes, 0, n - 1),
    );
    // Several ranges are answered with the whole blob.
    check(&app, &uri, Some("bytes=0-1,4-5"), full(&bytes));

    // Ranges past the end, and garbage: 416 with the size.
    check(&app, &uri, Some(&format!("bytes={n}-")), unsatisfiable(n));
    check(
        &app,
        &uri,
        Some(&format!("bytes={}-{}", n + 10, n + 20)),
        unsatisfiable(n),
    );
    for garbage in [
        "bytes=abc",
        "bytes=9-0",
        "bytes=",
        "bytes=--1",
        "items=0-9",
        "0-9",
    ] {
        check(&app, &uri, Some(garbage), unsatisfiable(n));
    }
}

#[test]
fn range_invalid_envelope() {
    let app = spawn_app();
    let digest = &app.seed.app_layer;
    let size = app.store.blobs.read(digest).unwrap().len();
    let response = app.send(
        request(Method::GET, &format!("/v2/library/app/blobs/{digest}"))
            .insert_header(("Range", format!("bytes={size}-"))),
    );
    let (answer, message) = oci_error(&response);
    assert_eq!(answer, error(416, "RANGE_INVALID"));
    assert_eq!(
        message,
        format!("the requested range is not satisfiable: the blob has {size} bytes")
    );
    assert_eq!(
        response.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
}

#[test]
fn blob_if_none_match() {
    let app = spawn_app();
    let digest = &app.seed.app_config;
    let response = app.send(
        request(Method::GET, &format!("/v2/library/app/blobs/{digest}"))
            .insert_header(("If-None-Match", format!("\"{digest}\""))),
    );
    assert_eq!(response.status.as_u16(), 304);
    assert!(response.body.is_empty());
    assert_eq!(
        response.header("etag"),
        Some(format!("\"{digest}\"").as_str())
    );
    assert_eq!(
        response.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
}

#[test]
fn blobs_belong_to_their_repository() {
    let app = spawn_app();
    let seed = &app.seed;
    let missing = Digest::of(b"never stored");
    let cases = [
        (
            format!("/v2/library/app/blobs/{}", seed.tool_layer),
            error(404, "BLOB_UNKNOWN"),
            format!("blob {} is not in repository library/app", seed.tool_layer),
        ),
        (
            format!("/v2/library/app/blobs/{missing}"),
            error(404, "BLOB_UNKNOWN"),
            format!("blob {missing} is not in repository library/app"),
        ),
        (
            format!("/v2/nobody/nothing/blobs/{}", seed.app_layer),
            error(404, "NAME_UNKNOWN"),
            "repository nobody/nothing is not known to this registry".to_owned(),
        ),
    ];
    for (uri, expected, expected_message) in cases {
        for method in [Method::GET, Method::HEAD] {
            let response = app.send(request(method.clone(), &uri));
            let (answer, message) = oci_error(&response);
            assert_eq!(answer, expected, "{method} {uri}");
            assert_eq!(message, expected_message, "{method} {uri}");
        }
    }
    // The same layer is served by the repository that holds it.
    assert_eq!(
        app.get(&format!("/v2/other/tool/blobs/{}", seed.tool_layer))
            .status,
        200
    );
}

#[test]
fn a_large_blob_streams_byte_exact() {
    let app = spawn_app();
    let content = random_bytes(7, 5 << 20);
    let layer = layer_tar(&[("data/random.bin", &content)]);
    app.import(
        "big.tar",
        &docker_archive("big", std::slice::from_ref(&layer)),
        "big/blob",
        "latest",
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&app.stored_manifest("big/blob", "latest")).unwrap();
    let digest = Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap();
    let uri = format!("/v2/big/blob/blobs/{digest}");
    let stored = app.store.blobs.read(&digest).unwrap();
    let n = stored.len();
    assert!(n > 8 * (512 << 10), "the blob spans many chunks: {n}");

    let response = app.get(&uri);
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.content_length(), Some(n as u64));
    assert_eq!(response.body.len(), n);
    assert_eq!(response.body_digest(), digest);
    assert!(
        response.body == stored,
        "the body differs from the stored blob"
    );
    // Random bytes are stored as the plain tar: gzip would not shrink them.
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert!(response.body == layer, "the layer is not its tar");

    // A range across several chunk boundaries, not aligned to any.
    let (start, end) = (1_000_001, 3_999_999);
    let response = app
        .send(request(Method::GET, &uri).insert_header(("Range", format!("bytes={start}-{end}"))));
    assert_eq!(response.status.as_u16(), 206);
    assert_eq!(
        response.header("content-range"),
        Some(format!("bytes {start}-{end}/{n}").as_str())
    );
    assert_eq!(response.content_length(), Some((end + 1 - start) as u64));
    assert!(
        response.body == stored[start..=end],
        "the range differs from the stored bytes"
    );

    let response = app.send(request(Method::GET, &uri).insert_header(("Range", "bytes=-700000")));
    assert_eq!(response.status.as_u16(), 206);
    assert!(
        response.body == stored[n - 700_000..],
        "the suffix differs from the stored bytes"
    );
}

/// An artifact whose one layer is empty, in `acme/empty:latest`; returns the empty digest.
fn import_empty_blob(app: &TestApp) -> Digest {
    let config = Blob::new(b"{}".to_vec());
    let empty = Blob::new(Vec::new());
    let artifact = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.marker",
            "config": config.descriptor(OCI_EMPTY),
            "layers": [empty.descriptor("application/vnd.example.marker")],
        }))
        .unwrap(),
    );
    let index = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [artifact.descriptor(OCI_MANIFEST)],
        }))
        .unwrap(),
    );
    let archive = oci_archive(&index, &[config, empty.clone(), artifact, index.clone()]);
    app.import("empty.tar", &archive, "acme/empty", "latest");
    empty.digest
}

#[test]
fn an_empty_blob() {
    let app = spawn_app();
    let digest = import_empty_blob(&app);
    let uri = format!("/v2/acme/empty/blobs/{digest}");
    check(&app, &uri, None, full(b""));
    check(&app, &uri, Some("bytes=0-"), unsatisfiable(0));
    check(&app, &uri, Some("bytes=0-0"), unsatisfiable(0));
}

/// A suffix range of a zero-length blob is unsatisfiable (RFC 9110 §14.1.1): `416` with
/// `Content-Range: bytes */0`, not an underflowing `Content-Range`.
#[test]
fn suffix_range_of_an_empty_blob_is_unsatisfiable() {
    let app = spawn_app();
    let digest = import_empty_blob(&app);
    let uri = format!("/v2/acme/empty/blobs/{digest}");
    check(&app, &uri, Some("bytes=-5"), unsatisfiable(0));
}
