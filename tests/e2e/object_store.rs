//! buildgrid with its blobs in an S3-compatible object store (a one-node Garage on loopback):
//! a push builds into it and `docker pull` runs the image, and imported images copy out with
//! skopeo, with blobs streamed through buildgrid and redirected to presigned URLs.

use std::path::Path;
use std::time::Duration;

use buildgrid_s3::S3Blobs;
use buildgrid_store::BlobBackend;
use serde_json::Value;

use crate::fixtures::{Source, create_app, ensure_base_image, wait_for_build};
use crate::garage::Garage;
use crate::registry_protocol::Ctr;
use crate::support::{Buildgrid, TestImage, run, run_ok};

/// A server whose blobs live under `s3://<bucket>/<prefix>` of `garage`.
fn serve_on(garage: &Garage, prefix: &str) -> Buildgrid {
    let mut env: Vec<(&str, String)> = garage.env();
    env.push((
        "BUILDGRID_BLOB_STORE",
        format!("s3://{}/{prefix}", garage.bucket),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Buildgrid::spawn_with_env_and_args(&env, &[])
}

fn objects(garage: &Garage, prefix: &str) -> Vec<String> {
    let blobs =
        S3Blobs::with_variables(&format!("s3://{}/{prefix}", garage.bucket), garage.env()).unwrap();
    let mut listed = Vec::new();
    blobs
        .list(
            &mut |digest, _| listed.push(digest.to_string()),
            &mut |_| {},
        )
        .unwrap();
    listed
}

fn local_blob_files(data: &Path) -> usize {
    let Ok(prefixes) = std::fs::read_dir(data.join("blobs").join("sha256")) else {
        return 0;
    };
    prefixes
        .flatten()
        .map(|p| std::fs::read_dir(p.path()).map(|f| f.count()).unwrap_or(0))
        .sum()
}

/// The GET of a blob without following redirects: status and Location.
fn blob_get(
    buildgrid: &Buildgrid,
    repo: &str,
    digest: &str,
    auth: Option<(&str, &str)>,
) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(buildgrid.url(&format!("/v2/{repo}/blobs/{digest}")));
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), location)
}

#[test]
fn a_push_builds_into_the_object_store_and_docker_pulls_it_streamed_and_redirected() {
    ensure_base_image();
    let garage = Garage::start();
    let mut buildgrid = serve_on(&garage, "quickstart");
    buildgrid.make_public("acme");
    create_app(
        &buildgrid,
        "acme/hello",
        "https://git.example.com/acme/hello.git",
    );
    let token = buildgrid.token();
    let source = Source::example();
    source.write("index.html", "<p>hello from the object store</p>\n");
    source.commit("a page of its own");
    let push = format!(
        "http://push:{token}@{}/git/acme/hello.git",
        buildgrid.host()
    );
    let output = source.git(&["push", &push, "main"]);
    let id: i64 = output
        .split("buildgrid: build ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the push did not queue a build:\n{output}"));
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "succeeded", "{build}");

    // Every blob is in the bucket; none in the data directory.
    assert_eq!(local_blob_files(&buildgrid.data_dir()), 0);
    let stored = objects(&garage, "quickstart");
    assert!(stored.len() >= 3, "{stored:?}");
    let digest = build["digest"].as_str().unwrap();
    assert!(stored.iter().any(|d| d == digest), "{digest} in {stored:?}");

    let repo = "acme/hello.git-example-com-acme-hello";
    let commit = build["commit"].as_str().unwrap().to_owned();
    let pull_and_read = |buildgrid: &Buildgrid| {
        let reference = format!("{}/{repo}:{commit}", buildgrid.host());
        run_ok("docker", &["pull", &reference]);
        let page = run_ok(
            "docker",
            &["run", "--rm", &reference, "cat", "/www/index.html"],
        );
        run_ok("docker", &["rmi", "--no-prune", &reference]);
        page
    };
    assert_eq!(
        pull_and_read(&buildgrid),
        "<p>hello from the object store</p>\n"
    );
    other_clients_pull(&buildgrid, repo, &commit, digest);

    // Redirected: blob GETs answer 307 to the object store; docker follows and runs it.
    buildgrid.restart_with_args(&["--blob-redirect", "60"]);
    let manifest: Value = reqwest::blocking::Client::new()
        .get(buildgrid.url(&format!("/v2/{repo}/manifests/{commit}")))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let (status, location) = blob_get(&buildgrid, repo, layer, None);
    assert_eq!(status, 307);
    assert!(location.starts_with(&garage.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature"), "{location}");
    assert_eq!(
        pull_and_read(&buildgrid),
        "<p>hello from the object store</p>\n"
    );
    other_clients_pull(&buildgrid, repo, &commit, build["digest"].as_str().unwrap());
}

/// containerd's `ctr` and podman pull the image (each into a store of its own) and find its
/// digest.
fn other_clients_pull(buildgrid: &Buildgrid, repo: &str, commit: &str, digest: &str) {
    let reference = format!("{}/{repo}:{commit}", buildgrid.host());
    let ctr = Ctr::new();
    run_ok(
        "ctr",
        &ctr.args(&["images", "pull", "--plain-http", &reference]),
    );
    let storage = tempfile::tempdir().unwrap();
    let root = storage.path().join("root");
    let runroot = storage.path().join("run");
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
        ];
        all.extend_from_slice(args);
        run_ok("podman", &all)
    };
    podman(&["pull", "--tls-verify=false", &reference]);
    let listed = podman(&["images", "--digests", "--format", "{{.Digest}}"]);
    assert!(listed.contains(digest), "{listed}");
    podman(&["rmi", "--all"]);
}

#[test]
fn imported_private_images_copy_out_with_skopeo_streamed_and_redirected() {
    let garage = Garage::start();
    let mut buildgrid = serve_on(&garage, "imports");
    let image = TestImage::build("from the object store", 3);
    let digest = buildgrid.import_ok(&image.archive, "team/app", "v1");
    assert_eq!(local_blob_files(&buildgrid.data_dir()), 0);
    buildgrid.cli_ok(&["user", "create", "reader"]);
    buildgrid.cli_ok(&["namespace", "add-member", "team", "reader"]);
    let password = buildgrid
        .cli_ok(&["user", "registry-password", "reader"])
        .lines()
        .find_map(|line| line.strip_prefix("password: "))
        .expect("the password is printed")
        .to_owned();
    let creds = format!("reader:{password}");

    // The layer of random bytes, to read a range of.
    let manifest_bytes = reqwest::blocking::Client::new()
        .get(buildgrid.url("/v2/team/app/manifests/v1"))
        .basic_auth("reader", Some(&password))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let big = layers
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let whole = reqwest::blocking::Client::new()
        .get(buildgrid.url(&format!("/v2/team/app/blobs/{big}")))
        .basic_auth("reader", Some(&password))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        format!("sha256:{}", crate::support::sha256_hex(&whole)),
        big
    );

    for (mode, args) in [
        ("streamed", &[][..]),
        ("redirected", &["--blob-redirect", "60"][..]),
    ] {
        buildgrid.restart_with_args(args);
        let target = tempfile::tempdir().unwrap();
        let source = format!("docker://{}/team/app:v1", buildgrid.host());
        // `dir:` keeps the manifest as served (skopeo checks every blob's digest on the way).
        let copy = format!("dir:{}", target.path().display());
        run_ok(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &creds,
                &source,
                &copy,
            ],
        );
        let manifest = std::fs::read(target.path().join("manifest.json")).unwrap();
        assert_eq!(
            format!("sha256:{}", crate::support::sha256_hex(&manifest)),
            digest,
            "{mode}"
        );
        let copied_layer =
            std::fs::read(target.path().join(big.strip_prefix("sha256:").unwrap())).unwrap();
        assert!(copied_layer == whole, "{mode}");

        // Anonymous clients get nothing, redirect or not.
        let anonymous = run("skopeo", &["inspect", "--tls-verify=false", &source]);
        assert!(
            !anonymous.status.success(),
            "{mode}: anonymous inspect succeeded"
        );
        let (status, location) = blob_get(&buildgrid, "team/app", &big, None);
        assert_eq!((status, location.is_empty()), (401, true), "{mode}");

        // A Range request, following the redirect with no credentials for the store.
        let response = reqwest::blocking::Client::new()
            .get(buildgrid.url(&format!("/v2/team/app/blobs/{big}")))
            .basic_auth("reader", Some(&password))
            .header("Range", "bytes=1000-1999")
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 206, "{mode}");
        assert!(response.bytes().unwrap()[..] == whole[1000..2000], "{mode}");
    }
    let (status, location) = blob_get(&buildgrid, "team/app", &big, Some(("reader", &password)));
    assert_eq!(status, 307);
    assert!(location.starts_with(&garage.endpoint), "{location}");
}

#[test]
fn store_copy_moves_the_blobs_and_everything_then_reads_them_from_the_object_store() {
    let garage = Garage::start();
    let mut buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("moved to the object store", 1);
    let digest = buildgrid.import_ok(&image.archive, "acme/moved", "v1");
    let url = format!("s3://{}/moved", garage.bucket);
    let copy = || {
        let output = std::process::Command::new(crate::support::BIN)
            .args(["store", "copy", "--to", &url, "--data"])
            .arg(buildgrid.data_dir())
            .envs(garage.env())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let first = copy();
    let local = local_blob_files(&buildgrid.data_dir());
    assert!(
        first.contains(&format!("copied {local} blobs")) && first.contains("0 were there already"),
        "{first}"
    );
    assert!(first.contains("restart with: buildgrid"), "{first}");
    let second = copy();
    assert!(
        second.contains("copied 0 blobs")
            && second.contains(&format!("{local} were there already")),
        "{second}"
    );

    // Restarted on the object store, with the local blobs out of the way.
    let blobs = buildgrid.data_dir().join("blobs");
    std::fs::rename(&blobs, buildgrid.data_dir().join("blobs.old")).unwrap();
    let mut env: Vec<(&str, String)> = garage.env();
    env.push(("BUILDGRID_BLOB_STORE", url.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    buildgrid.restart_with_env_and_args(&env, &[]);
    let reference = format!("{}/acme/moved:v1", buildgrid.host());
    run_ok("docker", &["pull", &reference]);
    assert_eq!(
        run_ok("docker", &["run", "--rm", &reference]).trim(),
        "moved to the object store"
    );
    run_ok("docker", &["rmi", "--no-prune", &reference]);

    // fsck reads the object store; the image archive comes from it.
    let checked = buildgrid.cli_ok(&["fsck"]);
    assert!(checked.contains("no problems"), "{checked}");
    let backup = tempfile::tempdir().unwrap();
    let target = backup.path().join("b");
    buildgrid.cli_ok(&["backup", target.to_str().unwrap()]);
    assert_eq!(
        local_blob_files(&target),
        local,
        "the backup holds every blob"
    );
    let page = reqwest::blocking::get(buildgrid.url("/images/acme/moved/v1?tab=download"))
        .unwrap()
        .text()
        .unwrap();
    let href = page
        .split("id=\"download-link\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no download link:\n{page}"))
        .replace("&amp;", "&");
    let archive = reqwest::blocking::get(buildgrid.url(&href)).unwrap();
    assert_eq!(archive.status().as_u16(), 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    std::fs::write(&path, archive.bytes().unwrap()).unwrap();
    let listed = run_ok("tar", &["-tf", path.to_str().unwrap()]);
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(listed.contains(&format!("blobs/sha256/{hex}")), "{listed}");

    // An unusable store stops every command at once with one line.
    let mut missing = garage.env();
    missing.push(("BUILDGRID_BLOB_STORE", "s3://no-such-bucket".to_owned()));
    let output = std::process::Command::new(crate::support::BIN)
        .args(["fsck", "--data"])
        .arg(buildgrid.data_dir())
        .envs(missing)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot use the blob store")
            && stderr.contains("the bucket no-such-bucket does not exist"),
        "{stderr}"
    );
    assert!(stderr.trim().lines().count() <= 2, "{stderr}");
}
