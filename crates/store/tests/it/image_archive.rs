//! The downloadable archive of an image: deterministic, with stored checksums, and loaded by
//! the Docker engine as the image it was.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use buildgrid_core::Digest;
use buildgrid_store::image::{archive_checksums, write_image_archive};
use buildgrid_store::{ArchiveChecksums, Store};
use md5::Md5;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

use crate::support::{
    Image, LayerFormat, docker_save, layer, multi_platform_archive, oci_image, oci_single,
    repo_name, tar, test_store,
};

fn write(store: &Store, repo: &str, digest: &Digest, repo_tag: Option<&str>) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_image_archive(store, &repo_name(repo), digest, repo_tag, &mut bytes)
        .unwrap()
        .expect("an image manifest");
    bytes
}

fn checksums_of(bytes: &[u8]) -> ArchiveChecksums {
    ArchiveChecksums {
        size: bytes.len() as u64,
        md5: hex::encode(Md5::digest(bytes)),
        sha1: hex::encode(Sha1::digest(bytes)),
        sha256: hex::encode(Sha256::digest(bytes)),
        sha512: hex::encode(Sha512::digest(bytes)),
    }
}

#[test]
fn archive_is_the_same_bytes_every_time_with_stored_checksums() {
    let image = Image::new("amd64", &[layer("base"), layer("app"), layer("base")]);
    let t = test_store();
    let archive = tar(&docker_save(&[("app:v1", &image)]));
    let digest = t.import("image.tar", &archive, "app", "v1").unwrap().digest;
    let repo = repo_name("app");

    // Checksums first (computed by writing nowhere), then two writes.
    let sums = archive_checksums(&t.store, &repo, &digest, Some("host:5000/app:v1"))
        .unwrap()
        .unwrap();
    let first = write(&t.store, "app", &digest, Some("host:5000/app:v1"));
    let second = write(&t.store, "app", &digest, Some("host:5000/app:v1"));
    assert!(first == second, "two writes differ");
    assert_eq!(sums, checksums_of(&first));
    let reopened = Store::open(t.store.root()).unwrap();
    assert_eq!(
        archive_checksums(&reopened, &repo, &digest, Some("host:5000/app:v1")).unwrap(),
        Some(sums.clone())
    );

    // The name is part of the archive; an unnamed one has checksums of its own, stored on
    // its first write.
    let unnamed = write(&t.store, "app", &digest, None);
    assert_ne!(unnamed, first);
    assert_eq!(
        t.store.db.archive_checksums(&digest, "").unwrap(),
        Some(checksums_of(&unnamed))
    );

    // What it holds: docker's manifest.json naming the stored config and layers, and an OCI
    // layout that buildgrid imports back as the same manifest.
    let manifest = member(&first, "manifest.json");
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "host:5000/app:v1");
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 3);
    let stored: Value = serde_json::from_slice(&t.store.blobs.read(&digest).unwrap()).unwrap();
    let config = Digest::parse(stored["config"]["digest"].as_str().unwrap()).unwrap();
    assert_eq!(
        manifest[0]["Config"],
        format!("blobs/sha256/{}", config.hex())
    );
    assert_eq!(
        member(&first, manifest[0]["Config"].as_str().unwrap()),
        image.config
    );
    let again = test_store();
    let report = again.import("download.tar", &first, "app", "v1").unwrap();
    assert_eq!(report.digest, digest);

    // Not an image manifest of this repository.
    let (multi, _, _) = multi_platform_archive(LayerFormat::Tar);
    let index_digest = t.import("multi.tar", &multi, "multi", "v1").unwrap().digest;
    let mut sink = Vec::new();
    for (repo, digest) in [("multi", &index_digest), ("other", &digest)] {
        let written = write_image_archive(&t.store, &repo_name(repo), digest, None, &mut sink);
        assert!(written.unwrap().is_none(), "{repo}");
    }
    assert!(sink.is_empty());
}

fn member(archive: &[u8], name: &str) -> Vec<u8> {
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            return bytes;
        }
    }
    panic!("no {name} in the archive")
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs (install docker and start its engine)")
}

#[track_caller]
fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

static NAMES: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (in this process or another) uses.
fn unique_name(what: &str) -> String {
    let n = NAMES.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("buildgrid-store-{what}-{}-{n}-{nanos}", std::process::id())
}

/// Removes the named images when dropped, whatever the test's outcome.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker(&["rmi", "-f", name]);
        }
    }
}

/// Loads `archive` into the engine and returns the ID of the image `name` it names.
fn docker_load(archive: &[u8], dir: &Path, name: &str) -> String {
    let path = dir.join("download.tar");
    std::fs::write(&path, archive).unwrap();
    docker_ok(&["load", "-q", "-i", path.to_str().unwrap()]);
    docker_ok(&["image", "inspect", "-f", "{{.Id}}", name])
}

fn config_digest(store: &Store, manifest: &Digest) -> String {
    let manifest: Value = serde_json::from_slice(&store.blobs.read(manifest).unwrap()).unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_owned()
}

/// An image the engine builds (its export compressed by buildgrid), removed from the engine,
/// loaded back from buildgrid's archive: the same image ID, and it runs.
#[test]
fn docker_loads_a_built_image_from_the_archive() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let t = test_store();
    let context = t.dir.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::copy(busybox, context.join("busybox")).unwrap();
    let built = unique_name("built");
    // A file of its own, so that the engine holds no layer of this image but the one it built.
    std::fs::write(context.join("hello.txt"), format!("hello from {built}\n")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY hello.txt /hello.txt\n\
         CMD [\"/bin/busybox\", \"cat\", \"/hello.txt\"]\n",
    )
    .unwrap();
    let loaded = format!("{built}-loaded:v1");
    let _cleanup = Cleanup(vec![format!("{built}:v1"), loaded.clone()]);
    docker_ok(&[
        "build",
        "-q",
        "-t",
        &format!("{built}:v1"),
        context.to_str().unwrap(),
    ]);
    let saved = t.dir.path().join("saved.tar");
    docker_ok(&[
        "save",
        "-o",
        saved.to_str().unwrap(),
        &format!("{built}:v1"),
    ]);
    let original_id = docker_ok(&["image", "inspect", "-f", "{{.Id}}", &format!("{built}:v1")]);
    docker_ok(&["rmi", &format!("{built}:v1")]);

    let digest = t
        .import("saved.tar", &std::fs::read(&saved).unwrap(), "app", "v1")
        .unwrap()
        .digest;
    let archive = write(&t.store, "app", &digest, Some(&loaded));
    assert_eq!(docker_load(&archive, t.dir.path(), &loaded), original_id);
    assert_eq!(original_id, config_digest(&t.store, &digest));
    let output = docker_ok(&["run", "--rm", &loaded]);
    assert_eq!(output, format!("hello from {built}"));
}

/// An image imported from an OCI layout with gzip layers (stored as they came).
#[test]
fn docker_loads_an_imported_oci_image_from_the_archive() {
    let name = unique_name("oci");
    let image = Image::new("amd64", &[layer(&name), layer("app")]);
    let t = test_store();
    let archive = tar(&oci_single(&oci_image(&image, LayerFormat::Gzip)));
    let digest = t.import("image.tar", &archive, "app", "v1").unwrap().digest;
    let loaded = format!("{name}:v1");
    let _cleanup = Cleanup(vec![loaded.clone()]);
    let download = write(&t.store, "app", &digest, Some(&loaded));
    let id = docker_load(&download, t.dir.path(), &loaded);
    assert_eq!(id, Digest::of(&image.config).to_string());
    assert_eq!(id, config_digest(&t.store, &digest));
}
