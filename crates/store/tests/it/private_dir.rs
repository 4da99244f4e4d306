//! The data directory is private to its user: made 0700 with 0600 files, an existing open one
//! closed on open, and one that belongs to another user refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use buildgrid_store::{Store, StoreError};

use crate::support::{Image, docker_save, layer, tar, test_store};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o777
}

#[test]
fn a_new_data_directory_is_private_with_its_database_and_blobs() {
    let test = test_store();
    let root = test.store.root();
    assert_eq!(mode(root), 0o700);
    assert_eq!(mode(&root.join("buildgrid.db")), 0o600);
    let archive = tar(&docker_save(&[(
        "x:y",
        &Image::new("amd64", &[layer("a")]),
    )]));
    let report = test
        .import("image.tar", &archive, "acme/app", "v1")
        .unwrap();
    assert!(test.store.blobs.contains(&report.digest).unwrap());
    let mut dirs = vec![root.join("blobs")];
    let mut blobs = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                blobs += 1;
                assert_eq!(
                    mode(&path) & 0o077,
                    0,
                    "{} is {:o}",
                    path.display(),
                    mode(&path)
                );
            }
        }
    }
    assert!(blobs >= 3, "only {blobs} blobs");
}

#[test]
fn an_existing_open_data_directory_is_closed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    drop(Store::open_with_key(&root, None).unwrap());
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = root.join("buildgrid.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(Store::open_with_key(&root, None).unwrap());
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn a_data_directory_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir(&root).unwrap();
    // 65534 is `nobody`; changing a file's owner needs root, which the tests run as.
    std::os::unix::fs::chown(&root, Some(65534), None)
        .expect("chown to nobody (the store tests run as root)");
    let me = std::fs::metadata(dir.path()).unwrap().uid();
    match Store::open_with_key(&root, None) {
        Err(error @ StoreError::ForeignOwner { .. }) => {
            let text = error.to_string();
            assert!(text.contains("belongs to uid 65534"), "{text}");
            assert!(text.contains(&format!("chown -R {me}")), "{text}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a data directory of uid 65534 was opened"),
    }
    assert!(!root.join("buildgrid.db").exists());
}
