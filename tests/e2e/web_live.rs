//! Live pages in a real browser stay current without a reload: a long build's header (state,
//! duration, steps, line count) follows its log and the finished log opens at its end; an app's
//! timeline follows deploys started elsewhere (their cards, what runs, the buttons and a failed
//! deploy's badge); the home page says what runs where; and a failed deploy keeps its evidence.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::json;

use crate::engines::{Cleanup, containers, free_ports};
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;
use crate::web::{Driver, sign_in};

/// The text of the element `css` names, found again when the live page replaced it between
/// finding and reading it.
async fn text(browser: &Client, css: &str) -> String {
    for _ in 0..50 {
        let element = browser
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        match element.text().await {
            Ok(text) => return text,
            Err(error) if error.is_stale_element_reference() => {}
            Err(error) => panic!("cannot read {css}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{css} kept changing")
}

/// Waits (without reloading) until the page shows an element `css` names; fails with what the
/// page shows.
async fn wait_for(browser: &Client, css: &str, seconds: u64) {
    let found = browser
        .wait()
        .at_most(Duration::from_secs(seconds))
        .for_element(Locator::Css(css))
        .await;
    if found.is_err() {
        let shown = browser
            .execute("return document.body.innerText;", vec![])
            .await
            .unwrap_or_default();
        panic!(
            "no {css} after {seconds} s without a reload; the page shows:\n{}",
            shown.as_str().unwrap_or_default()
        );
    }
}

async fn mark_page(browser: &Client) {
    browser
        .execute("window.stillTheSamePage = true;", vec![])
        .await
        .unwrap();
}

async fn assert_same_page(browser: &Client) {
    let same = browser
        .execute("return window.stillTheSamePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(true), "the page was reloaded");
}

async fn script(browser: &Client, code: &str) -> serde_json::Value {
    browser.execute(code, vec![]).await.unwrap()
}

#[test]
fn a_long_build_page_keeps_its_header_current_and_opens_at_the_end_when_finished() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    let dockerfile = std::fs::read_to_string(source.path().join("Dockerfile")).unwrap();
    source.write(
        "Dockerfile",
        &format!(
            "{dockerfile}RUN echo begin && sleep 3 && seq 1 3000 && echo fini\"\"shed\nRUN echo done\n"
        ),
    );
    source.commit("A long log");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/longlog", &git_url);
    let password = buildgrid.web_user("ann", "acme");
    let token = buildgrid.token();
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &buildgrid, "ann", &password, "/apps/acme/longlog").await;
        wait_for(&browser, "#timeline", 10).await;
        let queued: serde_json::Value = reqwest::Client::new()
            .post(buildgrid.url("/api/apps/acme/longlog/builds"))
            .bearer_auth(&token)
            .json(&json!({ "force": true }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = queued["id"].as_i64().unwrap();
        browser
            .goto(&buildgrid.url(&format!("/builds/{id}")))
            .await
            .unwrap();
        mark_page(&browser).await;

        // While the long step runs, the header says what runs now.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let log = text(&browser, "#log").await;
            // The step's own line says `fini""shed`; only its output says "finished".
            if log.contains("begin") && !log.contains("finished") {
                break;
            }
            assert!(Instant::now() < deadline, "the long step never started");
            assert!(!log.contains("finished"), "the long step went by unseen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = text(&browser, "#build-status").await;
        assert!(status.contains("building"), "{status}");
        let steps = script(
            &browser,
            "var s = document.getElementById('build-steps'); return s && !s.hidden ? s.querySelectorAll('li').length : 0;",
        )
        .await;
        assert!(steps.as_u64().unwrap() >= 3, "step chips: {steps}");
        assert!(text(&browser, "#build-facts").await.contains("so far"));

        // At its end, the header matches the lines shown.
        wait_for(&browser, "#build-status [data-state=succeeded]", 180).await;
        assert_same_page(&browser).await;
        let last = script(
            &browser,
            "return document.querySelector('#log .ln:last-child').id.slice(1);",
        )
        .await;
        let last: i64 = last.as_str().unwrap().parse().unwrap();
        assert!(last > 3000, "{last} lines");
        let count = text(&browser, "#log-count").await;
        assert!(
            count.starts_with("Lines ") && count.ends_with(&format!("–{last} of {last}")),
            "{count}"
        );
        assert!(!text(&browser, "#build-facts").await.contains("so far"));
        let steps = script(&browser, "return document.querySelectorAll('#build-steps li').length;").await;
        assert!(steps.as_u64().unwrap() >= 5, "step chips: {steps}");
        assert!(
            browser.find(Locator::Id("first-error")).await.is_err(),
            "no First error on a clean build"
        );

        // Opened again, the finished log shows its last line at the bottom of the window.
        browser
            .goto(&buildgrid.url(&format!("/builds/{id}")))
            .await
            .unwrap();
        wait_for(&browser, "#log[data-tail]", 10).await;
        let at_end = script(
            &browser,
            "var last = document.querySelector('#log .ln:last-child').getBoundingClientRect();\
             return last.bottom <= window.innerHeight + 1 && last.bottom > 0 \
               && window.scrollY > 0;",
        )
        .await;
        assert_eq!(at_end, json!(true), "the finished log opened elsewhere");
        browser.close().await.unwrap();
    });
}

/// `buildgrid deploy acme/evidence --build <build>` run in a thread of its own; its output.
fn deploy_in_background(buildgrid: &Buildgrid, build: i64) -> std::thread::JoinHandle<String> {
    let mut command = std::process::Command::new(crate::support::BIN);
    command
        .args(["deploy", "acme/evidence", "--build", &build.to_string()])
        .arg("--data")
        .arg(buildgrid.data_dir());
    std::thread::spawn(move || {
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    })
}

#[test]
fn deploys_follow_live_on_the_timeline_and_a_failed_one_keeps_its_evidence() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/evidence");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.write("index.html", "broken\n");
    source.commit("broken");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/evidence", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/evidence", "off"]);
    buildgrid.cli_ok(&["build", "acme/evidence", "--wait"]);
    source.write("index.html", "working\n");
    source.commit("working");
    source.git(&["push", "-q", &git_url, "main"]);
    buildgrid.cli_ok(&["build", "acme/evidence", "--wait"]);
    buildgrid.add_local_server();
    let base = free_ports();
    // Build 1 prints two lines, then exits with code 3 without ever answering; build 2 serves.
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/evidence",
        "web",
        "--command",
        "if grep -q broken /www/index.html; then echo starting up; echo config missing >&2; \
         sleep 4; exit 3; fi; exec hello serve",
        "--port",
        &format!("{base}:8080"),
        "--health-http",
        "/",
        "--health-timeout",
        "40",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    let password = buildgrid.web_user("ann", "acme");
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = driver.browser().await;
        sign_in(
            &browser,
            &buildgrid,
            "ann",
            &password,
            "/apps/acme/evidence",
        )
        .await;
        wait_for(&browser, "#b2 a.deploy, #b2 form.inline button", 10).await;
        mark_page(&browser).await;

        // A deploy from the CLI shows up running, then failed, and build 1 says so.
        let failing = deploy_in_background(&buildgrid, 1);
        wait_for(&browser, "#d1", 60).await;
        wait_for(&browser, "#d1 [data-state=failed]", 90).await;
        let printed = join(failing);
        assert!(printed.contains("deploy 1 failed"), "{printed}");
        let badge = text(&browser, "#b1 .deploy-state").await;
        assert_eq!(badge, "deploy #1 failed");
        assert_same_page(&browser).await;

        // A good deploy: its card, what runs and the deployed build, all without a reload.
        let working = deploy_in_background(&buildgrid, 2);
        wait_for(&browser, "#d2 [data-state=succeeded]", 90).await;
        join(working);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let running = text(&browser, "#operations").await;
            if running.contains("bg.acme.evidence.web.d2.r0") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "what runs is not shown: {running}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_for(&browser, "#b2 .status.ok[title]", 10).await;
        assert_eq!(text(&browser, "#b2 .status.ok[title]").await, "deployed");
        assert_same_page(&browser).await;

        // The home page says what runs where.
        browser.goto(&buildgrid.url("/")).await.unwrap();
        let runs = text(&browser, ".runs").await;
        assert!(runs.contains("#2"), "{runs}");
        assert!(runs.contains("web on local"), "{runs}");
        assert!(runs.contains("deploy #2"), "{runs}");

        // The failed deploy's page: why, at the top, and what the container printed.
        browser.goto(&buildgrid.url("/deploys/1")).await.unwrap();
        let reason = text(&browser, "#deploy-reason [role=alert]").await;
        assert!(reason.contains("exited with code 3"), "{reason}");
        let log = text(&browser, "#deploy-log").await;
        assert!(log.contains("starting up"), "{log}");
        assert!(log.contains("config missing"), "{log}");
        assert!(log.contains("the same answer"), "probes collapsed: {log}");
        assert!(log.contains("removed: this deploy failed"), "{log}");
        browser.close().await.unwrap();
    });

    // In the store: few probe lines, the container's lines at the time it printed them, its exit
    // code before its removal.
    let store = buildgrid_store::Store::open(&buildgrid.data_dir()).unwrap();
    let lines = store
        .db
        .deploy_log(1, 0, &buildgrid_store::DeployLogFilter::default(), 5000)
        .unwrap();
    let probes = lines.iter().filter(|l| l.line.starts_with("GET ")).count();
    assert!(probes <= 4, "{probes} probe lines: {lines:#?}");
    let position = |text: &str| {
        lines
            .iter()
            .position(|l| l.line.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in {lines:#?}"))
    };
    let printed = &lines[position("starting up")];
    let gave_up = &lines[position("before it was healthy")];
    assert_eq!(printed.stream, "stdout");
    assert!(
        printed.at_ms + 2_000 < gave_up.at_ms,
        "the line keeps the time the container printed it: {printed:?} {gave_up:?}"
    );
    assert_eq!(lines[position("config missing")].stream, "stderr");
    // After its lines and before its removal: how it ended.
    let exit = lines
        .iter()
        .position(|l| l.stream == "deploy" && l.line.starts_with("exited with code 3"))
        .unwrap_or_else(|| panic!("no exit code in {lines:#?}"));
    assert!(position("config missing") < exit, "{lines:#?}");
    assert!(exit < position("removed: this deploy failed"), "{lines:#?}");
    assert_eq!(
        containers("acme/evidence"),
        vec!["bg.acme.evidence.web.d2.r0".to_owned()]
    );
}

fn join(handle: std::thread::JoinHandle<String>) -> String {
    handle.join().unwrap()
}
