//! `buildgrid import` of the archives real tools write, and of broken ones.

use crate::support::{Buildgrid, TestImage, run_ok};

#[test]
fn oci_archive_from_skopeo_imports_and_pulls() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("from an OCI archive", 0);
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("image-oci.tar");
    run_ok(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", image.archive.display()),
            &format!("oci-archive:{}", oci.display()),
        ],
    );
    buildgrid.import_ok(&oci, "acme/oci", "v1");
    let reference = format!("{}/acme/oci:v1", buildgrid.host());
    run_ok("docker", &["pull", &reference]);
    let printed = run_ok("docker", &["run", "--rm", &reference]);
    assert_eq!(printed.trim(), "from an OCI archive");
    run_ok("docker", &["rmi", "--no-prune", &reference]);
}

#[test]
fn reimport_reuses_layers_and_gives_the_same_digest() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("twice", 0);
    let first = buildgrid.import(&image.archive, "acme/twice", "a");
    let second = buildgrid.import(&image.archive, "acme/twice", "b");
    let first = String::from_utf8(first.stdout).unwrap();
    let second = String::from_utf8(second.stdout).unwrap();
    assert!(first.contains("2 compressed, 0 reused"), "{first}");
    assert!(second.contains("0 compressed, 2 reused"), "{second}");
    let digest = |out: &str| out.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(digest(&first), digest(&second));
}

#[test]
fn broken_archives_are_refused_and_change_nothing() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("broken", 2);
    buildgrid.import_ok(&image.archive, "acme/good", "v1");
    let before = buildgrid.fingerprint();

    let bytes = std::fs::read(&image.archive).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("half", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("headers-only", bytes[..4096].to_vec(), ""),
        (
            "not-a-tar",
            b"this is not an archive at all".repeat(40),
            "not an image archive",
        ),
        ("empty", Vec::new(), "not an image archive"),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(format!("{name}.tar"));
        std::fs::write(&path, content).unwrap();
        let output = buildgrid.import(&path, "acme/broken", "v1");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: import succeeded");
        assert!(stderr.contains("import of"), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    let output = buildgrid.import(&image.archive, "Acme/Broken", "v1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OCI name rule"), "{stderr}");
    let missing = dir.path().join("missing.tar");
    let output = buildgrid.import(&missing, "acme/broken", "v1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read"), "{stderr}");

    assert_eq!(
        before,
        buildgrid.fingerprint(),
        "a failed import changed the store"
    );
}
