//! What garbage collection deleted is gone for pullers too: a manifest the cache holds answers
//! 404 once its row is gone, and so do its blobs; what stays answers as before.

use buildgrid_store::gc::GcOptions;

use crate::support::{docker_archive, layer_tar, spawn_app};

#[test]
fn a_collected_manifest_answers_404_even_when_cached() {
    let app = spawn_app();
    let old = docker_archive("old", &[layer_tar(&[("etc/old.conf", b"old\n")])]);
    let new = docker_archive("new", &[layer_tar(&[("etc/new.conf", b"new\n")])]);
    let old_digest = app.import("old.tar", &old, "new/gone", "v1");
    let by_digest = format!("/v2/new/gone/manifests/{old_digest}");
    let first = app.get(&by_digest);
    assert_eq!(first.status, 200);
    let manifest = first.json();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    // The tag moves to another image (an import over it): the old one is nobody's any more.
    let new_digest = app.import("new.tar", &new, "new/gone", "v1");
    assert_eq!(app.get(&by_digest).status, 200, "cached and still stored");

    let collection = app.store.gc(GcOptions::default()).unwrap();
    assert_eq!(collection.manifests, vec![format!("new/gone@{old_digest}")]);
    assert_eq!(app.get(&by_digest).status, 404);
    assert_eq!(app.head(&by_digest).status, 404);
    assert_eq!(app.get(&format!("/v2/new/gone/blobs/{layer}")).status, 404);
    assert_eq!(app.get("/v2/new/gone/manifests/v1").status, 200);
    assert_eq!(
        app.get(&format!("/v2/new/gone/manifests/{new_digest}"))
            .status,
        200
    );
    // Everything the seeded repositories hold is imported under tags: nothing else went.
    assert_eq!(app.get("/v2/library/app/manifests/latest").status, 200);
    assert!(app.store.fsck().unwrap().problems.is_empty());
}
