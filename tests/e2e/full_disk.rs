//! A data directory whose disk fills up during builds (a small tmpfs): each such build fails
//! saying so, what it wrote is gone, the image stored before stays whole, and the next build
//! that fits succeeds.

use std::path::{Path, PathBuf};

use crate::engines::as_root;
use crate::fixtures::{Source, build_log, create_app, ensure_base_image, wait_for_build};
use crate::support::{Buildgrid, run, run_ok};

/// A tmpfs of a few MiB on `dir`, owned by the tests' user, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, mib: u32) -> SmallDisk {
        let uid = run_ok("id", &["-u"]);
        let gid = run_ok("id", &["-g"]);
        let options = format!("size={mib}m,uid={},gid={}", uid.trim(), gid.trim());
        let status = as_root("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &options,
                "buildgrid-e2e",
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "cannot mount a tmpfs on {dir:?} as root");
        SmallDisk {
            dir: dir.to_owned(),
        }
    }

    /// Bytes in use.
    fn used(&self) -> u64 {
        run_ok("df", &["--output=used", "-B1", self.dir.to_str().unwrap()])
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the bytes in use")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = as_root("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `bytes` that no compressor shrinks.
fn random_bytes(bytes: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Pushes the source's `main` and returns the state and the log of the build it queued.
fn push_and_wait(buildgrid: &Buildgrid, source: &Source, url: &str) -> (String, String) {
    let output = source.git(&["push", url, "main"]);
    let id: i64 = output
        .split("buildgrid: build ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the push did not queue a build:\n{output}"));
    let build = wait_for_build(buildgrid, id);
    let state = build["state"].as_str().unwrap().to_owned();
    (state, build_log(buildgrid, id))
}

#[track_caller]
fn assert_failed_for_full_disk(state: &str, log: &str, cause: &str) {
    assert_eq!(state, "failed", "{log}");
    let last = log.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("build failed:")
            && last.contains(cause)
            && last.contains("No space left on device (os error 28)")
            && last.contains("the disk of buildgrid's data directory")
            && last.contains("free space there, then build again"),
        "{last}"
    );
}

#[test]
fn a_full_disk_fails_the_build_that_fills_it_and_nothing_else() {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), 40);
    let buildgrid = Buildgrid::spawn_in(dir);
    buildgrid.make_public("acme");
    create_app(
        &buildgrid,
        "acme/full",
        "https://git.example.com/acme/full.git",
    );
    let url = format!(
        "http://push:{}@{}/git/acme/full.git",
        buildgrid.token(),
        buildgrid.host()
    );
    let repo = "acme/full.git-example-com-acme-full";
    let source = Source::example();
    source.write("index.html", "<p>hello from the full disk test</p>\n");
    let first = source.commit("a page of its own");
    let (state, log) = push_and_wait(&buildgrid, &source, &url);
    assert_eq!(state, "succeeded", "{log}");
    let before = disk.used();

    // An image layer larger than the disk: the store runs out of room.
    source.write(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\nRUN head -c 60000000 /dev/urandom > /big.bin\n",
    );
    let big_image = source.commit("a layer larger than the disk");
    let (state, log) = push_and_wait(&buildgrid, &source, &url);
    assert_failed_for_full_disk(&state, &log, "cannot store ");
    assert!(
        disk.used() < before + (1 << 20),
        "the failed build left {} bytes behind",
        disk.used() - before
    );

    // Sources that fit in the repository but not twice: writing the build context runs out.
    std::fs::write(source.path().join("blob.bin"), random_bytes(24 << 20)).unwrap();
    source.git(&["checkout", "-q", &first, "--", "Dockerfile"]);
    source.commit("sources of 24 MB");
    let before = disk.used();
    let (state, log) = push_and_wait(&buildgrid, &source, &url);
    assert_failed_for_full_disk(&state, &log, "writing the build context");
    // What stays is the pushed commit in buildgrid's repository, not the partial context.
    let pushed = 24 << 20;
    assert!(
        disk.used() < before + pushed + (1 << 20),
        "the failed build left {} bytes beyond the pushed sources",
        disk.used() - before - pushed
    );

    // The image stored before is whole: skopeo copies it, checking every blob's digest.
    let copy = tempfile::tempdir().unwrap();
    let copied = run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/{repo}:{first}", buildgrid.host()),
            &format!("dir:{}", copy.path().display()),
        ],
    );
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    // With the large file gone again, the next build fits and succeeds.
    source.git(&["rm", "-q", "blob.bin"]);
    source.write("index.html", "<p>room again</p>\n");
    source.commit("room again");
    let (state, log) = push_and_wait(&buildgrid, &source, &url);
    assert_eq!(state, "succeeded", "{log}");

    // The engine built the image with the large layer; only its copy could not be stored.
    let _ = run(
        "docker",
        &["rmi", "-f", "--no-prune", &format!("{repo}:{big_image}")],
    );
}
