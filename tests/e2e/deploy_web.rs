//! Deploys from the browser: the Deploy button of a build, its log streaming live while it runs,
//! the app page's running containers, and a rollback button on an earlier build.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use crate::engines::{Cleanup, containers, free_ports, get};
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;
use crate::web::{Driver, sign_in};

/// The text of the element `css` names. The live page replaces elements as it updates: one
/// replaced between finding and reading it is found again.
async fn text(browser: &Client, css: &str) -> String {
    let mut attempts = 0;
    loop {
        let element = browser
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        match element.text().await {
            Ok(text) => return text,
            Err(error) if error.is_stale_element_reference() && attempts < 50 => attempts += 1,
            Err(error) => panic!("cannot read {css}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clicks the deploy button of build `build` on the timeline, confirms, and lands on the page
/// of the deploy it starts (number `deploy`) while the deploy runs.
async fn deploy_from_timeline(
    browser: &Client,
    buildgrid: &Buildgrid,
    build: i64,
    label: &str,
    deploy: i64,
) {
    browser
        .goto(&buildgrid.url("/apps/acme/live"))
        .await
        .unwrap();
    // The live timeline may replace the build's card between finding and clicking its button.
    let css = format!("#b{build} a.deploy");
    assert_eq!(text(browser, &css).await, label);
    let mut attempts = 0;
    loop {
        let button = browser
            .find(Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("build {build} has no deploy button: {e}"));
        match button.click().await {
            Ok(_) => break,
            Err(error) if error.is_stale_element_reference() && attempts < 50 => attempts += 1,
            Err(error) => panic!("cannot click {css}: {error}"),
        }
    }
    // The confirm step: nothing is deployed until it is answered.
    let confirm = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#confirm button[type=submit]"))
        .await
        .expect("a confirm step");
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/apps/acme/live/deploy"
    );
    confirm.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.current_url().await.unwrap().path() != format!("/deploys/{deploy}") {
        assert!(
            Instant::now() < deadline,
            "the answer did not open deploy {deploy}: {}",
            browser.current_url().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits on the open deploy page (without reloading it) until its status says `state`.
async fn wait_for_status(browser: &Client, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = text(browser, "#deploy-status").await;
        if status == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the deploy page still says {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The open app page's running section once it names `container` as running, reloading the
/// page while it does not (the servers' answer is kept 5 s, so an answer from the middle of the
/// deploy, the container still "created", may be shown first); fails after 15 s.
async fn running_shows(browser: &Client, container: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let running = text(browser, "#running").await;
        let row = running.lines().find(|line| line.contains(container));
        if row.is_some_and(|row| row.contains("running")) {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "{container} is not shown running: {running}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.refresh().await.unwrap();
    }
}

#[test]
fn deploys_and_rollbacks_from_the_browser_stream_their_log_and_show_what_runs() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/live");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.write("index.html", "live one\n");
    source.commit("live one");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/live", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/live", "off"]);
    buildgrid.cli_ok(&["build", "acme/live", "--wait"]);
    source.write("index.html", "live two\n");
    source.commit("live two");
    source.git(&["push", "-q", &git_url, "main"]);
    buildgrid.cli_ok(&["build", "acme/live", "--wait"]);
    buildgrid.add_local_server();
    let base = free_ports();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/live",
        "web",
        "--command",
        "hello serve",
        "--port",
        &format!("{base}:8080"),
        "--health-running",
        "3",
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
        sign_in(&browser, &buildgrid, "ann", &password, "/apps/acme/live").await;
        browser
            .wait()
            .for_element(Locator::Css("#b1"))
            .await
            .unwrap();

        // Build 1 is deployed with the button; its page follows the deploy as it runs.
        deploy_from_timeline(&browser, &buildgrid, 1, "Deploy", 1).await;
        browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#deploy-log[data-events]"))
            .await
            .expect("the deploy page opens following the running deploy");
        browser
            .execute("window.stillTheSamePage = true;", vec![])
            .await
            .unwrap();
        wait_for_status(&browser, "succeeded").await;
        let log = text(&browser, "#deploy-log").await;
        assert!(log.contains("healthy"), "{log}");
        assert!(log.contains("deploy 1 succeeded"), "{log}");
        // The log names the request that asked for the deploy, as the request log does.
        let requested = log
            .split("requested by request ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the deploy log names no request:\n{log}"))
            .to_owned();
        let serve_log = std::fs::read_to_string(buildgrid.data.path().join("serve.log")).unwrap();
        assert!(
            serve_log
                .lines()
                .any(|line| line.contains(&requested) && line.contains("POST")),
            "no POST request {requested} in the request log"
        );
        let same = browser
            .execute("return window.stillTheSamePage === true;", vec![])
            .await
            .unwrap();
        assert_eq!(same, serde_json::json!(true), "the page was reloaded");

        // The app page shows what runs, and which build is deployed. The servers are asked at
        // most once per 5 s, so an answer from before the deploy may still be shown.
        browser
            .goto(&buildgrid.url("/apps/acme/live"))
            .await
            .unwrap();
        let running = running_shows(&browser, "bg.acme.live.web.d1.r0").await;
        assert!(running.contains(&format!("127.0.0.1:{base}")), "{running}");
        assert!(running.contains("running"), "{running}");
        assert_eq!(text(&browser, "#b1 .status.ok[title]").await, "deployed");

        // Build 2, then back to build 1 with the rollback button.
        deploy_from_timeline(&browser, &buildgrid, 2, "Deploy", 2).await;
        wait_for_status(&browser, "succeeded").await;
        deploy_from_timeline(&browser, &buildgrid, 1, "Roll back to this", 3).await;
        wait_for_status(&browser, "succeeded").await;
        browser
            .goto(&buildgrid.url("/apps/acme/live"))
            .await
            .unwrap();
        let deploys = text(&browser, "#deploys").await;
        assert!(deploys.contains("rollback by ann on the web"), "{deploys}");
        running_shows(&browser, "bg.acme.live.web.d3.r0").await;
        browser.close().await.unwrap();
    });
    assert_eq!(
        containers("acme/live"),
        vec!["bg.acme.live.web.d3.r0".to_owned()]
    );
    let answer = get(u32::from(base)).or_else(|| get(u32::from(base) + 1));
    assert_eq!(answer.as_deref(), Some("live one\n"));
}
