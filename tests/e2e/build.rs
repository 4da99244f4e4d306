//! Builds from `git push`, webhooks and the CLI, through the Docker engine, pulled back with
//! `docker pull`.

use std::process::Command;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fixtures::{Source, build_log, create_app, ensure_base_image, wait_for_build};
use crate::support::{Buildgrid, run, run_ok};

fn push_url(buildgrid: &Buildgrid, token: &str, app: &str) -> String {
    format!("http://push:{token}@{}/git/{app}.git", buildgrid.host())
}

/// The build id the push output names.
fn queued_build(push_output: &str) -> i64 {
    let after = push_output
        .split("buildgrid: build ")
        .nth(1)
        .unwrap_or_else(|| panic!("the push did not queue a build:\n{push_output}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn git_push_builds_an_image_that_docker_pulls_and_runs() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    create_app(
        &buildgrid,
        "acme/hello",
        "https://git.example.com/acme/hello.git",
    );
    let token = buildgrid.token();
    let source = Source::example();
    // An image of its own: other tests build the same example concurrently, and the engine
    // gives identical builds one image id, which the `docker rmi` below must not take away.
    source.write("index.html", "<p>hello from the push test</p>\n");
    let commit = source.commit("a page of its own");

    let output = source.git(&["push", &push_url(&buildgrid, &token, "acme/hello"), "main"]);
    let id = queued_build(&output);
    assert!(
        output.contains(&format!("/builds/{id}")),
        "the push should say where to watch the build:\n{output}"
    );
    let build = wait_for_build(&buildgrid, id);
    let log = build_log(&buildgrid, id);
    assert_eq!(build["state"], "succeeded", "{log}");
    assert_eq!(build["commit"], commit.as_str());
    assert_eq!(build["trigger"], "push");
    let repo = "acme/hello.git-example-com-acme-hello";
    let reference = format!("{}/{repo}:{commit}", buildgrid.host());
    assert_eq!(build["image"], reference.as_str());
    assert!(log.contains("Step 1/"), "{log}");
    assert!(
        log.trim_end().ends_with(build["digest"].as_str().unwrap()),
        "{log}"
    );

    // The image comes from buildgrid's store, not the engine's copy.
    let _ = run(
        "docker",
        &["rmi", "--no-prune", &format!("{repo}:{commit}")],
    );
    run_ok("docker", &["pull", &reference]);
    let printed = run_ok("docker", &["run", "--rm", &reference]);
    assert_eq!(printed.trim(), "hello from buildgrid");
    let labels = run_ok(
        "docker",
        &["inspect", "--format", "{{json .Config.Labels}}", &reference],
    );
    let labels: Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["org.opencontainers.image.revision"], commit.as_str());
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://git.example.com/acme/hello.git"
    );
    run_ok("docker", &["rmi", "--no-prune", &reference]);

    // A push of another branch builds nothing; the same commit again builds once.
    source.git(&["checkout", "-q", "-b", "feature"]);
    source.commit("feature work");
    let output = source.git(&[
        "push",
        &push_url(&buildgrid, &token, "acme/hello"),
        "feature",
    ]);
    assert!(output.contains("not building it"), "{output}");
    assert!(!output.contains("buildgrid: build "), "{output}");
}

#[test]
fn git_push_needs_a_token() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    create_app(
        &buildgrid,
        "acme/locked",
        "https://git.example.com/acme/locked.git",
    );
    let source = Source::example();
    for url in [
        format!("http://{}/git/acme/locked.git", buildgrid.host()),
        push_url(&buildgrid, "bg_wrong", "acme/locked"),
    ] {
        let output = Command::new("git")
            .args(["push", &url, "main"])
            .current_dir(source.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", source.path())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Without credentials git asks for them after the 401; with a wrong token it gives up.
        assert!(
            stderr.contains("could not read Username") || stderr.contains("Authentication failed"),
            "{stderr}"
        );
    }
    let builds: Vec<String> = buildgrid
        .cli_ok(&["app", "list"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(builds.len(), 1);
    let missing: Value = reqwest::blocking::get(buildgrid.url("/api/builds/1"))
        .unwrap()
        .json()
        .unwrap();
    assert!(missing["error"].as_str().unwrap().contains("no build 1"));
}

fn sign(body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(crate::fixtures::WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn deliver(buildgrid: &Buildgrid, body: &Value, signature: &str, delivery: &str) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let response = reqwest::blocking::Client::new()
        .post(buildgrid.url("/hooks/github/acme/hooked"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

#[test]
fn github_webhook_builds_the_pushed_commit_once() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = Source::example();
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/hooked", &url);
    let commit = source.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let push = json!({ "ref": "refs/heads/main", "after": commit, "deleted": false });

    let forged = json!({ "ref": "refs/heads/main", "after": "1".repeat(40) });
    let (status, body) = deliver(&buildgrid, &forged, &sign(b"something else"), "d0");
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("signature"));

    let (status, body) = deliver(
        &buildgrid,
        &push,
        &sign(&serde_json::to_vec(&push).unwrap()),
        "d1",
    );
    assert_eq!(status, 202, "{body}");
    let id = body["build"].as_i64().unwrap();
    let (status, again) = deliver(
        &buildgrid,
        &push,
        &sign(&serde_json::to_vec(&push).unwrap()),
        "d1",
    );
    assert_eq!(status, 200);
    assert_eq!(again["ignored"], "this delivery was seen before");
    // A new delivery of the same commit names the same build.
    let (_, same) = deliver(
        &buildgrid,
        &push,
        &sign(&serde_json::to_vec(&push).unwrap()),
        "d2",
    );
    assert_eq!(same["build"], id);
    assert_eq!(same["new"], false);

    for (git_ref, delivery) in [("refs/heads/other", "d3"), ("refs/tags/v1", "d4")] {
        let other = json!({ "ref": git_ref, "after": commit });
        let (status, body) = deliver(
            &buildgrid,
            &other,
            &sign(&serde_json::to_vec(&other).unwrap()),
            delivery,
        );
        assert_eq!(status, 200, "{body}");
        assert!(
            body["ignored"]
                .as_str()
                .unwrap()
                .contains("is not refs/heads/main")
        );
    }

    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "succeeded", "{}", build_log(&buildgrid, id));
    assert_eq!(build["trigger"], "github");
    assert!(build_log(&buildgrid, id).contains("fetched file://localhost"));
    assert!(
        !buildgrid
            .cli(&["build-log", &(id + 1).to_string()])
            .status
            .success(),
        "a rejected or repeated delivery queued a build"
    );
}

#[test]
fn a_failing_build_fails_alone() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let good = Source::example();
    let (_good_upstream, good_url) = good.bare_clone();
    let bad = Source::example();
    bad.write(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\nRUN echo about to fail && exit 3\n",
    );
    bad.commit("break the build");
    let (_bad_upstream, bad_url) = bad.bare_clone();
    create_app(&buildgrid, "acme/good", &good_url);
    create_app(&buildgrid, "acme/bad", &bad_url);

    let bad_run = buildgrid.cli(&["build", "acme/bad", "--wait"]);
    let good_run = buildgrid.cli(&["build", "acme/good", "--wait"]);
    let bad_out = String::from_utf8_lossy(&bad_run.stdout);
    let bad_err = String::from_utf8_lossy(&bad_run.stderr);
    assert!(!bad_run.status.success(), "{bad_out}");
    assert!(bad_out.contains("about to fail"), "{bad_out}");
    let last = bad_out.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("build failed:") && last.contains("non-zero code: 3"),
        "{last}"
    );
    assert!(bad_err.contains("failed"), "{bad_err}");
    assert!(
        good_run.status.success(),
        "{}",
        String::from_utf8_lossy(&good_run.stderr)
    );

    // A Dockerfile the engine cannot parse, a missing Dockerfile and an unreachable repository
    // fail with what went wrong.
    bad.write("Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPPY index.html /\n");
    bad.commit("a typo");
    let (_typo_upstream, typo_url) = bad.bare_clone();
    create_app(&buildgrid, "acme/typo", &typo_url);
    let output = buildgrid.cli(&["build", "acme/typo", "--wait"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{out}");
    let last = out.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("build failed:") && last.contains("unknown instruction: COPPY"),
        "{last}"
    );
    bad.git(&["rm", "-q", "Dockerfile"]);
    bad.commit("no Dockerfile");
    let (_gone_upstream, gone_url) = bad.bare_clone();
    create_app(&buildgrid, "acme/nodockerfile", &gone_url);
    let output = buildgrid.cli(&["build", "acme/nodockerfile", "--wait"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("Dockerfile \"Dockerfile\" is not in commit"),
        "{out}"
    );
    create_app(
        &buildgrid,
        "acme/unreachable",
        "https://bot:hunter2@127.0.0.1:9/acme/x.git",
    );
    let output = buildgrid.cli(&["build", "acme/unreachable", "--wait"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("build failed: cannot fetch https://***@127.0.0.1:9"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2"),
        "a credential reached the log: {out}"
    );
}

/// Containers of the engine running `sleep <seconds>`.
fn running_sleepers(seconds: u32) -> usize {
    run_ok("docker", &["ps", "--no-trunc", "--format", "{{.Command}}"])
        .lines()
        .filter(|c| c.contains(&format!("sleep {seconds}")))
        .count()
}

/// An app whose build sleeps in a `RUN` step.
fn slow_source(seconds: u32) -> Source {
    let source = Source::example();
    source.write(
        "Dockerfile",
        &format!(
            "ARG BASE\nFROM ${{BASE}}\nRUN echo sleeping && sleep {seconds}\nCMD [\"true\"]\n"
        ),
    );
    source.commit("slow");
    source
}

/// Waits for a log line that is exactly `text` (what a `RUN` step prints).
fn wait_for_log(buildgrid: &Buildgrid, id: i64, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !build_log(buildgrid, id)
        .lines()
        .any(|line| line.trim() == text)
    {
        assert!(
            Instant::now() < deadline,
            "build {id} never logged {text:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cancel_stops_the_engine_build() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = slow_source(121);
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/slow", &url);
    let id: i64 = buildgrid
        .cli_ok(&["build", "acme/slow"])
        .trim()
        .parse()
        .unwrap();
    wait_for_log(&buildgrid, id, "sleeping");
    assert_eq!(running_sleepers(121), 1);

    let printed = buildgrid.cli_ok(&["cancel", &id.to_string()]);
    assert!(printed.contains("being stopped"), "{printed}");
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "cancelled");
    // The engine stops the build's container once the client goes away.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running_sleepers(121) > 0 {
        assert!(
            Instant::now() < deadline,
            "the engine still runs the cancelled build"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let output = buildgrid.cli(&["cancel", &id.to_string()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("has ended already"));
}

#[test]
fn a_restart_during_a_build_marks_it_interrupted() {
    ensure_base_image();
    let mut buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = slow_source(122);
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/restarted", &url);
    let id: i64 = buildgrid
        .cli_ok(&["build", "acme/restarted"])
        .trim()
        .parse()
        .unwrap();
    wait_for_log(&buildgrid, id, "sleeping");
    buildgrid.restart();
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "failed");
    assert!(build["reason"].as_str().unwrap().contains("interrupted"));
    assert!(
        build_log(&buildgrid, id)
            .trim_end()
            .ends_with("build failed: interrupted: buildgrid stopped while the build ran")
    );
    // The queue works after the restart: a forced rebuild of another commit runs.
    source.write("Dockerfile", "ARG BASE\nFROM ${BASE}\nCMD [\"true\"]\n");
    let commit = source.commit("quick");
    source.git(&["push", "-q", &url.replace("file://localhost", ""), "main"]);
    let output = buildgrid.cli(&["build", "acme/restarted", "--wait"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&commit));
}

#[test]
fn an_unreachable_engine_fails_the_build_clearly() {
    let buildgrid =
        Buildgrid::spawn_with_env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let source = Source::example();
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/noengine", &url);
    let output = buildgrid.cli(&["build", "acme/noengine", "--wait"]);
    assert!(!output.status.success());
    let out = String::from_utf8_lossy(&output.stdout);
    let last = out.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("build failed: cannot reach the Docker engine"),
        "{out}"
    );
}
