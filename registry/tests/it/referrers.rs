use buildgrid_core::Digest;
use buildgrid_core::media_type::{OCI_INDEX, OCI_MANIFEST};
use serde_json::{Value, json};

use crate::support::{SBOM_TYPE, TestApp, error, oci_error, spawn_app};

/// What the tests look at in a referrers answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    filters_applied: Option<String>,
    body: Value,
}

fn index(manifests: Vec<Value>, filtered: bool) -> Answer {
    Answer {
        status: 200,
        content_type: Some(OCI_INDEX.to_owned()),
        filters_applied: filtered.then(|| "artifactType".to_owned()),
        body: json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    }
}

#[track_caller]
fn check(app: &TestApp, uri: &str, expected: Answer) {
    let response = app.get(uri);
    let actual = Answer {
        status: response.status.as_u16(),
        content_type: response.header("content-type").map(str::to_owned),
        filters_applied: response.header("oci-filters-applied").map(str::to_owned),
        body: response.json(),
    };
    assert_eq!(actual, expected, "{uri}");
}

#[test]
fn referrers_list_the_artifacts_of_a_subject() {
    let app = spawn_app();
    let sbom = &app.seed.sbom;
    let sbom_descriptor = json!({
        "mediaType": OCI_MANIFEST,
        "digest": sbom.artifact.digest.to_string(),
        "size": sbom.artifact.bytes.len(),
        "artifactType": SBOM_TYPE,
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    });
    let base = format!("/v2/acme/sbom/referrers/{}", sbom.image.digest);
    check(&app, &base, index(vec![sbom_descriptor.clone()], false));
    check(
        &app,
        &format!("{base}?artifactType={SBOM_TYPE}"),
        index(vec![sbom_descriptor.clone()], true),
    );
    check(
        &app,
        &format!("{base}?artifactType=application%2Fvnd.example.sbom"),
        index(vec![sbom_descriptor], true),
    );
    // Nothing found is an empty list, never a 404.
    check(
        &app,
        &format!("{base}?artifactType=application/vnd.example.signature"),
        index(vec![], true),
    );
    for subject in [
        &sbom.artifact.digest,
        &sbom.index.digest,
        &Digest::of(b"no such manifest"),
    ] {
        check(
            &app,
            &format!("/v2/acme/sbom/referrers/{subject}"),
            index(vec![], false),
        );
    }
    // A digest of another registered algorithm is valid, and nothing here refers to it.
    check(
        &app,
        &format!("/v2/acme/sbom/referrers/sha512:{}", "ab".repeat(64)),
        index(vec![], false),
    );
    check(
        &app,
        &format!("/v2/library/app/referrers/{}", app.seed.app_manifest),
        index(vec![], false),
    );
    // The listed descriptor is what the manifest endpoint serves.
    let response = app.get(&format!("/v2/acme/sbom/manifests/{}", sbom.artifact.digest));
    assert_eq!(response.body.as_ref(), sbom.artifact.bytes.as_slice());
}

#[test]
fn referrers_refuse_bad_digests_and_unknown_repositories() {
    let app = spawn_app();
    let known = &app.seed.sbom.image.digest;
    let cases = [
        (
            "/v2/acme/sbom/referrers/sha256:xyz".to_owned(),
            error(400, "DIGEST_INVALID"),
        ),
        (
            "/v2/acme/sbom/referrers/latest".to_owned(),
            error(400, "DIGEST_INVALID"),
        ),
        (
            format!("/v2/acme/sbom/referrers/md5:{}", "0".repeat(32)),
            error(400, "DIGEST_INVALID"),
        ),
        (
            format!("/v2/nobody/nothing/referrers/{known}"),
            error(404, "NAME_UNKNOWN"),
        ),
        (
            format!("/v2/Acme/referrers/{known}"),
            error(400, "NAME_INVALID"),
        ),
    ];
    for (uri, expected) in cases {
        let (answer, _) = oci_error(&app.get(&uri));
        assert_eq!(answer, expected, "{uri}");
    }
}

/// Ingest compresses uncompressed layers, which gives the image manifest a new digest; an
/// artifact of the same archive whose `subject` names the image follows it to the stored digest.
#[test]
fn referrers_survive_the_compression_of_uncompressed_layers() {
    use crate::support::{Blob, layer_tar, oci_archive};
    use buildgrid_core::media_type::{OCI_CONFIG, OCI_EMPTY, OCI_LAYER_TAR};

    let app = spawn_app();
    let layer = Blob::new(layer_tar(&[("etc/plain.conf", b"name = plain\n")]));
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
        }))
        .unwrap(),
    );
    let image = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [layer.descriptor(OCI_LAYER_TAR)],
        }))
        .unwrap(),
    );
    let empty = Blob::new(b"{}".to_vec());
    let artifact = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": empty.descriptor(OCI_EMPTY),
            "layers": [empty.descriptor(OCI_EMPTY)],
            "subject": image.descriptor(OCI_MANIFEST),
        }))
        .unwrap(),
    );
    let index = Blob::new(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [image.descriptor(OCI_MANIFEST), artifact.descriptor(OCI_MANIFEST)],
        }))
        .unwrap(),
    );
    let blobs = [layer, config, image, empty, artifact, index.clone()];
    app.import(
        "plain.tar",
        &oci_archive(&index, &blobs),
        "acme/plain",
        "latest",
    );

    let served_index = app.get("/v2/acme/plain/manifests/latest").json();
    let served_image = served_index["manifests"][0]["digest"].as_str().unwrap();
    let referrers = app
        .get(&format!("/v2/acme/plain/referrers/{served_image}"))
        .json();
    let types: Vec<&Value> = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|descriptor| &descriptor["artifactType"])
        .collect();
    assert_eq!(types, [&json!(SBOM_TYPE)], "{referrers}");
}
