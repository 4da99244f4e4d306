//! Garbage collection of a serving buildgrid: builds on three branches with keep-last-2, then
//! `buildgrid gc`: the oldest build of each branch answers 404, everything kept pulls with
//! `docker pull`, and fsck is clean; what a service runs and its rollback target stay, and the
//! rollback still deploys.

use crate::engines::Cleanup;
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::{Buildgrid, run, run_ok};

fn manifest_status(buildgrid: &Buildgrid, repo: &str, tag: &str) -> u16 {
    reqwest::blocking::Client::new()
        .get(buildgrid.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn gc_removes_the_builds_retention_drops_and_kept_images_pull() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = Source::example();
    source.write("index.html", "<p>collected or kept</p>\n");
    source.commit("a page of its own");
    let (upstream, url) = source.bare_clone();
    let bare = upstream.path().join("upstream.git");
    create_app(&buildgrid, "acme/gc", &url);
    let shown = buildgrid.cli_ok(&["retention", "set", "acme/gc", "--keep-last", "2"]);
    assert!(shown.contains("keep-last 2"), "{shown}");

    let mut commits: Vec<(&str, Vec<String>)> = Vec::new();
    for branch in ["main", "dev", "feature/x"] {
        if branch != "main" {
            source.git(&["checkout", "-q", "-B", branch, "main"]);
        }
        let mut built = Vec::new();
        for i in 0..3 {
            source.write("index.html", &format!("<p>{branch} {i}</p>\n"));
            let commit = source.commit(&format!("{branch} {i}"));
            source.git(&["push", "-q", "-f", bare.to_str().unwrap(), branch]);
            let output = buildgrid.cli(&["build", "acme/gc", "--ref", branch, "--wait"]);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stdout)
            );
            built.push(commit);
        }
        source.git(&["checkout", "-q", "main"]);
        commits.push((branch, built));
    }
    let repo = buildgrid_core::AppRef::parse("acme/gc")
        .unwrap()
        .image_repo(&url)
        .unwrap()
        .to_string();

    let dry = buildgrid.cli_ok(&["gc", "--dry-run"]);
    let mut expected: Vec<String> = commits
        .iter()
        .map(|(_, built)| format!("tag {repo}:{}", built[0]))
        .collect();
    expected.sort();
    let listed: Vec<String> = dry
        .lines()
        .filter(|l| l.starts_with("tag "))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, expected, "{dry}");
    assert!(dry.contains("acme/gc\t"), "{dry}");
    for (_, built) in &commits {
        assert_eq!(manifest_status(&buildgrid, &repo, &built[0]), 200);
    }

    let real = buildgrid.cli_ok(&["gc"]);
    assert!(real.contains("deleted 3 tags, 3 manifests"), "{real}");
    let host = buildgrid.host();
    for (branch, built) in &commits {
        assert_eq!(
            manifest_status(&buildgrid, &repo, &built[0]),
            404,
            "{branch}"
        );
        let branch_tag = branch.replace('/', "-");
        for tag in [&built[1], &built[2], &branch_tag] {
            let reference = format!("{host}/{repo}:{tag}");
            let _ = run("docker", &["rmi", &reference]);
            run_ok("docker", &["pull", &reference]);
            run_ok("docker", &["rmi", &reference]);
        }
    }
    let fsck = buildgrid.cli_ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
    assert!(!fsck.contains("pending collection"), "{fsck}");
}

#[test]
fn the_gc_interval_is_a_setting_of_serve() {
    let buildgrid = Buildgrid::spawn();
    let shown = buildgrid.cli_ok(&["config", "check", "--gc-interval", "30"]);
    assert!(shown.contains("gc_interval = 30"), "{shown}");
    let refused = buildgrid.cli(&["config", "check", "--gc-interval", "0"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("gc_interval is 0"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn gc_keeps_the_running_image_and_the_rollback_target() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/gcdeploy");
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = Source::example();
    let (upstream, url) = source.bare_clone();
    let bare = upstream.path().join("upstream.git");
    create_app(&buildgrid, "acme/gcdeploy", &url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/gcdeploy", "off"]);
    buildgrid.cli_ok(&[
        "retention",
        "set",
        "acme/gcdeploy",
        "--keep-last",
        "1",
        "--keep-deployed",
        "1",
    ]);
    buildgrid.add_local_server();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/gcdeploy",
        "worker",
        "--command",
        "hello; exec sleep 600",
        "--health-running",
        "1",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    let mut commits = Vec::new();
    for i in 1..=4 {
        source.write("index.html", &format!("<p>deployed {i}</p>\n"));
        commits.push(source.commit(&format!("version {i}")));
        source.git(&["push", "-q", "-f", bare.to_str().unwrap(), "main"]);
        buildgrid.cli_ok(&["build", "acme/gcdeploy", "--wait"]);
        if i <= 2 {
            // Build 1, then build 2: 2 runs, 1 is its rollback target.
            let deployed =
                buildgrid.cli_ok(&["deploy", "acme/gcdeploy", "--build", &i.to_string()]);
            assert!(deployed.contains("succeeded"), "{deployed}");
        }
    }
    let repo = buildgrid_core::AppRef::parse("acme/gcdeploy")
        .unwrap()
        .image_repo(&url)
        .unwrap()
        .to_string();

    let collected = buildgrid.cli_ok(&["gc"]);
    let tags: Vec<&str> = collected
        .lines()
        .filter(|l| l.starts_with("tag "))
        .collect();
    assert_eq!(
        tags,
        vec![format!("tag {repo}:{}", commits[2])],
        "{collected}"
    );
    assert_eq!(manifest_status(&buildgrid, &repo, &commits[2]), 404);
    for kept in [&commits[0], &commits[1], &commits[3]] {
        assert_eq!(manifest_status(&buildgrid, &repo, kept), 200);
    }
    let rolled = buildgrid.cli_ok(&["deploy", "acme/gcdeploy", "--build", "1"]);
    assert!(rolled.contains("succeeded"), "{rolled}");
    let refused = buildgrid.cli(&["deploy", "acme/gcdeploy", "--build", "3"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no longer stored"), "{stderr}");
    let fsck = buildgrid.cli_ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
}
