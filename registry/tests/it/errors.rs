use actix_web::http::Method;
use buildgrid_core::Digest;
use serde_json::json;

use crate::support::{ErrorAnswer, TestApp, error, oci_error, request, spawn_app};

/// Sends `GET uri` (and `HEAD uri`) and expects an OCI error envelope with `expected` and a
/// message containing `message`.
#[track_caller]
fn check(app: &TestApp, uri: &str, expected: ErrorAnswer, message: &str) {
    let (answer, actual_message) = oci_error(&app.get(uri));
    assert_eq!(answer, expected, "GET {uri}");
    assert!(
        actual_message.contains(message),
        "GET {uri}: {actual_message:?} lacks {message:?}"
    );
    let head = app.send(request(Method::HEAD, uri));
    assert_eq!(head.status.as_u16(), expected.status, "HEAD {uri}");
}

const NAME_RULE: &str = "breaks the OCI name rule";

#[test]
fn invalid_names() {
    let app = spawn_app();
    let d = Digest::of(b"x");
    let long = "a".repeat(256);
    for uri in [
        "/v2/UPPER/manifests/x",
        "/v2/Library/app/tags/list",
        "/v2/a..b/tags/list",
        "/v2/a..b/manifests/latest",
        "/v2/-a/manifests/latest",
        "/v2/a___b/manifests/latest",
        "/v2/a//b/manifests/latest",
        "/v2/a%2fb/manifests/latest",
        "/v2/library/%2e%2e/app/manifests/latest",
        "/v2/%2e%2e/%2e%2e/etc/passwd/manifests/x",
        "/v2/%2E%2E/manifests/latest",
        // Sent raw, without a client normalizing the dots away.
        "/v2/../../etc/passwd/manifests/x",
        "/v2/library/../app/manifests/latest",
        "/v2/./app/tags/list",
    ] {
        check(&app, uri, error(400, "NAME_INVALID"), NAME_RULE);
    }
    check(
        &app,
        &format!("/v2/a%20b/blobs/{d}"),
        error(400, "NAME_INVALID"),
        NAME_RULE,
    );
    check(
        &app,
        &format!("/v2/../blobs/{d}"),
        error(400, "NAME_INVALID"),
        NAME_RULE,
    );
    check(
        &app,
        &format!("/v2/{long}/manifests/latest"),
        error(400, "NAME_INVALID"),
        "longer than 255 characters",
    );
}

#[test]
fn malformed_digests() {
    let app = spawn_app();
    let upper = format!("sha256:{}", "AB".repeat(32));
    let short = format!("sha256:{}", "a".repeat(63));
    let md5 = format!("md5:{}", "0".repeat(32));
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    for kind in ["blobs", "manifests", "referrers"] {
        let uri = |reference: &str| format!("/v2/library/app/{kind}/{reference}");
        for malformed in [
            "sha256:xyz",
            upper.as_str(),
            short.as_str(),
            "sha256:",
            ":abc",
        ] {
            check(
                &app,
                &uri(malformed),
                error(400, "DIGEST_INVALID"),
                "malformed",
            );
        }
        check(
            &app,
            &uri(&md5),
            error(400, "DIGEST_INVALID"),
            "is not supported",
        );
        // A well-formed digest of a registered algorithm is valid; nothing is stored under it.
        // (Referrers of such a digest are an empty list: `referrers.rs` checks it.)
        let unknown = match kind {
            "blobs" => Some(error(404, "BLOB_UNKNOWN")),
            "manifests" => Some(error(404, "MANIFEST_UNKNOWN")),
            _ => None,
        };
        if let Some(unknown) = unknown {
            check(&app, &uri(&sha512), unknown, "sha256");
        }
        let traversal = format!("sha256:..%2f..%2f{}", "a".repeat(58));
        check(
            &app,
            &uri(&traversal),
            error(400, "DIGEST_INVALID"),
            "malformed",
        );
        // Sent raw: the `/`s stay in the digest rather than making an unknown route.
        check(
            &app,
            &uri("sha256:../../etc/passwd"),
            error(400, "DIGEST_INVALID"),
            "malformed",
        );
    }
    // Blobs and referrers take only digests.
    for kind in ["blobs", "referrers"] {
        check(
            &app,
            &format!("/v2/library/app/{kind}/latest"),
            error(400, "DIGEST_INVALID"),
            "has no algorithm",
        );
    }
}

#[test]
fn invalid_tags() {
    let app = spawn_app();
    let long = "a".repeat(129);
    // A reference with a `/` is an invalid tag, not an unknown route.
    for tag in [
        "-bad",
        ".hidden",
        long.as_str(),
        "a%20b",
        "caf%C3%A9",
        "a+b",
        "a/b",
        "../x",
    ] {
        check(
            &app,
            &format!("/v2/library/app/manifests/{tag}"),
            error(404, "MANIFEST_UNKNOWN"),
            "breaks the OCI tag rule",
        );
    }
    // The conformance suite's invalid tag; in a repository that does not exist, the repository
    // is what is unknown.
    check(
        &app,
        "/v2/library/app/manifests/.INVALID",
        error(404, "MANIFEST_UNKNOWN"),
        "no manifest is tagged so",
    );
    check(
        &app,
        "/v2/nobody/repo/manifests/.INVALID",
        error(404, "NAME_UNKNOWN"),
        "not known",
    );
    // The longest valid tag is only unknown.
    check(
        &app,
        &format!("/v2/library/app/manifests/{}", "a".repeat(128)),
        error(404, "MANIFEST_UNKNOWN"),
        "is not in repository library/app",
    );
}

#[test]
fn unknown_manifests_and_repositories() {
    let app = spawn_app();
    check(
        &app,
        "/v2/library/app/manifests/nope",
        error(404, "MANIFEST_UNKNOWN"),
        "manifest nope is not in repository library/app",
    );
    // A manifest of another repository is not in this one.
    let tool = &app.seed.tool_manifest;
    check(
        &app,
        &format!("/v2/library/app/manifests/{tool}"),
        error(404, "MANIFEST_UNKNOWN"),
        &format!("manifest {tool} is not in repository library/app"),
    );
    assert_eq!(
        app.get(&format!("/v2/other/tool/manifests/{tool}")).status,
        200
    );
    for uri in [
        "/v2/nobody/nothing/manifests/latest".to_owned(),
        format!("/v2/nobody/nothing/manifests/{tool}"),
        // A prefix of a repository is no repository.
        "/v2/library/manifests/latest".to_owned(),
    ] {
        check(
            &app,
            &uri,
            error(404, "NAME_UNKNOWN"),
            "is not known to this registry",
        );
    }
}

#[test]
fn unknown_routes() {
    let app = spawn_app();
    for uri in [
        "/v2/library/app",
        "/v2/library/app/",
        "/v2/library/app/tags",
        "/v2/library/app/tags/list/more",
        "/v2/library/app/manifests/",
        "/v2/library/app/blobs/",
        "/v2/library/app/referrers/",
        "/v2/_catalog/x",
        "/v2/manifests/latest",
        "/v2/tags/list",
    ] {
        check(
            &app,
            uri,
            error(404, "NAME_UNKNOWN"),
            "no such endpoint in the OCI distribution API",
        );
        let body = app.get(uri).json();
        assert_eq!(body["errors"][0]["detail"], json!({"path": uri}), "{uri}");
    }
}

/// `mirror/blobs/uploads` is a valid repository name: its manifests and blobs are reads, not
/// uploads.
#[test]
fn a_repository_named_like_an_upload_path_serves_its_manifests() {
    let app = spawn_app();
    let archive = std::fs::read(app.dir.path().join("tool.tar")).unwrap();
    let digest = app.import("again.tar", &archive, "mirror/blobs/uploads", "latest");
    let tags = app.get("/v2/mirror/blobs/uploads/tags/list");
    assert_eq!(
        tags.json(),
        json!({"name": "mirror/blobs/uploads", "tags": ["latest"]})
    );
    let manifest = app.get("/v2/mirror/blobs/uploads/manifests/latest");
    assert_eq!(
        (manifest.status.as_u16(), manifest.body_digest()),
        (200, digest),
        "{:?}",
        String::from_utf8_lossy(&manifest.body)
    );
}
