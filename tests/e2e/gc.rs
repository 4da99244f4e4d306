//! Garbage collection of a serving buildgrid: builds on three branches with keep-last-2, then
//! `buildgrid gc`: the oldest build of each branch answers 404, everything kept pulls with
//! `docker pull`, and fsck is clean; what a service runs and its rollback target stay, and the
//! rollback still deploys; branches deleted upstream (`git push --delete`, a webhook) lose
//! their builds.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::engines::Cleanup;
use crate::fixtures::{Source, WEBHOOK_SECRET, create_app, ensure_base_image};
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

/// The build a push's output says it queued.
fn queued_build(push_output: &str) -> String {
    let after = push_output
        .split("buildgrid: build ")
        .nth(1)
        .unwrap_or_else(|| panic!("the push queued no build:\n{push_output}"));
    after.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn gc_drops_the_builds_of_branches_deleted_upstream() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = Source::example();
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/gcbranches", &url);
    let remote = format!(
        "http://push:{}@{}/git/acme/gcbranches.git",
        buildgrid.token(),
        buildgrid.host()
    );
    let repo = buildgrid_core::AppRef::parse("acme/gcbranches")
        .unwrap()
        .image_repo(&url)
        .unwrap()
        .to_string();

    // main builds on push; feature and spike are pushed to buildgrid and built by hand.
    let mut commits = Vec::new();
    for branch in ["main", "feature", "spike"] {
        if branch != "main" {
            source.git(&["checkout", "-q", "-B", branch, "main"]);
        }
        source.write("index.html", &format!("<p>branch {branch}</p>\n"));
        commits.push(source.commit(&format!("work on {branch}")));
        let pushed = source.git(&["push", &remote, branch]);
        if branch == "main" {
            buildgrid.cli_ok(&["build-log", &queued_build(&pushed), "--follow"]);
        } else {
            assert!(pushed.contains("not building it"), "{pushed}");
            buildgrid.cli_ok(&["build", "acme/gcbranches", "--ref", branch, "--wait"]);
        }
    }
    source.git(&["checkout", "-q", "main"]);
    for tag in commits
        .iter()
        .map(String::as_str)
        .chain(["main", "feature", "spike"])
    {
        assert_eq!(manifest_status(&buildgrid, &repo, tag), 200, "{tag}");
    }

    // feature is deleted with git, spike by a GitHub webhook.
    let deleted = source.git(&["push", &remote, "--delete", "feature"]);
    assert!(
        deleted.contains(
            "buildgrid: branch feature deleted; retention stops keeping its builds in 7 days"
        ),
        "{deleted}"
    );
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/spike",
        "before": commits[2],
        "after": "0".repeat(40),
        "deleted": true,
    }))
    .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = reqwest::blocking::Client::new()
        .post(buildgrid.url("/hooks/github/acme/gcbranches"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "spike-deleted")
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: serde_json::Value = response.json().unwrap();
    assert_eq!(answer["deleted"], "spike", "{answer}");

    // Within the default week nothing goes.
    let dry = buildgrid.cli_ok(&["gc", "--dry-run"]);
    assert!(dry.contains("would delete 0 tags"), "{dry}");
    let shown = buildgrid.cli_ok(&["retention", "show"]);
    assert!(shown.contains("drop-deleted-after 7 days"), "{shown}");
    let set = buildgrid.cli_ok(&[
        "retention",
        "set",
        "acme/gcbranches",
        "--drop-deleted-after",
        "0",
    ]);
    assert!(set.contains("drop-deleted-after 0"), "{set}");
    let shown = buildgrid.cli_ok(&["retention", "show", "acme/gcbranches"]);
    assert!(
        shown.contains(
            "in force: keep-last 20, keep-days 0, keep-deployed 3, drop-deleted-after 0 days"
        ),
        "{shown}"
    );
    let feature = "deleted branch feature: deleted 0 days ago; \
                   retention keeps only its pinned and deployed builds";
    assert!(shown.contains(feature), "{shown}");
    assert!(
        shown.contains("deleted branch spike: deleted 0 days ago"),
        "{shown}"
    );

    let collected = buildgrid.cli_ok(&["gc"]);
    assert!(
        collected.contains("deleted 4 tags, 2 manifests"),
        "{collected}"
    );
    for tag in [commits[1].as_str(), &commits[2], "feature", "spike"] {
        assert_eq!(manifest_status(&buildgrid, &repo, tag), 404, "{tag}");
    }
    let host = buildgrid.host();
    for tag in [commits[0].as_str(), "main"] {
        let reference = format!("{host}/{repo}:{tag}");
        let _ = run("docker", &["rmi", &reference]);
        run_ok("docker", &["pull", &reference]);
        run_ok("docker", &["rmi", &reference]);
    }
    let fsck = buildgrid.cli_ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
    assert!(!fsck.contains("pending collection"), "{fsck}");
}
