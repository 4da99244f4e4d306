//! `buildgrid backup` while the server serves pulls and stores images, `restore` into a fresh
//! data directory that then serves every image, and `fsck`.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use buildgrid_store::Store;
use serde_json::Value;

use crate::support::{BIN, Buildgrid, TestImage, run, run_ok, sha256_hex};

fn fsck(data: &Path) -> Output {
    std::process::Command::new(BIN)
        .arg("fsck")
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

/// Copies the image with skopeo (which checks every blob's digest) and checks the manifest's.
fn pull_and_verify(host: &str, repo: &str, tag: &str, digest: &str) {
    let source = format!("docker://{host}/{repo}:{tag}");
    let raw = run_ok(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &source],
    );
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        digest,
        "{repo}:{tag}"
    );
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &source,
            &format!("dir:{}", dir.path().display()),
        ],
    );
    let copied = std::fs::read(dir.path().join("manifest.json")).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&copied)), digest);
}

#[test]
fn backup_while_serving_restores_a_store_that_serves_every_image() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let one = TestImage::build("backup one", 4);
    let two = TestImage::build("backup two", 1);
    let three = TestImage::build("backup three", 2);
    let mut images = vec![
        (
            "acme/one",
            "v1",
            buildgrid.import_ok(&one.archive, "acme/one", "v1"),
        ),
        (
            "acme/two",
            "v1",
            buildgrid.import_ok(&two.archive, "acme/two", "v1"),
        ),
    ];

    // Pulls go on all through the backup, and an import stores a new image meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let puller = {
        let (stop, pulls, host) = (stop.clone(), pulls.clone(), buildgrid.host());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let dir = tempfile::tempdir().unwrap();
                let source = format!("docker://{host}/acme/one:v1");
                let target = format!("dir:{}", dir.path().display());
                let output = run(
                    "skopeo",
                    &["copy", "--src-tls-verify=false", &source, &target],
                );
                assert!(
                    output.status.success(),
                    "a pull during the backup failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                pulls.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while pulls.load(Ordering::Relaxed) == 0 && !puller.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let importer = {
        let (data, archive) = (buildgrid.data_dir(), three.archive.clone());
        std::thread::spawn(move || {
            std::process::Command::new(BIN)
                .arg("import")
                .arg(&archive)
                .args(["--repo", "acme/three", "--tag", "v1", "--data"])
                .arg(&data)
                .output()
                .unwrap()
        })
    };
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup");
    let printed = buildgrid.cli_ok(&["backup", backup.to_str().unwrap()]);
    assert!(printed.starts_with("backup in "), "{printed}");
    let imported = importer.join().unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    puller.join().expect("pulls during the backup succeed");
    assert!(pulls.load(Ordering::Relaxed) > 0);

    // A second backup into the same directory is refused: it is not empty.
    let again = buildgrid.cli(&["backup", backup.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));

    // Restore into a fresh directory, and refuse a non-empty one.
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let restore = |data: &Path| {
        std::process::Command::new(BIN)
            .arg("restore")
            .arg(&backup)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap()
    };
    let output = restore(&data);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = restore(&data);
    assert!(!output.status.success(), "a restore over a store succeeded");
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not empty"));

    let checked = fsck(&data);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "fsck of the restored store:\n{report}"
    );
    assert!(report.contains("no problems"), "{report}");

    // The image imported during the backup is in it when its rows were in the snapshot.
    let restored = Store::open(&data).unwrap();
    let three_repo = buildgrid_core::RepoName::parse("acme/three").unwrap();
    let tag = buildgrid_core::Tag::parse("v1").unwrap();
    if let Some(row) = restored.db.manifest_by_tag(&three_repo, &tag).unwrap() {
        images.push(("acme/three", "v1", row.digest.to_string()));
    }
    drop(restored);

    let served = Buildgrid::spawn_in(fresh);
    for (repo, tag, digest) in &images {
        pull_and_verify(&served.host(), repo, tag, digest);
    }
    // The restored server runs what it pulls, as the original did.
    let reference = format!("{}/acme/two:v1", served.host());
    run_ok("docker", &["pull", &reference]);
    assert_eq!(
        run_ok("docker", &["run", "--rm", &reference]).trim(),
        "backup two"
    );
    run_ok("docker", &["rmi", "--no-prune", &reference]);
}

#[test]
fn a_directory_that_is_not_a_finished_backup_is_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("buildgrid.db"), b"").unwrap();
    let output = std::process::Command::new(BIN)
        .arg("restore")
        .arg(dir.path())
        .arg("--data")
        .arg(dir.path().join("new"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("is not a complete buildgrid backup"),
        "{stderr}"
    );
    assert!(!dir.path().join("new").exists());
}

#[test]
fn fsck_finds_missing_damaged_and_unreferenced_blobs() {
    let buildgrid = Buildgrid::spawn();
    let image = TestImage::build("fsck", 1);
    let digest = buildgrid.import_ok(&image.archive, "acme/fsck", "v1");
    let data = buildgrid.data_dir();
    let clean = fsck(&data);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        data.join("blobs/sha256").join(&hex[..2]).join(hex)
    };
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    // Deleted, damaged (same size, one byte changed), and a file no row names.
    std::fs::remove_file(blob(&config)).unwrap();
    let damaged = layers.last().unwrap();
    let mut bytes = std::fs::read(blob(damaged)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(blob(damaged), &bytes).unwrap();
    let stray_bytes = b"a blob nobody recorded";
    let stray = format!("sha256:{}", sha256_hex(stray_bytes));
    std::fs::create_dir_all(blob(&stray).parent().unwrap()).unwrap();
    std::fs::write(blob(&stray), stray_bytes).unwrap();

    let checked = fsck(&data);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("blob {config}: missing")),
        "{report}"
    );
    assert!(
        report.contains(&format!("blob {damaged}: damaged")),
        "{report}"
    );
    assert!(
        report.contains(&format!("blob {stray}: unreferenced")),
        "{report}"
    );
    assert!(report.contains("3 problems"), "{report}");

    // A backup refuses to copy the damaged store rather than keep the damage.
    let target = tempfile::tempdir().unwrap();
    let output = buildgrid.cli(&["backup", target.path().join("b").to_str().unwrap()]);
    assert!(!output.status.success());
}
