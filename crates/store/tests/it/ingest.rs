//! Imports of well-formed archives of every layout.

use buildgrid_core::Digest;
use buildgrid_core::media_type::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
use serde_json::{Value, json};

use crate::support::{
    Image, LayerFormat, Member, check_blob_files, check_served_blob, check_stored_image,
    descriptor, docker_save, file, gzip, json_bytes, layer, multi_platform_archive, oci_image,
    oci_layout, oci_single, repo_name, snapshot, tag_name, tar, test_store,
};

/// What the report of an import says about its layers.
#[derive(Debug, PartialEq, Eq)]
struct LayerCounts {
    compressed: usize,
    reused: usize,
    copied: usize,
}

fn layer_counts(report: &buildgrid_store::ingest::ImportReport) -> LayerCounts {
    LayerCounts {
        compressed: report.layers_compressed,
        reused: report.layers_reused,
        copied: report.layers_copied,
    }
}

/// Imports `members` as `app:v1` into a fresh store and checks it is a single-platform image of
/// `image` with `counts`. Returns the stored manifest digest.
#[track_caller]
fn check_single_image(members: &[Member], image: &Image, counts: LayerCounts) -> Digest {
    let t = test_store();
    let report = t.import("image.tar", &tar(members), "app", "v1").unwrap();
    assert_eq!(report.repo, repo_name("app"));
    assert_eq!(report.tag, tag_name("v1"));
    assert_eq!(report.media_type, OCI_MANIFEST);
    assert_eq!(report.platforms, ["linux/amd64"]);
    assert_eq!(layer_counts(&report), counts);

    let by_tag = t
        .store
        .db
        .manifest_by_tag(&repo_name("app"), &tag_name("v1"))
        .unwrap();
    let by_tag = by_tag.expect("the tag resolves");
    assert_eq!(by_tag.digest, report.digest);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    check_stored_image(&t.store, &repo_name("app"), &report.digest, image);
    check_blob_files(&t.store);
    report.digest
}

#[test]
fn imports_legacy_docker_save() {
    let image = Image::new("amd64", &[layer("base"), layer("app"), layer("config")]);
    let counts = LayerCounts {
        compressed: 3,
        reused: 0,
        copied: 0,
    };
    check_single_image(&docker_save(&[("app:v1", &image)]), &image, counts);
}

#[test]
fn imports_docker_save_whose_repeated_layer_is_a_symlink() {
    let image = Image::new("amd64", &[layer("base"), layer("app"), layer("base")]);
    let members = docker_save(&[("app:v1", &image)]);
    let symlinks = members
        .iter()
        .filter(|m| matches!(m, Member::Symlink(..)))
        .count();
    assert_eq!(symlinks, 1, "docker_save links the repeated layer");
    let counts = LayerCounts {
        compressed: 2,
        reused: 1,
        copied: 0,
    };
    check_single_image(&members, &image, counts);
}

/// Some tools write gzip layers where docker writes plain tars: they are kept as they are.
#[test]
fn imports_docker_save_with_gzip_layer() {
    let image = Image::new("amd64", &[layer("base"), layer("app")]);
    let mut members = docker_save(&[("app:v1", &image)]);
    for member in &mut members {
        if let Member::File(name, bytes) = member
            && name.ends_with("/layer.tar")
            && *bytes == image.layers[1]
        {
            *bytes = gzip(bytes);
        }
    }
    let counts = LayerCounts {
        compressed: 1,
        reused: 0,
        copied: 1,
    };
    check_single_image(&members, &image, counts);
}

/// docker links a layer to the copy of another image saved in the same archive; here the only
/// listed path of the layer is a link, so its target must be read.
#[test]
fn reads_layers_through_links() {
    let image = Image::new("amd64", &[layer("base")]);
    let config_name = format!("{}.json", Digest::of(&image.config).hex());
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["app:v1"],"Layers":["bbb/layer.tar"]}}]"#
    );
    let links = [
        Member::Symlink("bbb/layer.tar".into(), "../aaa/layer.tar".into()),
        Member::Symlink("bbb/layer.tar".into(), "../ccc/../aaa/./layer.tar".into()),
        Member::Hardlink("bbb/layer.tar".into(), "aaa/layer.tar".into()),
        Member::Hardlink("bbb/layer.tar".into(), "./aaa/layer.tar".into()),
    ];
    for link in links {
        let members = [
            file("aaa/layer.tar", image.layers[0].clone()),
            link,
            file(&config_name, image.config.clone()),
            file("manifest.json", manifest.clone()),
        ];
        let counts = LayerCounts {
            compressed: 1,
            reused: 0,
            copied: 0,
        };
        check_single_image(&members, &image, counts);
    }
}

#[test]
fn imports_oci_layout_with_uncompressed_layers() {
    let image = Image::new("amd64", &[layer("base"), layer("app")]);
    let oci = oci_image(&image, LayerFormat::Tar);
    let counts = LayerCounts {
        compressed: 2,
        reused: 0,
        copied: 0,
    };
    let digest = check_single_image(&oci_single(&oci), &image, counts);
    assert_ne!(
        digest, oci.digest,
        "the manifest is rewritten for the compressed layers"
    );
}

#[test]
fn imports_oci_layout_with_gzip_layers_byte_for_byte() {
    let image = Image::new("amd64", &[layer("base"), layer("app")]);
    let oci = oci_image(&image, LayerFormat::Gzip);
    let counts = LayerCounts {
        compressed: 0,
        reused: 0,
        copied: 2,
    };
    let digest = check_single_image(&oci_single(&oci), &image, counts);
    assert_eq!(digest, oci.digest);
}

/// The same gzip layers and manifest as in the archive: the stored blobs are the archive's.
#[test]
fn keeps_gzip_layers_and_manifest_as_they_are() {
    let t = test_store();
    let image = Image::new("amd64", &[layer("base")]);
    let oci = oci_image(&image, LayerFormat::Gzip);
    let report = t
        .import("image.tar", &tar(&oci_single(&oci)), "app", "v1")
        .unwrap();
    assert_eq!(t.store.blobs.read(&report.digest).unwrap(), oci.manifest);
    for blob in &oci.blobs {
        assert_eq!(t.store.blobs.read(&Digest::of(blob)).unwrap(), *blob);
    }
}

/// Docker media types (as `skopeo copy` keeps them) become OCI ones.
#[test]
fn converts_docker_media_types_to_oci() {
    let image = Image::new("amd64", &[layer("base"), layer("app")]);
    let layers: Vec<Vec<u8>> = image.layers.iter().map(|l| gzip(l)).collect();
    let descriptors: Vec<Value> = layers
        .iter()
        .map(|l| descriptor(DOCKER_LAYER_GZIP, l))
        .collect();
    let manifest = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &image.config),
        "layers": descriptors,
    }));
    let mut blobs: Vec<&[u8]> = vec![&image.config, &manifest];
    blobs.extend(layers.iter().map(Vec::as_slice));
    let entry = descriptor(DOCKER_MANIFEST, &manifest);
    let members = oci_layout(&[entry], &blobs);
    let counts = LayerCounts {
        compressed: 0,
        reused: 0,
        copied: 2,
    };
    let digest = check_single_image(&members, &image, counts);
    assert_ne!(digest, Digest::of(&manifest));
}

/// Every layout, for the determinism checks.
fn all_layouts() -> Vec<(&'static str, Vec<u8>)> {
    let image = Image::new("amd64", &[layer("base"), layer("app"), layer("base")]);
    vec![
        ("docker save", tar(&docker_save(&[("app:v1", &image)]))),
        (
            "oci tar layers",
            tar(&oci_single(&oci_image(&image, LayerFormat::Tar))),
        ),
        (
            "oci gzip layers",
            tar(&oci_single(&oci_image(&image, LayerFormat::Gzip))),
        ),
        (
            "multi-platform tar layers",
            multi_platform_archive(LayerFormat::Tar).0,
        ),
        (
            "multi-platform gzip layers",
            multi_platform_archive(LayerFormat::Gzip).0,
        ),
    ]
}

#[test]
fn same_archive_gives_same_digests_in_fresh_stores() {
    for (name, archive) in all_layouts() {
        let first = test_store();
        let second = test_store();
        let a = first.import("image.tar", &archive, "app", "v1").unwrap();
        let b = second
            .import("image.tar", &archive, "other/name", "v2")
            .unwrap();
        assert_eq!(a.digest, b.digest, "{name}");
        assert_eq!(
            snapshot(&first.store).files,
            snapshot(&second.store).files,
            "{name}: the same blobs"
        );
    }
}

#[test]
fn importing_again_reuses_every_uncompressed_layer() {
    let image = Image::new("amd64", &[layer("base"), layer("app"), layer("extra")]);
    let cases = [
        ("docker save", tar(&docker_save(&[("app:v1", &image)]))),
        (
            "oci tar layers",
            tar(&oci_single(&oci_image(&image, LayerFormat::Tar))),
        ),
    ];
    for (name, archive) in cases {
        let t = test_store();
        let first = t.import("image.tar", &archive, "app", "v1").unwrap();
        let before = snapshot(&t.store);
        let again = t.import("image.tar", &archive, "app", "v1").unwrap();
        assert_eq!(again.digest, first.digest, "{name}");
        let counts = LayerCounts {
            compressed: 0,
            reused: 3,
            copied: 0,
        };
        assert_eq!(layer_counts(&again), counts, "{name}");
        assert_eq!(snapshot(&t.store), before, "{name}: nothing new");
    }
}

/// Two images sharing a base layer, each archive in either layout: the second import reuses the
/// blob the first stored, and both manifests name it.
#[test]
fn layer_shared_by_two_images_is_compressed_once() {
    let base = layer("base");
    let first = Image::new("amd64", &[base.clone(), layer("first")]);
    let second = Image::new("amd64", &[base.clone(), layer("second")]);
    let docker = |image: &Image| tar(&docker_save(&[("x:y", image)]));
    let oci = |image: &Image| tar(&oci_single(&oci_image(image, LayerFormat::Tar)));
    type MakeArchive<'a> = &'a dyn Fn(&Image) -> Vec<u8>;
    let layouts: [(&str, MakeArchive); 2] = [("docker", &docker), ("oci", &oci)];
    for (first_layout, first_archive) in layouts {
        for (second_layout, second_archive) in layouts {
            let case = format!("{first_layout} then {second_layout}");
            let t = test_store();
            let a = t
                .import("a.tar", &first_archive(&first), "first", "v1")
                .unwrap();
            let b = t
                .import("b.tar", &second_archive(&second), "second", "v1")
                .unwrap();
            assert_eq!(
                layer_counts(&a),
                LayerCounts {
                    compressed: 2,
                    reused: 0,
                    copied: 0
                },
                "{case}"
            );
            assert_eq!(
                layer_counts(&b),
                LayerCounts {
                    compressed: 1,
                    reused: 1,
                    copied: 0
                },
                "{case}"
            );
            let a_manifest = check_stored_image(&t.store, &repo_name("first"), &a.digest, &first);
            let b_manifest = check_stored_image(&t.store, &repo_name("second"), &b.digest, &second);
            assert_eq!(a_manifest["layers"][0], b_manifest["layers"][0], "{case}");
            assert_ne!(a_manifest["layers"][1], b_manifest["layers"][1], "{case}");
            check_blob_files(&t.store);
        }
    }
}

/// Blobs and manifests are served only for the repositories that imported them.
#[test]
fn blobs_and_manifests_belong_to_their_repository() {
    let t = test_store();
    let image = Image::new("amd64", &[layer("base")]);
    let report = t
        .import("a.tar", &tar(&docker_save(&[("a:b", &image)])), "app", "v1")
        .unwrap();
    let other = Image::new("amd64", &[layer("other")]);
    t.import(
        "b.tar",
        &tar(&docker_save(&[("a:b", &other)])),
        "other",
        "v1",
    )
    .unwrap();

    let manifest = check_stored_image(&t.store, &repo_name("app"), &report.digest, &image);
    let other_repo = repo_name("other");
    assert_eq!(
        t.store
            .db
            .manifest_by_digest(&other_repo, &report.digest)
            .unwrap(),
        None
    );
    assert_eq!(
        t.store
            .db
            .manifest_by_tag(&repo_name("app"), &tag_name("v2"))
            .unwrap(),
        None
    );
    assert_eq!(
        t.store
            .db
            .manifest_by_tag(&repo_name("nobody"), &tag_name("v1"))
            .unwrap(),
        None
    );
    for descriptor in [&manifest["config"], &manifest["layers"][0]] {
        let digest = Digest::parse(descriptor["digest"].as_str().unwrap()).unwrap();
        assert_eq!(t.store.db.repo_blob(&other_repo, &digest).unwrap(), None);
    }
}

/// A layer of `size` pseudo-random bytes: nothing gzip can shrink.
fn random_layer(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    tar(&[file("data/blob.bin", bytes)])
}

#[test]
fn a_layer_gzip_cannot_shrink_is_stored_as_its_tar_the_same_each_time() {
    let test = test_store();
    let random = random_layer(7, 3 << 20);
    let image = Image::new("amd64", &[layer("base"), random.clone()]);
    let archive = tar(&docker_save(&[("app:v1", &image)]));
    let report = test.import("one.tar", &archive, "acme/app", "v1").unwrap();
    let manifest: Value =
        serde_json::from_slice(&test.store.blobs.read(&report.digest).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers[0]["mediaType"], OCI_LAYER_GZIP);
    assert_eq!(layers[1]["mediaType"], OCI_LAYER_TAR);
    // Stored as it is: its digest is its diff id, and the registry serves the tar itself.
    assert_eq!(layers[1]["digest"], Digest::of(&random).to_string());
    assert_eq!(layers[1]["size"], random.len());
    let served = check_served_blob(&test.store, &repo_name("acme/app"), &layers[1]);
    assert_eq!(served, random);
    // Imported again under another name: the same digest, nothing stored twice.
    let again = test
        .import("two.tar", &archive, "acme/other", "v1")
        .unwrap();
    assert_eq!(again.digest, report.digest);
    assert_eq!(again.layers_compressed, 0);
}
