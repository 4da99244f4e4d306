//! The web pages in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them). A missing browser or driver fails
//! the test with what to install: it never skips.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::{Buildgrid, run_ok};

/// `chromedriver` on a free loopback port, stopped when dropped.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    profile: tempfile::TempDir,
}

impl Driver {
    pub fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver: {e}; install Debian's chromium and chromium-driver (see .ci/run)")
            });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            addr,
            profile: tempfile::tempdir().unwrap(),
        }
    }

    pub async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            }),
        );
        ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://{}", self.addr))
            .await
            .unwrap_or_else(|e| panic!("chromedriver cannot start chromium: {e}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs `name` in through the sign-in form, which then goes on to `next`.
pub async fn sign_in(
    browser: &Client,
    buildgrid: &Buildgrid,
    name: &str,
    password: &str,
    next: &str,
) {
    browser
        .goto(&buildgrid.url(&format!("/login?next={next}")))
        .await
        .unwrap();
    for (field, value) in [("name", name), ("password", password)] {
        browser
            .find(Locator::Css(&format!("form.stack input[name={field}]")))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    browser
        .find(Locator::Css("form.stack button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn count(browser: &Client, css: &str) -> usize {
    browser.find_all(Locator::Css(css)).await.unwrap().len()
}

#[test]
fn a_build_started_in_the_browser_streams_its_log_and_its_pull_command_pulls() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    // An image of its own, so that removing it below touches no other test's image.
    source.write("index.html", "<p>hello from the browser test</p>\n");
    let commit = source.commit("A page for the browser test");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/webui", &git_url);
    let token = buildgrid.token();
    // acme is private: ann signs in to the web pages, and logs the engine in to pull.
    let web_password = buildgrid.web_user("ann", "acme");
    let registry_password = buildgrid
        .cli_ok(&["user", "registry-password", "ann"])
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let browser = runtime.block_on(driver.browser());
    let pull_command = runtime.block_on(async {
        // Sign in, then Build now, from the timeline.
        sign_in(
            &browser,
            &buildgrid,
            "ann",
            &web_password,
            "/apps/acme/webui",
        )
        .await;
        browser
            .wait()
            .for_element(Locator::Css("details.panel summary"))
            .await
            .unwrap();
        browser
            .find(Locator::Css("details.panel summary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        browser
            .find(Locator::Css("details.panel button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#log[data-events]"))
            .await
            .expect("the build's page opens following the running build");
        let path = browser.current_url().await.unwrap().path().to_owned();
        assert!(path.starts_with("/builds/"), "{path}");
        // Marks this page: a reload would lose the mark.
        browser
            .execute("window.stillTheSamePage = true;", vec![])
            .await
            .unwrap();
        let at_load = count(&browser, "#log .ln").await;

        // The lines arrive through the event stream, up to the image at the end.
        let image_link = browser
            .wait()
            .at_most(Duration::from_secs(180))
            .for_element(Locator::Css("#image-link"))
            .await
            .unwrap_or_else(|_| panic!("the build did not end with an image"));
        let streamed = count(&browser, "#log .ln").await;
        assert!(
            streamed > at_load,
            "{at_load} lines at load, {streamed} at the end"
        );
        let log = browser
            .find(Locator::Id("log"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(log.contains("Step 1/"), "{log}");
        assert!(
            log.contains(&format!("image: {}/acme/webui.", buildgrid.host())),
            "{log}"
        );
        let same = browser
            .execute("return window.stillTheSamePage === true;", vec![])
            .await;
        assert_eq!(same.unwrap(), json!(true), "the page was reloaded");
        let status = browser
            .find(Locator::Id("build-status"))
            .await
            .unwrap()
            .text()
            .await;
        assert!(status.unwrap().contains("succeeded"));

        // The image page, and the pull command it shows.
        image_link.click().await.unwrap();
        let pull = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("pull-command"))
            .await
            .unwrap();
        pull.text().await.unwrap()
    });

    // The timeline shows a build queued meanwhile, and its end, without a reload.
    runtime.block_on(async {
        browser
            .goto(&buildgrid.url("/apps/acme/webui"))
            .await
            .unwrap();
        browser
            .find(Locator::Css("#timeline[data-events]"))
            .await
            .unwrap();
        browser
            .execute("window.stillTheSamePage = true;", vec![])
            .await
            .unwrap();
    });
    let queued: serde_json::Value = reqwest::blocking::Client::new()
        .post(buildgrid.url("/api/apps/acme/webui/builds"))
        .bearer_auth(&token)
        .json(&json!({ "force": true }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let again = queued["id"].as_i64().unwrap();
    runtime.block_on(async {
        browser
            .wait()
            .at_most(Duration::from_secs(180))
            .for_element(Locator::Css(&format!("#b{again} [data-state=succeeded]")))
            .await
            .unwrap_or_else(|_| panic!("build {again} did not show up as succeeded"));
        let same = browser
            .execute("return window.stillTheSamePage === true;", vec![])
            .await;
        assert_eq!(same.unwrap(), json!(true), "the timeline was reloaded");
        browser.close().await.unwrap();
    });

    let expected = format!(
        "docker pull {}/acme/webui.{}:{commit}",
        buildgrid.host(),
        git_url_slug(&git_url)
    );
    assert_eq!(pull_command, expected);
    let words: Vec<&str> = pull_command.split_whitespace().collect();
    assert_eq!(words[..2], ["docker", "pull"]);
    // The image is private: log the engine in with ann's registry credentials first.
    let config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", config.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    docker(
        &["login", &buildgrid.host(), "-u", "ann", "--password-stdin"],
        &registry_password,
    );
    docker(&words[1..], "");
    let reference = words[2];
    let printed = run_ok("docker", &["run", "--rm", reference]);
    assert_eq!(printed.trim(), "hello from buildgrid");
    run_ok("docker", &["rmi", "--no-prune", reference]);
}

/// The repository part of image names, as buildgrid makes it from a git URL.
fn git_url_slug(git_url: &str) -> String {
    buildgrid_core::app::repo_slug(git_url).unwrap()
}
