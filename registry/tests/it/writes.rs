use actix_web::http::Method;
use buildgrid_core::media_type::OCI_MANIFEST;
use serde_json::{Value, json};

use crate::support::{TestApp, blob_files, error, oci_error, request, spawn_app};

/// Sends `method uri` with `body` and expects the read-only refusal, naming `repository`.
#[track_caller]
fn check(app: &TestApp, method: Method, uri: &str, body: &[u8], repository: Option<&str>) {
    let content_type = if uri.contains("/manifests/") {
        OCI_MANIFEST
    } else {
        "application/octet-stream"
    };
    let response = app.send(
        request(method.clone(), uri)
            .insert_header(("Content-Type", content_type))
            .set_payload(body.to_vec()),
    );
    let (answer, message) = oci_error(&response);
    assert_eq!(answer, error(405, "UNSUPPORTED"), "{method} {uri}");
    assert_eq!(
        response.header("allow"),
        Some("GET, HEAD"),
        "{method} {uri}"
    );
    assert!(message.contains("read-only"), "{method} {uri}: {message}");
    assert!(
        message.contains("push your code"),
        "{method} {uri}: {message}"
    );
    let mut detail = json!({"method": method.as_str()});
    if let Some(repository) = repository {
        detail["repository"] = json!(repository);
    }
    assert_eq!(
        response.json()["errors"][0]["detail"],
        detail,
        "{method} {uri}"
    );
}

/// Everything a write could change: table sizes, the blob files, and what the API serves.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    rows: Vec<(String, i64)>,
    blob_files: Vec<String>,
    tmp_files: usize,
    manifest: Vec<u8>,
    tags: Value,
    catalog: Value,
}

fn snapshot(app: &TestApp) -> Snapshot {
    let manifest = app.get("/v2/library/app/manifests/latest");
    assert_eq!(manifest.status.as_u16(), 200);
    Snapshot {
        rows: app.store.db.row_counts().unwrap(),
        blob_files: blob_files(&app.data_dir()),
        tmp_files: std::fs::read_dir(app.data_dir().join("tmp"))
            .unwrap()
            .count(),
        manifest: manifest.body.to_vec(),
        tags: app.get("/v2/library/app/tags/list").json(),
        catalog: app.get("/v2/_catalog").json(),
    }
}

#[test]
fn every_write_is_refused_and_changes_nothing() {
    let app = spawn_app();
    let before = snapshot(&app);
    let seed = &app.seed;
    let layer = app.store.blobs.read(&seed.tool_layer).unwrap();
    let manifest = app.stored_manifest("other/tool", "latest");
    let uuid = "3f2c1c8e-0c7e-4d2b-9b1e-5d1e0c1f2a3b";
    let uploads = [
        "/v2/library/app/blobs/uploads/".to_owned(),
        "/v2/library/app/blobs/uploads".to_owned(),
        format!("/v2/library/app/blobs/uploads/{uuid}"),
        format!(
            "/v2/library/app/blobs/uploads/{uuid}?digest={}",
            seed.tool_layer
        ),
        // Monolithic upload.
        format!("/v2/library/app/blobs/uploads/?digest={}", seed.tool_layer),
        // Cross-repository mount.
        format!(
            "/v2/library/app/blobs/uploads/?mount={}&from=other/tool",
            seed.tool_layer
        ),
        format!("/v2/library/app/blobs/{}", seed.app_layer),
        format!("/v2/library/app/blobs/{}", seed.tool_layer),
    ];
    let manifests = [
        "/v2/library/app/manifests/latest".to_owned(),
        "/v2/library/app/manifests/new-tag".to_owned(),
        format!("/v2/library/app/manifests/{}", seed.app_manifest),
        format!("/v2/library/app/manifests/{}", seed.tool_manifest),
        "/v2/library/app/tags/list".to_owned(),
        format!("/v2/library/app/referrers/{}", seed.app_manifest),
    ];
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        for uri in &uploads {
            check(&app, method.clone(), uri, &layer, Some("library/app"));
        }
        for uri in &manifests {
            check(&app, method.clone(), uri, &manifest, Some("library/app"));
        }
        // A new repository, an invalid name, and the endpoints without a repository.
        check(
            &app,
            method.clone(),
            "/v2/new/repo/blobs/uploads/",
            &layer,
            Some("new/repo"),
        );
        check(
            &app,
            method.clone(),
            "/v2/new/repo/manifests/v1",
            &manifest,
            Some("new/repo"),
        );
        check(
            &app,
            method.clone(),
            "/v2/UPPER/manifests/v1",
            &manifest,
            Some("UPPER"),
        );
        check(&app, method.clone(), "/v2/", b"", None);
        check(&app, method.clone(), "/v2/_catalog", b"", None);
    }
    check(
        &app,
        Method::from_bytes(b"MKCOL").unwrap(),
        "/v2/library/app/manifests/latest",
        b"",
        Some("library/app"),
    );
    assert_eq!(snapshot(&app), before);
    // The refused mount did not make the other repository's layer servable here.
    let mounted = app.get(&format!("/v2/library/app/blobs/{}", seed.tool_layer));
    assert_eq!(oci_error(&mounted).0, error(404, "BLOB_UNKNOWN"));
}

/// `OPTIONS` answers what distribution answers: `200` with the methods there are.
#[test]
fn options_lists_the_read_methods() {
    let app = spawn_app();
    for uri in [
        "/v2/",
        "/v2/library/app/manifests/latest",
        "/v2/library/app/blobs/uploads/",
        "/v2/no-such/repo/tags/list",
    ] {
        let response = app.send(request(Method::OPTIONS, uri));
        assert_eq!(response.status.as_u16(), 200, "{uri}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{uri}");
        assert!(response.body.is_empty(), "{uri}");
    }
    assert_eq!(snapshot(&app), snapshot(&app));
}

/// A GET or HEAD of an upload is a read; a pull-only registry has no uploads, so the answer is
/// `404 BLOB_UPLOAD_UNKNOWN` (a `405` with `Allow: GET, HEAD` would contradict itself).
#[test]
fn reading_an_upload_finds_no_upload() {
    let app = spawn_app();
    let uuid = "3f2c1c8e-0c7e-4d2b-9b1e-5d1e0c1f2a3b";
    for method in [Method::GET, Method::HEAD] {
        let uri = format!("/v2/library/app/blobs/uploads/{uuid}");
        let response = app.send(request(method.clone(), &uri));
        let (answer, _) = oci_error(&response);
        assert_eq!(answer, error(404, "BLOB_UPLOAD_UNKNOWN"), "{method} {uri}");
    }
}
