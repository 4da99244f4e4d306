//! Fixtures of the build tests: the example app as a git repository, its base image, and
//! waiting for builds.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Buildgrid, run_ok};

/// The base image the example app builds on, made from Debian's busybox-static with
/// `docker import`: nothing is pulled from a registry.
pub const BASE: &str = "buildgrid-e2e/busybox:local";

pub fn ensure_base_image() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "/bin/busybox is missing: install Debian's busybox-static (see .ci/run)"
        );
        let rootfs = tempfile::tempdir().unwrap();
        let bin = rootfs.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(rootfs.path().join("tmp")).unwrap();
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        let applets = run_ok("/bin/busybox", &["--list"]);
        for applet in applets.lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let tar = rootfs.path().with_extension("tar");
        run_ok(
            "tar",
            &[
                "-C",
                rootfs.path().to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        run_ok(
            "docker",
            &[
                "import",
                "-c",
                "ENV PATH=/usr/local/bin:/bin",
                tar.to_str().unwrap(),
                BASE,
            ],
        );
    });
}

/// A git working copy of `examples/hello`, committed, with its own git identity.
pub struct Source {
    pub dir: tempfile::TempDir,
}

impl Source {
    pub fn example() -> Source {
        let dir = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
        for entry in std::fs::read_dir(&example).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let source = Source { dir };
        source.git(&["init", "-q", "-b", "main"]);
        source.commit("first");
        source
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    #[track_caller]
    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.path())
            .env("GIT_AUTHOR_NAME", "Ada")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("git is needed");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path().join(name), content).unwrap();
    }

    /// Commits everything and returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// A bare clone, reachable as a `file://localhost/…` URL.
    pub fn bare_clone(&self) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("upstream.git");
        self.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
        let url = format!("file://localhost{}", bare.display());
        (dir, url)
    }
}

pub fn create_app(buildgrid: &Buildgrid, app: &str, git: &str) {
    buildgrid.cli_ok(&[
        "app",
        "create",
        app,
        "--git",
        git,
        "--build-arg",
        &format!("BASE={BASE}"),
        "--webhook-secret",
        WEBHOOK_SECRET,
    ]);
}

/// The webhook secret of the apps `create_app` makes (secrets have at least 16 bytes).
pub const WEBHOOK_SECRET: &str = "e2e-webhook-s3cret";

/// Waits until the build ends and returns its JSON.
pub fn wait_for_build(buildgrid: &Buildgrid, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let build: Value = reqwest::blocking::get(buildgrid.url(&format!("/api/builds/{id}")))
            .unwrap()
            .json()
            .unwrap();
        let state = build["state"].as_str().unwrap_or("").to_owned();
        if ["succeeded", "failed", "cancelled", "skipped"].contains(&state.as_str()) {
            return build;
        }
        assert!(Instant::now() < deadline, "build {id} still {state}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn build_log(buildgrid: &Buildgrid, id: i64) -> String {
    buildgrid.cli_ok(&["build-log", &id.to_string()])
}
