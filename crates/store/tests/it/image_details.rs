//! The details of an image and the platforms of an index.

use std::collections::BTreeMap;

use buildgrid_core::Digest;
use buildgrid_core::media_type::OCI_LAYER_GZIP;
use buildgrid_store::DownloadCount;
use buildgrid_store::image::{
    ImageFiles, PlatformManifest, image_details, image_files, platform_manifests,
};
use buildgrid_store::ingest::import_archive_with;
use serde_json::{Value, json};

use crate::support::{
    Image, LayerFormat, docker_save, file, json_bytes, layer, multi_platform_archive, repo_name,
    tag_name, tar, test_store,
};

const OS_RELEASE: &str = "NAME=Tiny\nVERSION_ID=1\n";

#[test]
fn details_of_an_image() {
    let t = test_store();
    let layers = [tar(&[file("usr/lib/os-release", OS_RELEASE)]), layer("app")];
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = json_bytes(&json!({
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "created": "2024-05-01T12:00:00Z",
        "config": {"Labels": {"org.opencontainers.image.description": "A tiny app"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }));
    let image = Image {
        config,
        layers: layers.to_vec(),
    };
    let path = t.dir.path().join("image.tar");
    std::fs::write(&path, tar(&docker_save(&[("app:v1", &image)]))).unwrap();
    let repo = repo_name("app");
    let labels = BTreeMap::from([(
        "org.opencontainers.image.revision".to_owned(),
        "abc123".to_owned(),
    )]);
    let report = import_archive_with(
        &t.store,
        &path,
        &repo,
        &tag_name("v1"),
        &labels,
        Default::default(),
    )
    .unwrap();
    let digest = report.digest;
    t.store
        .db
        .add_image_bases(&repo, &digest, &["debian:12".to_owned()])
        .unwrap();
    let pull = DownloadCount {
        repo: repo.clone(),
        digest: digest.clone(),
        count: 3,
    };
    t.store.db.add_downloads(&[pull]).unwrap();

    let details = image_details(&t.store, &repo, &digest).unwrap().unwrap();
    let manifest: Value = serde_json::from_slice(&t.store.blobs.read(&digest).unwrap()).unwrap();
    assert_eq!(details.digest, digest);
    assert_eq!(
        details.manifest_size,
        t.store.blobs.read(&digest).unwrap().len() as u64
    );
    assert_eq!(
        details.config_digest.to_string(),
        manifest["config"]["digest"]
    );
    assert_eq!(details.platform, "linux/arm64/v8");
    assert_eq!(details.created.as_deref(), Some("2024-05-01T12:00:00Z"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - 60..=now).contains(&details.stored_at),
        "{}",
        details.stored_at
    );
    assert_eq!(details.downloads, 3);
    assert_eq!(details.bases, ["debian:12"]);
    assert_eq!(
        details.labels,
        BTreeMap::from([
            (
                "org.opencontainers.image.description".to_owned(),
                "A tiny app".to_owned()
            ),
            (
                "org.opencontainers.image.revision".to_owned(),
                "abc123".to_owned()
            ),
        ])
    );
    assert_eq!(details.layers.len(), 2);
    let mut compressed = manifest["config"]["size"].as_u64().unwrap();
    for ((layer, descriptor), original) in details
        .layers
        .iter()
        .zip(manifest["layers"].as_array().unwrap())
        .zip(&layers)
    {
        assert_eq!(layer.digest.to_string(), descriptor["digest"]);
        assert_eq!(layer.size, descriptor["size"].as_u64().unwrap());
        assert_eq!(layer.media_type, OCI_LAYER_GZIP);
        assert_eq!(layer.diff_id, Some(Digest::of(original)));
        compressed += layer.size;
    }
    assert_eq!(details.compressed_size, compressed);
    let files = details.files.unwrap();
    // os-release, etc/app.conf, usr/bin/tool, usr/bin/app
    assert_eq!(files.files, 4);
    let sizes: usize = [
        OS_RELEASE.len(),
        "name = app\n".len(),
        "#!/bin/sh\necho app\n".len() * 50,
    ]
    .iter()
    .sum();
    assert_eq!(files.size, sizes as u64);
    assert_eq!(files.os.unwrap().display_name().as_deref(), Some("Tiny 1"));
}

#[test]
fn an_index_lists_its_platform_manifests() {
    let t = test_store();
    let (archive, _, _) = multi_platform_archive(LayerFormat::Tar);
    let report = t.import("multi.tar", &archive, "app", "v1").unwrap();
    let repo = repo_name("app");
    let platforms = platform_manifests(&t.store, &repo, &report.digest)
        .unwrap()
        .unwrap();
    let names: Vec<&str> = platforms.iter().map(|p| p.platform.as_str()).collect();
    assert_eq!(names, ["linux/amd64", "linux/arm64"]);
    assert!(
        image_details(&t.store, &repo, &report.digest)
            .unwrap()
            .is_none()
    );
    assert!(
        image_files(&t.store, &repo, &report.digest)
            .unwrap()
            .is_none()
    );
    for PlatformManifest {
        digest,
        platform,
        size,
        ..
    } in &platforms
    {
        let row = t
            .store
            .db
            .manifest_by_digest(&repo, digest)
            .unwrap()
            .unwrap();
        assert_eq!(row.size, *size);
        let details = image_details(&t.store, &repo, digest).unwrap().unwrap();
        assert_eq!(details.platform, *platform);
        assert!(details.files.is_some(), "{platform}");
        assert!(matches!(
            image_files(&t.store, &repo, digest).unwrap(),
            Some(ImageFiles::Collected(_))
        ));
        // An image manifest is not an index.
        assert!(
            platform_manifests(&t.store, &repo, digest)
                .unwrap()
                .is_none()
        );
    }
    let arm = image_files(&t.store, &repo, &platforms[1].digest)
        .unwrap()
        .unwrap();
    let ImageFiles::Collected(tree) = arm else {
        panic!("not collected")
    };
    let names: Vec<&str> = tree
        .dir("etc")
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["arm64.conf", "base-arm.conf"]);
}
