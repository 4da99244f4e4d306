//! The local blob backend passes the checks every backend passes (`conformance`).

use buildgrid_store::{LocalBlobs, conformance};

#[test]
fn the_local_backend_passes_the_blob_conformance_checks() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let backend = LocalBlobs::open(&dir.path().join("blobs")).unwrap();
    conformance::run(&backend, &scratch);
}
