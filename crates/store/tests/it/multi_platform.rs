//! Archives whose `index.json` lists several manifests, or an index of them.

use buildgrid_core::Digest;
use buildgrid_core::media_type::{OCI_INDEX, OCI_MANIFEST};
use serde_json::{Value, json};

use crate::support::{
    Image, LayerFormat, check_blob_files, check_stored_image, descriptor, layer,
    multi_platform_archive, oci_image, oci_index, oci_layout, platform_descriptor, repo_name,
    tag_name, tar, test_store,
};

#[test]
fn imports_multi_platform_index() {
    for format in [LayerFormat::Tar, LayerFormat::Gzip] {
        let t = test_store();
        let (archive, nested_digest, images) = multi_platform_archive(format);
        let report = t.import("multi.tar", &archive, "app", "v1").unwrap();
        assert_eq!(report.media_type, OCI_INDEX, "{format:?}");
        assert_eq!(
            report.platforms,
            ["linux/amd64", "linux/arm64"],
            "{format:?}"
        );
        // Rewritten when the children are (their layers compressed), kept byte for byte otherwise.
        let kept = format == LayerFormat::Gzip;
        assert_eq!(report.digest == nested_digest, kept, "{format:?}");

        let repo = repo_name("app");
        let top = t
            .store
            .db
            .manifest_by_tag(&repo, &tag_name("v1"))
            .unwrap()
            .unwrap();
        assert_eq!(top.digest, report.digest, "{format:?}");
        assert_eq!(top.media_type, OCI_INDEX, "{format:?}");
        let index: Value =
            serde_json::from_slice(&t.store.blobs.read(&top.digest).unwrap()).unwrap();
        assert_eq!(index["mediaType"], OCI_INDEX, "{format:?}");
        let children = index["manifests"].as_array().unwrap();
        assert_eq!(children.len(), 2, "{format:?}");
        for (child, (image, architecture)) in
            children.iter().zip(images.iter().zip(["amd64", "arm64"]))
        {
            assert_eq!(child["mediaType"], OCI_MANIFEST, "{format:?}");
            assert_eq!(child["platform"]["os"], "linux", "{format:?}");
            assert_eq!(
                child["platform"]["architecture"], architecture,
                "{format:?}"
            );
            let digest = Digest::parse(child["digest"].as_str().unwrap()).unwrap();
            let row = t
                .store
                .db
                .manifest_by_digest(&repo, &digest)
                .unwrap()
                .unwrap();
            assert_eq!(row.size, child["size"].as_u64().unwrap(), "{format:?}");
            check_stored_image(&t.store, &repo, &digest, image);
        }
        check_blob_files(&t.store);
    }
}

/// Docker 25+ with the containerd image store may list one manifest per platform directly in
/// `index.json`: the store makes an index of them.
#[test]
fn makes_an_index_of_index_json_listing_one_manifest_per_platform() {
    let t = test_store();
    let amd64 = Image::new("amd64", &[layer("base")]);
    let arm64 = Image::new("arm64", &[layer("base-arm")]);
    let amd64_oci = oci_image(&amd64, LayerFormat::Gzip);
    let arm64_oci = oci_image(&arm64, LayerFormat::Gzip);
    let mut blobs: Vec<&[u8]> = Vec::new();
    for oci in [&amd64_oci, &arm64_oci] {
        blobs.extend(oci.blobs.iter().map(Vec::as_slice));
        blobs.push(&oci.manifest);
    }
    let entries = [
        platform_descriptor(OCI_MANIFEST, &amd64_oci.manifest, "amd64"),
        platform_descriptor(OCI_MANIFEST, &arm64_oci.manifest, "arm64"),
    ];
    let report = t
        .import(
            "multi.tar",
            &tar(&oci_layout(&entries, &blobs)),
            "app",
            "v1",
        )
        .unwrap();
    assert_eq!(report.media_type, OCI_INDEX);
    assert_eq!(report.platforms, ["linux/amd64", "linux/arm64"]);
    let index: Value =
        serde_json::from_slice(&t.store.blobs.read(&report.digest).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().as_slice(), entries);
    let repo = repo_name("app");
    check_stored_image(&t.store, &repo, &amd64_oci.digest, &amd64);
    check_stored_image(&t.store, &repo, &arm64_oci.digest, &arm64);
}

/// A nested index whose arm64 manifest the archive lacks (docker saves only the platforms it
/// pulled): the stored index lists the platform the archive holds.
#[test]
fn leaves_out_platforms_the_archive_lacks() {
    let t = test_store();
    let amd64 = Image::new("amd64", &[layer("base")]);
    let arm64 = Image::new("arm64", &[layer("base-arm")]);
    let amd64_oci = oci_image(&amd64, LayerFormat::Gzip);
    let arm64_oci = oci_image(&arm64, LayerFormat::Gzip);
    let nested = oci_index(&[
        platform_descriptor(OCI_MANIFEST, &amd64_oci.manifest, "amd64"),
        platform_descriptor(OCI_MANIFEST, &arm64_oci.manifest, "arm64"),
    ]);
    let mut blobs: Vec<&[u8]> = amd64_oci.blobs.iter().map(Vec::as_slice).collect();
    blobs.push(&amd64_oci.manifest);
    blobs.push(&nested);
    let top = descriptor(OCI_INDEX, &nested);
    let report = t
        .import("one.tar", &tar(&oci_layout(&[top], &blobs)), "app", "v1")
        .unwrap();
    assert_eq!(report.media_type, OCI_INDEX);
    assert_eq!(report.platforms, ["linux/amd64"]);
    assert_ne!(report.digest, Digest::of(&nested));
    let index: Value =
        serde_json::from_slice(&t.store.blobs.read(&report.digest).unwrap()).unwrap();
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(
        children.as_slice(),
        [platform_descriptor(
            OCI_MANIFEST,
            &amd64_oci.manifest,
            "amd64"
        )]
    );
    let repo = repo_name("app");
    check_stored_image(&t.store, &repo, &amd64_oci.digest, &amd64);
    assert_eq!(
        t.store
            .db
            .manifest_by_digest(&repo, &arm64_oci.digest)
            .unwrap(),
        None
    );
}

/// Docker 25+ `docker save app:v1 app:latest` writes one index.json entry per tag, all with the
/// same digest and platform: that is one image.
#[test]
fn imports_index_json_naming_one_image_twice() {
    let t = test_store();
    let image = Image::new("amd64", &[layer("base"), layer("app")]);
    let oci = oci_image(&image, LayerFormat::Tar);
    let entries: Vec<Value> = ["v1", "latest"]
        .iter()
        .map(|tag| {
            let mut entry = platform_descriptor(OCI_MANIFEST, &oci.manifest, "amd64");
            entry["annotations"] = json!({
                "io.containerd.image.name": format!("docker.io/library/app:{tag}"),
                "org.opencontainers.image.ref.name": tag,
            });
            entry
        })
        .collect();
    let mut blobs: Vec<&[u8]> = oci.blobs.iter().map(Vec::as_slice).collect();
    blobs.push(&oci.manifest);
    let archive = tar(&oci_layout(&entries, &blobs));
    let report = t.import("image.tar", &archive, "app", "v1").unwrap();
    assert_eq!(report.media_type, OCI_MANIFEST);
    check_stored_image(&t.store, &repo_name("app"), &report.digest, &image);
}
