//! Live streams of the running binary send only what the page of the app in their URL shows:
//! an anonymous reader of a public app's timeline stream who lists another namespace's build
//! ids gets nothing of those builds.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;

fn build(buildgrid: &Buildgrid, app: &str) -> String {
    let id = buildgrid.cli_ok(&["build", app]).trim().to_owned();
    buildgrid.cli_ok(&["build-log", &id, "--follow"]);
    id
}

/// What the stream at `url` sent within `seconds`.
fn read_stream(url: &str, seconds: u64) -> String {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(seconds))
        .build()
        .unwrap();
    let mut response = client.get(url).send().unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut buffer = [0u8; 8192];
    while Instant::now() < deadline {
        match response.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn a_public_apps_timeline_stream_sends_no_build_of_a_private_namespace() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    let private = Source::example();
    private.write("index.html", "nothing to see\n");
    private.commit("private plans");
    let (_private_upstream, private_git) = private.bare_clone();
    create_app(&buildgrid, "secret/app", &private_git);
    let hidden = build(&buildgrid, "secret/app");

    let public = Source::example();
    public.commit("public work");
    let (_public_upstream, public_git) = public.bare_clone();
    create_app(&buildgrid, "acme/hello", &public_git);
    buildgrid.make_public("acme");
    let own = build(&buildgrid, "acme/hello");

    let received = read_stream(
        &buildgrid.url(&format!(
            "/apps/acme/hello/events?after=0&watch={hidden},{own}"
        )),
        3,
    );
    assert!(
        received.contains(&format!(r#""id":{own}}}"#)),
        "the public build's card was not sent: {received}"
    );
    assert!(
        !received.contains(&format!(r#""id":{hidden}}}"#)),
        "the private build was sent: {received}"
    );
    for leaked in ["private plans", "secret/app", "secret"] {
        assert!(
            !received.contains(leaked),
            "{leaked:?} was sent: {received}"
        );
    }
}
