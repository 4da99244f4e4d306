//! Spooling an archive that arrives as a stream, compressing its new layers on the way.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use buildgrid_store::image::{ImageDir, image_dir};
use buildgrid_store::ingest::{ImportReport, IngestError, import_archive_with, spool_archive};

use crate::support::{
    self, Image, LayerFormat, docker_save, file, layer, oci_image, oci_single, repo_name, tag_name,
    tar, test_store,
};

/// A layer large enough to be compressed ahead: a few MiB that do not repeat.
fn big_layer(seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let bytes: Vec<u8> = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    tar(&[file("data/blob.bin", bytes)])
}

/// A layer large enough to be compressed ahead, that gzip shrinks.
fn big_text_layer() -> Vec<u8> {
    let text: String = (0..100_000)
        .map(|i| format!("line {i} of a layer that compresses\n"))
        .collect();
    tar(&[file("data/text.txt", text)])
}

/// Spools `archive` into `spool`, then imports the spool as `app:<tag>` without labels.
fn spool_and_import(
    store: &buildgrid_store::Store,
    archive: &[u8],
    spool: &std::path::Path,
    tag: &str,
) -> (usize, Result<ImportReport, IngestError>) {
    let prepared = spool_archive(store, archive, spool, &[]).unwrap();
    let compressed_ahead = prepared.len();
    let report = import_archive_with(
        store,
        spool,
        &repo_name("app"),
        &tag_name(tag),
        &BTreeMap::new(),
        prepared,
    );
    (compressed_ahead, report)
}

#[test]
fn a_layer_compressed_ahead_is_read_back_from_its_blob_where_the_import_needs_it() {
    // The config declares other diff ids than the layers have: the import reads the content to
    // say what it is, which the spool does not hold.
    for content in [big_layer(3), big_text_layer()] {
        let image = Image {
            config: support::image_config("amd64", &[layer("declared")]),
            layers: vec![content.clone()],
        };
        let archive = tar(&docker_save(&[("app:v1", &image)]));
        let t = test_store();
        let spool = t.dir.path().join("spool.tar");
        let (compressed_ahead, report) = spool_and_import(&t.store, &archive, &spool, "v1");
        assert_eq!(compressed_ahead, 1);
        let error = report.unwrap_err();
        let actual = buildgrid_core::Digest::of(&content);
        assert!(
            error.to_string().contains(&actual.to_string()),
            "the error names the content's own digest ({actual}): {error}"
        );
        assert!(t.store.db.repositories(None, 10).unwrap().is_empty());
    }
}

#[test]
fn spooling_copies_the_archive_and_compresses_new_layers_ahead() {
    let image = Image::new("amd64", &[big_layer(1), layer("small"), big_layer(2)]);
    for (layout, archive) in [
        ("docker", tar(&docker_save(&[("app:v1", &image)]))),
        (
            "oci",
            tar(&oci_single(&oci_image(&image, LayerFormat::Tar))),
        ),
    ] {
        let t = test_store();
        let spool = t.dir.path().join("spool.tar");
        let (compressed_ahead, report) = spool_and_import(&t.store, &archive, &spool, "v1");
        assert_eq!(compressed_ahead, 2, "{layout}: the two large layers");
        // The spool has the archive's size, but the layers compressed ahead are holes in it.
        let meta = std::fs::metadata(&spool).unwrap();
        assert_eq!(meta.len(), archive.len() as u64, "{layout}");
        assert!(
            meta.blocks() * 512 < meta.len() / 2,
            "{layout}: {} of {} bytes written",
            meta.blocks() * 512,
            meta.len()
        );
        let report = report.unwrap();
        assert_eq!(report.layers_compressed, 3, "{layout}");
        // Layers compressed ahead were listed on the way too.
        let data = image_dir(&t.store, &repo_name("app"), &report.digest, "data").unwrap();
        let Some(ImageDir::Entries(data)) = data else {
            panic!("{layout}: {data:?}")
        };
        assert_eq!(data.len(), 1, "{layout}");
        assert_eq!((data[0].name.as_str(), data[0].size), ("blob.bin", 3 << 20));
        // The same image as a plain import of the same archive.
        let plain = test_store()
            .import("image.tar", &archive, "app", "v1")
            .unwrap();
        assert_eq!(report.digest, plain.digest, "{layout}");

        // Spooled again, the layers are known: nothing is compressed ahead or after.
        let again = t.dir.path().join("again.tar");
        let (compressed_ahead, report) = spool_and_import(&t.store, &archive, &again, "v2");
        assert_eq!(
            compressed_ahead, 0,
            "{layout}: a known layer was compressed again"
        );
        let report = report.unwrap();
        assert_eq!(
            (report.layers_compressed, report.layers_reused),
            (0, 3),
            "{layout}"
        );
    }
}

#[test]
fn labels_are_added_to_the_config() {
    let t = test_store();
    let image = Image::new("amd64", &[layer("base")]);
    let archive = tar(&docker_save(&[("app:v1", &image)]));
    let path = t.dir.path().join("image.tar");
    std::fs::write(&path, &archive).unwrap();
    let labels = BTreeMap::from([(
        "org.opencontainers.image.revision".to_owned(),
        "abc".to_owned(),
    )]);
    let report = import_archive_with(
        &t.store,
        &path,
        &repo_name("app"),
        &tag_name("v1"),
        &labels,
        Default::default(),
    )
    .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&t.store.blobs.read(&report.digest).unwrap()).unwrap();
    let config_digest =
        buildgrid_core::Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&t.store.blobs.read(&config_digest).unwrap()).unwrap();
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        "abc"
    );
    assert_eq!(config["rootfs"], image_config_rootfs(&image));
}

fn image_config_rootfs(image: &Image) -> serde_json::Value {
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    config["rootfs"].clone()
}
