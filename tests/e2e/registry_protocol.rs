//! The registry protocol as clients other than docker speak it: containerd's `ctr` push is
//! refused at once, and the refusal leaves no error in the server log.

use std::time::{Duration, Instant};

use crate::support::{Buildgrid, TestImage, run, run_ok};

/// Where the engine's containerd listens: its own (Docker 20.10 starts one) or the system's.
const CONTAINERD: [&str; 2] = [
    "/var/run/docker/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];

static NAMESPACES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `ctr` against the engine's containerd, in a namespace of the test's own, removed on drop.
pub(crate) struct Ctr {
    address: &'static str,
    namespace: String,
}

impl Ctr {
    pub(crate) fn new() -> Ctr {
        let address = CONTAINERD
            .into_iter()
            .find(|socket| std::path::Path::new(socket).exists())
            .unwrap_or_else(|| {
                panic!(
                    "none of {CONTAINERD:?} exists: the Docker engine's containerd must run here"
                )
            });
        Ctr {
            address,
            // One per instance: tests run at once, and dropping one removes its namespace.
            namespace: format!(
                "buildgrid-e2e-{}-{}",
                std::process::id(),
                NAMESPACES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        }
    }

    pub(crate) fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--address", self.address, "--namespace", &self.namespace];
        all.extend_from_slice(args);
        all
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let listed = run("ctr", &self.args(&["images", "ls", "-q"]));
        for image in String::from_utf8_lossy(&listed.stdout).lines() {
            let _ = run("ctr", &self.args(&["images", "rm", "--sync", image]));
        }
        let _ = run("ctr", &self.args(&["content", "prune", "references"]));
        let _ = run(
            "ctr",
            &[
                "--address",
                self.address,
                "namespaces",
                "rm",
                &self.namespace,
            ],
        );
    }
}

#[test]
fn ctr_push_is_refused_at_once_and_logs_no_error() {
    let buildgrid = Buildgrid::spawn();
    let image = TestImage::build("ctr push", 6);
    buildgrid.import_ok(&image.archive, "acme/pushed", "v1");
    buildgrid.make_public("acme");
    let ctr = Ctr::new();
    let archive = image.archive.to_str().unwrap();
    run_ok("ctr", &ctr.args(&["images", "import", archive]));
    let host = buildgrid.host();
    // An image whose blobs buildgrid does not have, and one pulled from it under a new tag (only
    // the manifest is pushed, with its body).
    let new = format!("{host}/acme/new:v1");
    let imported = format!("docker.io/library/{}", image.tag);
    run_ok("ctr", &ctr.args(&["images", "tag", &imported, &new]));
    let pulled = format!("{host}/acme/pushed:v1");
    run_ok(
        "ctr",
        &ctr.args(&["images", "pull", "--plain-http", &pulled]),
    );
    let retagged = format!("{host}/acme/pushed:v2");
    run_ok("ctr", &ctr.args(&["images", "tag", &pulled, &retagged]));
    // Downloads of the pull are counted in batches; everything else must stay as it is.
    let stored = || {
        let (mut rows, blobs) = buildgrid.fingerprint();
        rows.retain(|(table, _)| table != "downloads");
        (rows, blobs)
    };
    let before = stored();
    for reference in [&new, &retagged] {
        let started = Instant::now();
        let output = run(
            "timeout",
            &[
                &["10", "ctr"][..],
                &ctr.args(&["images", "push", "--plain-http", reference]),
            ]
            .concat(),
        );
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            elapsed < Duration::from_secs(10) && output.status.code() != Some(124),
            "ctr push {reference} did not end within 10 s:\n{stderr}"
        );
        assert!(!output.status.success(), "ctr push {reference} succeeded");
        assert!(
            stderr.contains("405"),
            "ctr push {reference} printed:\n{stderr}"
        );
    }
    assert_eq!(before, stored(), "a refused push changed the store");
    // An ordinary pull (Docker probes the plain port with a TLS handshake first) logs no error.
    run_ok("docker", &["pull", &pulled]);
    let _ = run("docker", &["rmi", &pulled]);
    let log = std::fs::read_to_string(buildgrid.data.path().join("serve.log")).unwrap();
    assert!(!log.contains("ERROR"), "the server logged an error:\n{log}");
}
