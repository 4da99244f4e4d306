//! `git push` to buildgrid shows the build it starts: the build's log as `remote:` lines until
//! the build ends, then its result and image; `-o nowait` only says which build was queued.

use std::process::{Command, Output};

use crate::fixtures::{BASE, Source, build_log, create_app, ensure_base_image, wait_for_build};
use crate::support::Buildgrid;

/// `git push <args>` from `source` with the real git CLI.
fn push(source: &Source, args: &[&str]) -> Output {
    Command::new("git")
        .arg("push")
        .args(args)
        .current_dir(source.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", source.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git is needed")
}

/// What the server said during the push: the text of its `remote:` lines (git pads each with
/// spaces when its stderr is not a terminal).
fn remote_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| line.strip_prefix("remote: "))
        .map(|line| line.trim_end().to_owned())
        .collect()
}

/// The build id the push queued.
fn queued(remote: &[String]) -> i64 {
    remote
        .iter()
        .find_map(|line| line.strip_prefix("buildgrid: build ")?.strip_suffix(")"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the push queued no build:\n{}", remote.join("\n")))
}

#[test]
fn git_push_shows_the_build_log_its_result_and_image() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    create_app(
        &buildgrid,
        "acme/shown",
        "https://git.example.com/acme/shown.git",
    );
    let url = format!(
        "http://push:{}@{}/git/acme/shown.git",
        buildgrid.token(),
        buildgrid.host()
    );
    let source = Source::example();
    source.write("index.html", "<p>the push shows this build</p>\n");
    let commit = source.commit("a page of its own");

    let output = push(&source, &[&url, "main"]);
    let remote = remote_lines(&output);
    let text = remote.join("\n");
    assert!(output.status.success(), "{text}");
    let id = queued(&remote);
    // The push ended with the build: every line of its log was shown, in order, as it was
    // stored.
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "succeeded", "{text}");
    let log = build_log(&buildgrid, id);
    let mut shown = remote.iter();
    for line in log.lines() {
        assert!(
            shown.any(|l| l == line.trim_end()),
            "log line {line:?} is missing from the push's output (or out of order):\n{text}"
        );
    }
    assert!(log.contains("Step 1/"), "{log}");
    let image = format!(
        "{}/acme/shown.git-example-com-acme-shown:{commit}",
        buildgrid.host()
    );
    assert_eq!(build["image"], image.as_str());
    let tail: Vec<&str> = remote
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert!(
        tail[0].starts_with(&format!("buildgrid: build {id} succeeded")),
        "{text}"
    );
    assert_eq!(tail[1], format!("buildgrid: image {image}"), "{text}");
    assert_eq!(
        tail[2],
        format!("buildgrid: build page {}", build["url"].as_str().unwrap()),
        "{text}"
    );

    // A tag builds nothing and says why.
    source.git(&["tag", "v1"]);
    let output = push(&source, &[&url, "v1"]);
    let text = remote_lines(&output).join("\n");
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(
            "buildgrid: tag v1 pushed: only pushes to branch main build acme/shown; not building it"
        ),
        "{text}"
    );
}

#[test]
fn git_push_nowait_returns_after_queuing_and_the_build_still_runs() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    create_app(
        &buildgrid,
        "acme/nowait",
        "https://git.example.com/acme/nowait.git",
    );
    let url = format!(
        "http://push:{}@{}/git/acme/nowait.git",
        buildgrid.token(),
        buildgrid.host()
    );
    let source = Source::example();
    source.write("index.html", "<p>pushed without waiting</p>\n");
    source.commit("a page of its own");

    let output = push(&source, &["-o", "nowait", &url, "main"]);
    let remote = remote_lines(&output);
    let text = remote.join("\n");
    assert!(output.status.success(), "{text}");
    let id = queued(&remote);
    assert!(
        text.contains(&format!(
            "buildgrid: or run: buildgrid build-log {id} --follow"
        )),
        "{text}"
    );
    assert!(
        !remote
            .iter()
            .any(|l| l.starts_with("Step ") || l.contains("succeeded")),
        "a nowait push showed the build:\n{text}"
    );
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "succeeded", "{}", build_log(&buildgrid, id));
}

#[test]
fn git_push_of_a_failing_build_says_it_failed() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    create_app(
        &buildgrid,
        "acme/failing",
        "https://git.example.com/acme/failing.git",
    );
    let url = format!(
        "http://push:{}@{}/git/acme/failing.git",
        buildgrid.token(),
        buildgrid.host()
    );
    let source = Source::example();
    // Quiet for longer than the keepalive, then a failing step.
    source.write(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN sleep 6\nRUN echo about to fail from the push test && exit 3\n"),
    );
    source.commit("a build that fails");

    let output = push(&source, &[&url, "main"]);
    let remote = remote_lines(&output);
    let text = remote.join("\n");
    // The commit is stored whatever the build does (post-receive runs after the refs moved),
    // so the push succeeds and says the build failed.
    assert!(output.status.success(), "{text}");
    let id = queued(&remote);
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "failed", "{text}");
    assert!(
        remote
            .iter()
            .any(|l| l == "about to fail from the push test"),
        "{text}"
    );
    assert!(
        remote
            .iter()
            .any(|l| l.starts_with("buildgrid: ... still building (step 2/")),
        "no keepalive line while the build was quiet:\n{text}"
    );
    assert!(
        remote.iter().any(|l| l
            == &format!(
                "buildgrid: build {id} FAILED: {}",
                build["reason"].as_str().unwrap()
            )),
        "{text}"
    );
    assert_eq!(
        remote.last().map(String::as_str),
        Some(format!("buildgrid: build page {}", build["url"].as_str().unwrap()).as_str()),
        "{text}"
    );
}
