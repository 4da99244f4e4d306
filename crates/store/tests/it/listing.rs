//! Queries over stored images: tags, repositories, download counts, referrers.

use buildgrid_core::Digest;
use buildgrid_core::media_type::{OCI_EMPTY, OCI_MANIFEST};
use buildgrid_store::{DownloadCount, ReferrerRow, Store};
use serde_json::json;

use crate::support::{
    Image, TestStore, descriptor, docker_save, json_bytes, layer, oci_layout, repo_name, tag_name,
    tar, test_store,
};

fn small_archive(seed: &str) -> Vec<u8> {
    tar(&docker_save(&[(
        "x:y",
        &Image::new("amd64", &[layer(seed)]),
    )]))
}

/// A store holding the same image under each of `repos` and `tags`. Returns its digest.
fn store_with(repos: &[&str], tags: &[&str]) -> (TestStore, Digest) {
    let t = test_store();
    let archive = small_archive("base");
    let mut digest = None;
    for repo in repos {
        for tag in tags {
            digest = Some(t.import("image.tar", &archive, repo, tag).unwrap().digest);
        }
    }
    (t, digest.unwrap())
}

#[track_caller]
fn check_tags(store: &Store, last: Option<&str>, limit: usize, expected: &[&str]) {
    assert_eq!(
        store.db.tags(&repo_name("app"), last, limit).unwrap(),
        expected
    );
}

#[test]
fn tags_are_listed_in_byte_order_and_paginated() {
    let (t, _) = store_with(&["app"], &["latest", "v1.0", "V2", "1.0", "_x", "a-b"]);
    let store = &t.store;
    check_tags(
        store,
        None,
        100,
        &["1.0", "V2", "_x", "a-b", "latest", "v1.0"],
    );
    check_tags(store, None, 2, &["1.0", "V2"]);
    check_tags(store, Some("V2"), 2, &["_x", "a-b"]);
    check_tags(store, Some("a-b"), 2, &["latest", "v1.0"]);
    check_tags(store, Some("v1.0"), 2, &[]);
    check_tags(store, Some("b"), 100, &["latest", "v1.0"]);
    check_tags(store, Some(""), 1, &["1.0"]);
    check_tags(store, None, 0, &[]);
    assert_eq!(
        store.db.tags(&repo_name("nobody"), None, 100).unwrap(),
        Vec::<String>::new()
    );
}

#[track_caller]
fn check_repositories(store: &Store, last: Option<&str>, limit: usize, expected: &[&str]) {
    assert_eq!(store.db.repositories(last, limit).unwrap(), expected);
}

#[test]
fn repositories_are_listed_in_order_and_paginated() {
    let (t, _) = store_with(
        &["team/app", "busybox", "alpine/edge", "alpine", "a-b"],
        &["v1"],
    );
    let store = &t.store;
    let all = ["a-b", "alpine", "alpine/edge", "busybox", "team/app"];
    check_repositories(store, None, 100, &all);
    check_repositories(store, None, 2, &["a-b", "alpine"]);
    check_repositories(store, Some("alpine"), 2, &["alpine/edge", "busybox"]);
    check_repositories(store, Some("busybox"), 2, &["team/app"]);
    check_repositories(store, Some("team/app"), 2, &[]);
    check_repositories(store, Some("b"), 100, &["busybox", "team/app"]);

    // Following pages of one name each visits every repository once.
    let mut seen = Vec::new();
    while let [name] = store
        .db
        .repositories(seen.last().map(String::as_str), 1)
        .unwrap()
        .as_slice()
    {
        seen.push(name.clone());
    }
    assert_eq!(seen, all);
}

#[test]
fn retagging_points_the_tag_at_the_new_manifest() {
    let t = test_store();
    let first = t
        .import("a.tar", &small_archive("first"), "app", "latest")
        .unwrap();
    let second = t
        .import("b.tar", &small_archive("second"), "app", "latest")
        .unwrap();
    assert_ne!(first.digest, second.digest);
    let repo = repo_name("app");
    let tagged = t
        .store
        .db
        .manifest_by_tag(&repo, &tag_name("latest"))
        .unwrap()
        .unwrap();
    assert_eq!(tagged.digest, second.digest);
    let old = t.store.db.manifest_by_digest(&repo, &first.digest).unwrap();
    assert_eq!(
        old.map(|m| m.digest),
        Some(first.digest),
        "the old manifest stays"
    );
    assert_eq!(t.store.db.tags(&repo, None, 100).unwrap(), ["latest"]);
}

#[test]
fn downloads_add_up_per_repository_and_manifest() {
    let (t, digest) = store_with(&["app", "other"], &["v1"]);
    let second = t
        .import("b.tar", &small_archive("second"), "app", "v2")
        .unwrap()
        .digest;
    let count = |repo: &str, digest: &Digest, count: u64| DownloadCount {
        repo: repo_name(repo),
        digest: digest.clone(),
        count,
    };
    let downloads =
        |repo: &str, digest: &Digest| t.store.db.downloads(&repo_name(repo), digest).unwrap();
    assert_eq!(downloads("app", &digest), 0);

    let db = &t.store.db;
    db.add_downloads(&[
        count("app", &digest, 2),
        count("app", &digest, 3),
        count("other", &digest, 1),
    ])
    .unwrap();
    assert_eq!(downloads("app", &digest), 5);
    assert_eq!(downloads("other", &digest), 1);
    assert_eq!(downloads("app", &second), 0);

    db.add_downloads(&[count("app", &digest, 1), count("app", &second, 4)])
        .unwrap();
    assert_eq!(downloads("app", &digest), 6);
    assert_eq!(downloads("app", &second), 4);
    db.add_downloads(&[]).unwrap();

    // Counts of manifests the repository does not hold are dropped.
    let before = db.row_counts().unwrap();
    let unknown = Digest::of(b"no such manifest");
    db.add_downloads(&[
        count("app", &unknown, 7),
        count("nobody", &digest, 1),
        count("other", &second, 1),
    ])
    .unwrap();
    assert_eq!(db.row_counts().unwrap(), before);
    assert_eq!(downloads("app", &unknown), 0);
    assert_eq!(downloads("nobody", &digest), 0);
    assert_eq!(downloads("other", &second), 0);
}

/// An artifact (an SBOM) whose `subject` is an image of the same repository is listed among
/// that image's referrers.
#[test]
fn artifact_with_subject_is_a_referrer() {
    let t = test_store();
    let image = t
        .import("image.tar", &small_archive("base"), "app", "v1")
        .unwrap();
    let image_manifest = t.store.blobs.read(&image.digest).unwrap();
    let sbom_type = "application/spdx+json";
    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    let empty = b"{}";
    let artifact = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": sbom_type,
        "config": descriptor(OCI_EMPTY, empty),
        "layers": [descriptor(sbom_type, sbom)],
        "subject": descriptor(OCI_MANIFEST, &image_manifest),
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }));
    let archive = tar(&oci_layout(
        &[descriptor(OCI_MANIFEST, &artifact)],
        &[empty, sbom, &artifact],
    ));
    let report = t.import("sbom.tar", &archive, "app", "sbom").unwrap();
    assert_eq!(report.digest, Digest::of(&artifact), "stored byte for byte");
    assert_eq!(report.platforms, Vec::<String>::new());

    let repo = repo_name("app");
    let expected = ReferrerRow {
        digest: Digest::of(&artifact),
        media_type: OCI_MANIFEST.to_owned(),
        size: artifact.len() as u64,
        artifact_type: Some(sbom_type.to_owned()),
        annotations: Some(r#"{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}"#.into()),
    };
    let db = &t.store.db;
    assert_eq!(
        db.referrers(&repo, &image.digest, None).unwrap(),
        std::slice::from_ref(&expected)
    );
    assert_eq!(
        db.referrers(&repo, &image.digest, Some(sbom_type)).unwrap(),
        [expected]
    );
    assert_eq!(
        db.referrers(&repo, &image.digest, Some("application/other"))
            .unwrap(),
        []
    );
    assert_eq!(
        db.referrers(&repo_name("other"), &image.digest, None)
            .unwrap(),
        []
    );
    assert_eq!(db.referrers(&repo, &report.digest, None).unwrap(), []);
}
