use actix_web::http::Method;
use buildgrid_core::Digest;
use buildgrid_core::media_type::{OCI_INDEX, OCI_MANIFEST};

use crate::support::{TestApp, repo_name, request, spawn_app};

/// What the tests look at in a manifest answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    content_length: Option<u64>,
    docker_content_digest: Option<String>,
    etag: Option<String>,
    api_version: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    /// The answer a manifest of `bytes` and `media_type` deserves.
    fn manifest(status: u16, media_type: &str, bytes: &[u8], with_body: bool) -> Answer {
        let digest = Digest::of(bytes).to_string();
        Answer {
            status,
            content_type: Some(media_type.to_owned()),
            content_length: (status != 304).then_some(bytes.len() as u64),
            etag: Some(format!("\"{digest}\"")),
            docker_content_digest: Some(digest),
            api_version: Some("registry/2.0".to_owned()),
            body: if with_body {
                bytes.to_vec()
            } else {
                Vec::new()
            },
        }
    }
}

#[track_caller]
fn check(app: &TestApp, request: actix_web::test::TestRequest, expected: Answer) {
    let response = app.send(request);
    let text = |name: &str| response.header(name).map(str::to_owned);
    let actual = Answer {
        status: response.status.as_u16(),
        content_type: text("content-type"),
        // A 304 may carry the Content-Length of the 200 or none (RFC 9110 §15.4.5).
        content_length: response.content_length().filter(|_| response.status != 304),
        docker_content_digest: text("docker-content-digest"),
        etag: text("etag"),
        api_version: text("docker-distribution-api-version"),
        body: response.body.to_vec(),
    };
    assert_eq!(actual, expected);
}

#[test]
fn manifests_by_tag_and_by_digest() {
    let app = spawn_app();
    let app_manifest = app.stored_manifest("library/app", "latest");
    assert_eq!(Digest::of(&app_manifest), app.seed.app_manifest);
    let sbom = &app.seed.sbom;
    let cases: Vec<(String, &str, &[u8])> = vec![
        // A legacy `docker save` image is stored as an OCI image manifest.
        (
            "library/app/manifests/latest".into(),
            OCI_MANIFEST,
            &app_manifest,
        ),
        (
            "library/app/manifests/1.0".into(),
            OCI_MANIFEST,
            &app_manifest,
        ),
        (
            format!("library/app/manifests/{}", app.seed.app_manifest),
            OCI_MANIFEST,
            &app_manifest,
        ),
        // An OCI archive keeps its index and manifests byte for byte.
        (
            "acme/sbom/manifests/latest".into(),
            OCI_INDEX,
            &sbom.index.bytes,
        ),
        (
            format!("acme/sbom/manifests/{}", sbom.index.digest),
            OCI_INDEX,
            &sbom.index.bytes,
        ),
        (
            format!("acme/sbom/manifests/{}", sbom.image.digest),
            OCI_MANIFEST,
            &sbom.image.bytes,
        ),
        (
            format!("acme/sbom/manifests/{}", sbom.artifact.digest),
            OCI_MANIFEST,
            &sbom.artifact.bytes,
        ),
    ];
    for (path, media_type, bytes) in cases {
        let uri = format!("/v2/{path}");
        check(
            &app,
            request(Method::GET, &uri),
            Answer::manifest(200, media_type, bytes, true),
        );
        check(
            &app,
            request(Method::HEAD, &uri),
            Answer::manifest(200, media_type, bytes, false),
        );
    }
}

#[test]
fn if_none_match_gives_not_modified() {
    let app = spawn_app();
    let bytes = app.stored_manifest("library/app", "latest");
    let etag = format!("\"{}\"", app.seed.app_manifest);
    let by_digest = format!("/v2/library/app/manifests/{}", app.seed.app_manifest);
    for uri in ["/v2/library/app/manifests/latest", by_digest.as_str()] {
        for matching in [
            etag.clone(),
            format!("\"sha256:{}\", {etag}", "0".repeat(64)),
            "*".into(),
        ] {
            let get = request(Method::GET, uri).insert_header(("If-None-Match", matching.clone()));
            check(
                &app,
                get,
                Answer::manifest(304, OCI_MANIFEST, &bytes, false),
            );
            let head = request(Method::HEAD, uri).insert_header(("If-None-Match", matching));
            check(
                &app,
                head,
                Answer::manifest(304, OCI_MANIFEST, &bytes, false),
            );
        }
        let other = format!("\"sha256:{}\"", "0".repeat(64));
        let get = request(Method::GET, uri).insert_header(("If-None-Match", other));
        check(&app, get, Answer::manifest(200, OCI_MANIFEST, &bytes, true));
    }
}

#[test]
fn manifest_gets_count_as_downloads_and_heads_do_not() {
    let app = spawn_app();
    let repo = repo_name("library/app");
    let digest = &app.seed.app_manifest;
    assert_eq!(app.get("/v2/library/app/manifests/latest").status, 200);
    assert_eq!(
        app.get(&format!("/v2/library/app/manifests/{digest}"))
            .status,
        200
    );
    assert_eq!(app.head("/v2/library/app/manifests/latest").status, 200);
    // A client that GETs it with the ETag it has pulls from its cache: a pull too.
    let cached = request(Method::GET, "/v2/library/app/manifests/latest")
        .insert_header(("If-None-Match", format!("\"{digest}\"")));
    assert_eq!(app.send(cached).status, 304);
    let checked = request(Method::HEAD, "/v2/library/app/manifests/latest")
        .insert_header(("If-None-Match", format!("\"{digest}\"")));
    assert_eq!(app.send(checked).status, 304);
    // Counted in memory until flushed.
    assert_eq!(app.store.db.downloads(&repo, digest).unwrap(), 0);
    app.registry.flush_downloads();
    assert_eq!(app.store.db.downloads(&repo, digest).unwrap(), 3);
    // A second flush with nothing new adds nothing.
    app.registry.flush_downloads();
    assert_eq!(app.store.db.downloads(&repo, digest).unwrap(), 3);
    assert_eq!(app.store.db.archive_downloads(&repo, digest).unwrap(), 0);
}
