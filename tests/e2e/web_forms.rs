//! The pages on a phone-sized screen and their live relative times, in headless Chromium: at
//! 390 px wide no page is wider than the screen (tables become cards, tabs wrap), and "… ago"
//! texts stay current without a reload.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::json;

use crate::engines::{Cleanup, free_ports};
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;
use crate::web::{Driver, sign_in};

/// The screen of a small phone, in CSS pixels.
const WIDTH: u32 = 390;

/// Makes the page area `WIDTH` CSS pixels wide, as a phone's, and checks that it is.
async fn phone_sized(browser: &Client) {
    browser
        .set_window_size(WIDTH, 844)
        .await
        .expect("the browser window can be resized");
    let inner = browser
        .execute("return window.innerWidth;", vec![])
        .await
        .unwrap();
    assert_eq!(inner, json!(WIDTH), "the page area is not {WIDTH} px wide");
}

/// How wide the page is, and which elements stick out past the screen (for the message).
async fn overflow(browser: &Client) -> (u64, String) {
    let width = browser
        .execute("return document.documentElement.scrollWidth;", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    let culprits = browser
        .execute(
            "var out = [];
             document.querySelectorAll('body *').forEach(function (e) {
               var r = e.getBoundingClientRect();
               if (r.right > window.innerWidth + 0.5 && out.length < 8)
                 out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                   (e.className && e.className.baseVal === undefined ? '.' + e.className : '') +
                   ' right=' + Math.round(r.right));
             });
             return out.join(', ');",
            vec![],
        )
        .await
        .unwrap();
    (width, culprits.as_str().unwrap_or("").to_owned())
}

#[test]
fn every_kind_of_page_fits_a_390_px_screen_and_relative_times_stay_current() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/narrow");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.git(&[
        "checkout",
        "-q",
        "-b",
        "feature/a-rather-long-branch-name-for-a-small-screen",
    ]);
    source.write("index.html", "narrow\n");
    source
        .commit("A commit whose subject line is long enough to need more than one line on a phone");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/narrow", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/narrow", "off"]);
    let printed = buildgrid.cli_ok(&[
        "build",
        "acme/narrow",
        "--ref",
        "feature/a-rather-long-branch-name-for-a-small-screen",
        "--wait",
    ]);
    let image = printed
        .lines()
        .rev()
        .find(|l| l.contains("/acme/narrow."))
        .expect("the build prints its image")
        .trim()
        .to_owned();
    let (repo_with_host, commit) = image.rsplit_once(':').unwrap();
    let repo = &repo_with_host[repo_with_host.find("/acme/").unwrap() + 1..];
    buildgrid.add_local_server();
    let base = free_ports();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/narrow",
        "web",
        "--command",
        "hello serve",
        "--port",
        &format!("{base}:8080"),
        "--health-running",
        "2",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    buildgrid.cli_ok(&["deploy", "acme/narrow", "--wait"]);
    let created = buildgrid.cli_ok(&["user", "create", "root", "--admin"]);
    let password = created
        .lines()
        .find_map(|l| l.strip_prefix("web password (shown once): "))
        .unwrap()
        .to_owned();
    buildgrid.cli_ok(&[
        "token",
        "create",
        "--user",
        "root",
        "--name",
        "a-token-with-a-long-name-for-the-ci-system",
        "--scope",
        "pull:acme",
        "--scope",
        "build:acme/narrow",
    ]);
    let token_id = buildgrid
        .cli_ok(&["token", "list", "--user", "root"])
        .lines()
        .find(|l| l.contains("a-token-with-a-long-name"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .expect("the token is listed");

    let pages = [
        "/".to_owned(),
        "/apps/acme/narrow".to_owned(),
        "/apps/acme/narrow?status=running".to_owned(),
        "/builds/1".to_owned(),
        format!("/images/{repo}"),
        format!("/images/{repo}/{commit}"),
        format!("/images/{repo}/{commit}?tab=contents"),
        format!("/images/{repo}/{commit}?tab=details"),
        format!("/images/{repo}/{commit}?tab=run"),
        format!("/images/{repo}/{commit}?tab=download"),
        "/deploys/1".to_owned(),
        "/apps/acme/narrow/deploy?build=1".to_owned(),
        "/settings".to_owned(),
        format!("/settings/tokens/{token_id}/revoke"),
        "/settings/namespaces/acme/make-public".to_owned(),
        "/no/such/page".to_owned(),
        "/login".to_owned(),
    ];

    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &buildgrid, "root", &password, "/").await;
        browser
            .wait()
            .for_element(Locator::Css("a[href='/settings']"))
            .await
            .expect("signed in");
        phone_sized(&browser).await;
        let mut wide = Vec::new();
        for page in &pages {
            browser.goto(&buildgrid.url(page)).await.unwrap();
            browser
                .wait()
                .for_element(Locator::Css("main h1"))
                .await
                .unwrap_or_else(|_| panic!("{page} has no heading"));
            let (width, culprits) = overflow(&browser).await;
            if width > u64::from(WIDTH) {
                wide.push(format!("{page}: {width} px ({culprits})"));
            }
        }
        assert!(
            wide.is_empty(),
            "wider than {WIDTH} px:\n{}",
            wide.join("\n")
        );

        // The token table is cards: its Revoke link is on the screen.
        browser.goto(&buildgrid.url("/settings")).await.unwrap();
        let revoke = browser
            .find(Locator::Css("#token-list a[href$='/revoke']"))
            .await
            .expect("a Revoke link");
        let (x, _, w, _) = revoke.rectangle().await.unwrap();
        assert!(x + w <= f64::from(WIDTH), "Revoke ends at {} px", x + w);

        // Relative times follow the clock without a reload (here the token's "Created", on a
        // page no stream rewrites).
        browser.goto(&buildgrid.url("/settings")).await.unwrap();
        let ago = browser
            .execute(
                "var t = document.querySelector('#token-list time[data-ago]');
                 t.setAttribute('datetime', new Date(Date.now() - 185000).toISOString());
                 return t.textContent;",
                vec![],
            )
            .await
            .unwrap();
        assert_ne!(ago, json!("3 min ago"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = browser
                .execute(
                    "return document.querySelector('#token-list time[data-ago]').textContent;",
                    vec![],
                )
                .await
                .unwrap();
            if now == json!("3 min ago") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the relative time still says {now}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        browser.close().await.unwrap();
    });
}
