//! Images and repositories as people use them: `buildgrid build --wait` right after a push,
//! a branch's moving tag pulled with `docker pull`, the repository page and the image tabs in
//! headless Chromium (base images, the image id Docker shows, the Run snippet), and the
//! download counts.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::Value;

use crate::fixtures::{BASE, Source, build_log, create_app, ensure_base_image, wait_for_build};
use crate::support::{Buildgrid, TestImage, run, run_ok};
use crate::web::Driver;

/// Pushes `main` with `-o nowait`: the test acts while the pushed build runs.
fn push(buildgrid: &Buildgrid, source: &Source, token: &str, app: &str) -> i64 {
    let url = format!("http://push:{token}@{}/git/{app}.git", buildgrid.host());
    let output = source.git(&["push", "-o", "nowait", &url, "main"]);
    let after = output
        .split("buildgrid: build ")
        .nth(1)
        .unwrap_or_else(|| panic!("the push did not queue a build:\n{output}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

fn build_state(buildgrid: &Buildgrid, id: i64) -> String {
    let build: Value = reqwest::blocking::get(buildgrid.url(&format!("/api/builds/{id}")))
        .unwrap()
        .json()
        .unwrap();
    build["state"].as_str().unwrap_or("").to_owned()
}

/// The manifest digest a reference names, as skopeo reads it from the registry.
fn digest_of(reference: &str) -> String {
    let inspect: Value = serde_json::from_str(&run_ok(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    ))
    .unwrap();
    inspect["Digest"].as_str().unwrap().to_owned()
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[test]
fn build_wait_after_a_push_follows_the_pushed_build_and_main_pulls_the_newest() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = Source::example();
    source.write("index.html", "<p>first page of the moving tag test</p>\n");
    let first_commit = source.commit("First page");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/moving", &git_url);
    let token = buildgrid.token();
    let repo = buildgrid
        .cli_ok(&["app", "list"])
        .lines()
        .find(|l| l.starts_with("acme/moving\t"))
        .and_then(|l| l.split('\t').nth(2))
        .expect("app list names the app's image repository")
        .to_owned();
    let host = buildgrid.host();

    // A push, then `build --wait` while the pushed build runs: the CLI's build of the same
    // commit is skipped, and the CLI follows the pushed build to its end.
    let pushed = push(&buildgrid, &source, &token, "acme/moving");
    let deadline = Instant::now() + Duration::from_secs(60);
    while build_state(&buildgrid, pushed) == "queued" {
        assert!(Instant::now() < deadline, "build {pushed} is still queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = buildgrid.cli(&["build", "acme/moving", "--wait"]);
    let stdout = String::from_utf8_lossy(&waited.stdout);
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(
        waited.status.success(),
        "build --wait failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("following build {pushed}")),
        "{stderr}"
    );
    assert_eq!(
        stdout.lines().last().unwrap_or(""),
        format!("{host}/{repo}:{first_commit}"),
        "{stdout}"
    );
    let first = wait_for_build(&buildgrid, pushed);
    assert_eq!(first["state"], "succeeded");
    let first_digest = first["digest"].as_str().unwrap().to_owned();
    assert!(
        build_log(&buildgrid, pushed).contains(&format!("tagged {repo}:main")),
        "{}",
        build_log(&buildgrid, pushed)
    );

    // `:main` pulls like any tag and names the newest successful build of main.
    let main = format!("{host}/{repo}:main");
    run_ok("docker", &["pull", &main]);
    let pulled = run_ok(
        "docker",
        &["inspect", "--format", "{{json .RepoDigests}}", &main],
    );
    assert!(
        pulled.contains(&format!("{host}/{repo}@{first_digest}")),
        "{pulled}"
    );
    let image_id = run_ok("docker", &["inspect", "--format", "{{.Id}}", &main])
        .trim()
        .to_owned();

    source.write("index.html", "<p>second page of the moving tag test</p>\n");
    let second_commit = source.commit("Second page");
    let second = push(&buildgrid, &source, &token, "acme/moving");
    let second = wait_for_build(&buildgrid, second);
    assert_eq!(second["state"], "succeeded");
    let second_digest = second["digest"].as_str().unwrap().to_owned();
    assert_ne!(first_digest, second_digest);
    assert_eq!(digest_of(&main), second_digest);
    // Commit tags never move.
    assert_eq!(
        digest_of(&format!("{host}/{repo}:{first_commit}")),
        first_digest
    );
    assert_eq!(
        digest_of(&format!("{host}/{repo}:{second_commit}")),
        second_digest
    );
    run_ok("docker", &["pull", &main]);
    let pulled = run_ok(
        "docker",
        &["inspect", "--format", "{{json .RepoDigests}}", &main],
    );
    assert!(pulled.contains(&second_digest), "{pulled}");

    // What a browser shows: the repository page, the app page, and the image's tabs.
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (first_row, second_row, branch_pull, app_pull, bases, shown_id, run_command) = runtime
        .block_on(async {
            let browser = driver.browser().await;
            browser
                .goto(&buildgrid.url(&format!("/images/{repo}")))
                .await
                .unwrap();
            let first_row = text(&browser, "#tags tbody tr:nth-child(1)").await;
            let second_row = text(&browser, "#tags tbody tr:nth-child(2)").await;
            let branch_pull = text(&browser, "#pull-branch-main").await;
            browser
                .goto(&buildgrid.url("/apps/acme/moving"))
                .await
                .unwrap();
            let app_pull = text(&browser, "#pull-branch-main").await;
            // The first image: its id is what the engine called it after the first pull.
            browser
                .goto(&buildgrid.url(&format!("/images/{repo}/{first_commit}?tab=details")))
                .await
                .unwrap();
            let details = text(&browser, "#details").await;
            let shown_id = text(&browser, "#image-id").await;
            browser
                .goto(&buildgrid.url(&format!("/images/{repo}/main?tab=run")))
                .await
                .unwrap();
            let run_command = text(&browser, "#run-command").await;
            browser.close().await.unwrap();
            (
                first_row,
                second_row,
                branch_pull,
                app_pull,
                details,
                shown_id,
                run_command,
            )
        });
    assert!(first_row.starts_with(":main"), "{first_row}");
    assert!(first_row.contains("branch main"), "{first_row}");
    assert!(
        second_row.starts_with(&format!(":{}", &second_commit[..7])),
        "{second_row}"
    );
    assert_eq!(branch_pull, format!("docker pull {main}"));
    assert_eq!(app_pull, format!("docker pull {main}"));
    assert!(
        bases.contains(BASE),
        "base images with ARG BASE resolved: {bases}"
    );
    assert!(!bases.contains("${BASE}"), "{bases}");
    assert_eq!(shown_id, image_id);
    assert_eq!(run_command, format!("docker run -d -p 8080:8080 {main}"));

    // The snippet returns at once with a container id instead of holding the terminal (here
    // on a free port of loopback rather than 8080, which another test may hold).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let command = run_command.replace("-p 8080:8080", &format!("-p 127.0.0.1:{port}:8080"));
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let started = Instant::now();
    let container = run_ok("docker", &args).trim().to_owned();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(container.len(), 64, "{container}");
    run_ok("docker", &["rm", "-f", &container]);
    let _ = run("docker", &["rmi", "--no-prune", &main]);
}

#[test]
fn pulls_and_archive_downloads_are_counted_apart_on_the_details_tab() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("counted downloads", 0);
    buildgrid.import_ok(&image.archive, "acme/counted", "v1");
    let reference = format!("{}/acme/counted:v1", buildgrid.host());

    // Pulls: the engine's first pull GETs the manifest; its second only checks it with a
    // HEAD, as Docker does for an image it has, and is not counted. skopeo GETs it each time.
    run_ok("docker", &["pull", &reference]);
    run_ok("docker", &["pull", &reference]);
    for _ in 0..2 {
        run_ok(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{reference}"),
            ],
        );
    }
    let head = reqwest::blocking::Client::new()
        .head(buildgrid.url("/v2/acme/counted/manifests/v1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    // Archive downloads, each read to its end.
    for _ in 0..2 {
        let bytes = reqwest::blocking::get(buildgrid.url("/archives/acme/counted/v1"))
            .unwrap()
            .bytes()
            .unwrap();
        assert!(bytes.len() > 1000);
    }
    let _ = run("docker", &["rmi", "--no-prune", &reference]);

    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pulls, archives) = runtime.block_on(async {
        let browser = driver.browser().await;
        // Pulls reach the store in batches every 2 s.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            browser
                .goto(&buildgrid.url("/images/acme/counted/v1?tab=details"))
                .await
                .unwrap();
            let pulls = text(&browser, "#pulls").await;
            let archives = text(&browser, "#archive-downloads").await;
            if pulls == "3 pulls" || Instant::now() > deadline {
                browser.close().await.unwrap();
                return (pulls, archives);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    assert_eq!(pulls, "3 pulls");
    assert_eq!(archives, "2 archive downloads");
}
