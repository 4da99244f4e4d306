//! Refused archives: a clear error, and the store exactly as it was (rows, and files under
//! `blobs/` and `tmp/`, so no blob is ever visible partially).

use buildgrid_core::Digest;
use buildgrid_core::media_type::OCI_MANIFEST;

use crate::support::{
    Image, LayerFormat, Member, TestStore, blob_member, descriptor, docker_save, file, gzip,
    image_config, layer, oci_image, oci_layout, oci_single, platform_descriptor, snapshot, tar,
    test_store, with_file,
};

/// A store already holding an image, so that a refused import has rows and blobs to leave be.
fn populated_store() -> TestStore {
    let t = test_store();
    let image = Image::new("amd64", &[layer("stored"), layer("base")]);
    let archive = tar(&docker_save(&[("stored:v1", &image)]));
    t.import("stored.tar", &archive, "stored", "v1").unwrap();
    t
}

/// Importing `archive` into `t` fails with a message containing `expected` and changes nothing.
#[track_caller]
fn check_refused_by(t: &TestStore, archive: &[u8], expected: &str) -> String {
    let before = snapshot(&t.store);
    let error = t
        .import("bad.tar", archive, "app", "v1")
        .expect_err("the archive is refused");
    let message = error.to_string();
    assert!(
        message.contains(expected),
        "{message:?} should contain {expected:?}"
    );
    assert_eq!(
        snapshot(&t.store),
        before,
        "a refused import changes nothing: {message}"
    );
    message
}

#[track_caller]
fn check_refused(archive: &[u8], expected: &str) {
    check_refused_by(&populated_store(), archive, expected);
}

/// The name of the member holding `content`.
fn member_name(members: &[Member], content: &[u8]) -> String {
    members
        .iter()
        .find_map(|m| match m {
            Member::File(name, bytes) if bytes == content => Some(name.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn refuses_truncated_archives() {
    // A layer of some 200 KB between two small ones: cutting the archive in half lands in it.
    let big = tar(&[file("data/big", vec![7u8; 200_000])]);
    let image = Image::new("amd64", &[layer("base"), big.clone(), layer("app")]);
    let members = docker_save(&[("app:v1", &image)]);
    let big_member = member_name(&members, &big);
    let archive = tar(&members);
    let expected = format!("bad.tar is truncated: {big_member} should end at byte");

    let half = archive.len() / 2;
    check_refused(&archive[..half], &expected);
    check_refused(&archive[..half + 1], &expected);
    check_refused(&archive[..half / 512 * 512], &expected);
}

/// Cutting an archive at any block before its end-of-archive marker leaves out something it
/// needs. Messages vary with what the cut removes; each says the archive is unusable.
#[test]
fn refuses_archives_cut_at_any_block() {
    let image = Image::new("amd64", &[layer("base"), layer("app")]);
    let layouts = [
        ("docker save", tar(&docker_save(&[("app:v1", &image)]))),
        (
            "oci tar layers",
            tar(&oci_single(&oci_image(&image, LayerFormat::Tar))),
        ),
        (
            "oci gzip layers",
            tar(&oci_single(&oci_image(&image, LayerFormat::Gzip))),
        ),
    ];
    for (name, archive) in layouts {
        let t = populated_store();
        // tar writes two zero blocks at the end; cutting them off loses nothing.
        let content_end = archive.len() - 1024;
        // At a block boundary, and one byte into a header or into data.
        for end in (0..content_end)
            .step_by(512)
            .flat_map(|block| [block, block + 1])
        {
            let before = snapshot(&t.store);
            let result = t.import("bad.tar", &archive[..end], "app", "v1");
            let message = result
                .expect_err(&format!("{name} cut at {end}"))
                .to_string();
            let explained = ["truncated", "incomplete", "not an image archive"]
                .iter()
                .any(|word| message.contains(word));
            assert!(explained, "{name} cut at {end}: {message}");
            assert_eq!(snapshot(&t.store), before, "{name} cut at {end}: {message}");
        }
    }
}

/// `tar` ends its iteration quietly at end of file on a block boundary; a file cut there lacks
/// the end-of-archive blocks and must be reported as truncated, not as some other archive.
#[test]
fn archive_cut_at_an_entry_boundary_is_reported_as_truncated() {
    let image = Image::new("amd64", &[layer("base")]);
    let archive = tar(&docker_save(&[("app:v1", &image)]));
    // manifest.json is the last entry: its header starts 512 bytes before its data.
    let manifest_len = archive.len() - 1024;
    let manifest_header = (0..manifest_len)
        .step_by(512)
        .rev()
        .find(|&at| archive[at..at + 100].starts_with(b"manifest.json\0"))
        .unwrap();
    check_refused(&archive[..manifest_header], "bad.tar is truncated");
    check_refused(&archive[..manifest_header + 1], "bad.tar is truncated");
}

#[test]
fn refuses_files_that_are_not_image_archives() {
    check_refused(
        b"",
        "bad.tar is not an image archive (a tar written by `docker save` or an OCI archive): it is only 0 bytes long",
    );
    check_refused(b"hello, world\n", "it is only 13 bytes long");
    check_refused(
        "not a tar at all\n".repeat(100).as_bytes(),
        "bad.tar is not an image archive",
    );
    check_refused(&[0u8; 2048], "it holds no files");
    check_refused(
        &tar(&[file("hello.txt", "hi")]),
        "it has neither index.json (OCI layout) nor manifest.json (docker save)",
    );

    let image = Image::new("amd64", &[layer("base")]);
    let archive = tar(&docker_save(&[("app:v1", &image)]));
    check_refused(
        &gzip(&archive),
        "it is gzip-compressed; decompress it first (gunzip)",
    );
}

#[test]
fn refuses_docker_save_of_two_images() {
    let first = Image::new("amd64", &[layer("first")]);
    let second = Image::new("amd64", &[layer("second")]);
    let archive = tar(&docker_save(&[
        ("first:v1", &first),
        ("second:v2", &second),
    ]));
    check_refused(
        &archive,
        "the archive holds 2 images (first:v1, second:v2); save one image per archive",
    );
}

#[test]
fn refuses_malformed_docker_save() {
    let image = Image::new("amd64", &[layer("base"), layer("app")]);
    let members = docker_save(&[("app:v1", &image)]);

    let no_image = with_file(&members, "manifest.json", b"[]");
    check_refused(
        &tar(&no_image),
        "invalid image archive: manifest.json lists no image",
    );
    let not_json = with_file(&members, "manifest.json", b"{\"Config\":");
    check_refused(&tar(&not_json), "invalid image archive: manifest.json: ");

    let config_name = format!("{}.json", Digest::of(&image.config).hex());
    let one_layer = image_config("amd64", &[layer("base")]);
    let fewer_diff_ids = with_file(&members, &config_name, &one_layer);
    check_refused(
        &tar(&fewer_diff_ids),
        &format!("{config_name} lists 1 layers but manifest.json lists 2"),
    );

    let app_member = member_name(&members, &layer("app"));
    let missing: Vec<Member> = members
        .iter()
        .filter(|m| !matches!(m, Member::File(name, _) if *name == app_member))
        .cloned()
        .collect();
    check_refused(
        &tar(&missing),
        &format!("bad.tar lacks {app_member}: the archive is incomplete or truncated"),
    );
}

#[test]
fn refuses_docker_layer_not_matching_its_diff_id() {
    let declared = Image::new("amd64", &[layer("base"), layer("app")]);
    for tampered in [layer("tampered"), gzip(&layer("tampered"))] {
        let image = Image {
            config: declared.config.clone(),
            layers: vec![layer("base"), tampered.clone()],
        };
        let members = docker_save(&[("app:v1", &image)]);
        let member = member_name(&members, &tampered);
        let expected = format!(
            " does not match its digest (expected {}, got {}): the archive is corrupt",
            Digest::of(&layer("app")),
            Digest::of(&layer("tampered")),
        );
        let message = check_refused_by(&populated_store(), &tar(&members), &expected);
        assert!(message.starts_with(&member), "{message}");
    }
}

/// Each blob of an OCI layout is checked against its digest: manifest, config, layers.
#[test]
fn refuses_oci_blob_not_matching_its_digest() {
    // Layers the populated store lacks: a stored one is reused without reading the archive.
    let image = Image::new("amd64", &[layer("one"), layer("two")]);
    for format in [LayerFormat::Tar, LayerFormat::Gzip] {
        let oci = oci_image(&image, format);
        let members = oci_single(&oci);
        let mut named: Vec<&[u8]> = vec![&oci.manifest];
        named.extend(oci.blobs.iter().map(Vec::as_slice));
        for blob in named {
            let digest = Digest::of(blob);
            // Same kind of content, so that only the digest check can tell.
            let other = match format {
                LayerFormat::Gzip if blob[..2] == [0x1f, 0x8b] => gzip(&layer("tampered")),
                _ => layer("tampered"),
            };
            let tampered = with_file(&members, &blob_member(&digest), &other);
            let expected = format!(
                "{} does not match its digest (expected {digest}, got {}): the archive is corrupt",
                blob_member(&digest),
                Digest::of(&other),
            );
            check_refused(&tar(&tampered), &expected);
        }
    }
}

#[test]
fn refuses_gzip_layer_not_matching_its_diff_id() {
    let declared = Image::new("amd64", &[layer("base"), layer("app")]);
    let image = Image {
        config: declared.config.clone(),
        layers: vec![layer("base"), layer("tampered")],
    };
    let oci = oci_image(&image, LayerFormat::Gzip);
    let expected = format!(
        "{} (uncompressed) does not match its digest (expected {}, got {})",
        blob_member(&Digest::of(&oci.blobs[2])),
        Digest::of(&layer("app")),
        Digest::of(&layer("tampered")),
    );
    check_refused(&tar(&oci_single(&oci)), &expected);
}

#[test]
fn refuses_gzip_layer_that_does_not_decompress() {
    let image = Image::new("amd64", &[layer("base")]);
    let mut oci = oci_image(&image, LayerFormat::Gzip);
    let broken = b"\x1f\x8b not really gzip".to_vec();
    let mut manifest: serde_json::Value = serde_json::from_slice(&oci.manifest).unwrap();
    manifest["layers"][0] = descriptor(buildgrid_core::media_type::OCI_LAYER_GZIP, &broken);
    oci.manifest = serde_json::to_vec(&manifest).unwrap();
    oci.blobs[1] = broken.clone();
    let expected = format!(
        "invalid image archive: cannot read {}: ",
        blob_member(&Digest::of(&broken))
    );
    check_refused(&tar(&oci_single(&oci)), &expected);
}

#[test]
fn refuses_oci_layout_of_several_images() {
    let first = oci_image(&Image::new("amd64", &[layer("first")]), LayerFormat::Gzip);
    let second = oci_image(&Image::new("amd64", &[layer("second")]), LayerFormat::Gzip);
    let mut blobs: Vec<&[u8]> = Vec::new();
    for oci in [&first, &second] {
        blobs.extend(oci.blobs.iter().map(Vec::as_slice));
        blobs.push(&oci.manifest);
    }
    let expected = format!(
        "index.json lists 2 images ({}, {}); an archive must hold one image, or one per platform",
        first.digest, second.digest
    );
    let without_platforms = [
        descriptor(OCI_MANIFEST, &first.manifest),
        descriptor(OCI_MANIFEST, &second.manifest),
    ];
    check_refused(&tar(&oci_layout(&without_platforms, &blobs)), &expected);
    let same_platform = [
        platform_descriptor(OCI_MANIFEST, &first.manifest, "amd64"),
        platform_descriptor(OCI_MANIFEST, &second.manifest, "amd64"),
    ];
    check_refused(&tar(&oci_layout(&same_platform, &blobs)), &expected);
}

#[test]
fn refuses_oci_layout_lacking_a_blob() {
    let oci = oci_image(&Image::new("amd64", &[layer("base")]), LayerFormat::Gzip);
    for blob in [&oci.manifest, &oci.blobs[0], &oci.blobs[1]] {
        let name = blob_member(&Digest::of(blob));
        let members: Vec<Member> = oci_single(&oci)
            .into_iter()
            .filter(|m| !matches!(m, Member::File(n, _) if *n == name))
            .collect();
        let expected = format!("bad.tar lacks {name}: the archive is incomplete or truncated");
        check_refused(&tar(&members), &expected);
    }
}
