//! Running buildgrid as a service: `/metrics`, `/healthz`, `/readyz`, the request log and its
//! ids, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::{Source, build_log, create_app, ensure_base_image, wait_for_build};
use crate::support::{Buildgrid, TestImage, run_ok, sha256_hex};

/// A loopback address nobody listens on now.
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn sigterm(buildgrid: &Buildgrid) {
    run_ok("kill", &["-TERM", &buildgrid.pid().to_string()]);
}

fn serve_log(buildgrid: &Buildgrid) -> String {
    std::fs::read_to_string(buildgrid.data.path().join("serve.log")).unwrap()
}

/// The JSON lines of the request log (`--log-json`).
fn request_lines(buildgrid: &Buildgrid) -> Vec<Value> {
    serve_log(buildgrid)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "buildgrid::request")
        .collect()
}

/// Waits for the request log line of request `id` (it is written when the body is done).
fn request_line(buildgrid: &Buildgrid, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = request_lines(buildgrid)
            .into_iter()
            .find(|l| l["fields"]["id"] == id)
        {
            return line["fields"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no request log line for {id}:\n{}",
            serve_log(buildgrid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the series `name{labels}` exactly as Prometheus text writes it.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

#[track_caller]
fn positive(metrics: &str, series: &str) {
    let value = sample(metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"));
    assert!(value > 0.0, "{series} is {value}");
}

#[test]
fn probes_answer_without_credentials_and_readyz_sees_the_store() {
    let buildgrid = Buildgrid::spawn();
    let get = |path: &str| {
        let response = reqwest::blocking::get(buildgrid.url(path)).unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    assert_eq!(get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get("/readyz"), (200, "ready\n".to_owned()));

    // The blob directory gone: not ready, and the answer says why; back: ready again.
    let blobs = buildgrid.data_dir().join("blobs").join("sha256");
    let moved = buildgrid.data_dir().join("blobs").join("moved");
    std::fs::rename(&blobs, &moved).unwrap();
    let (status, body) = get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: the blob store does not answer"),
        "{body}"
    );
    assert_eq!(get("/healthz").0, 200);
    std::fs::rename(&moved, &blobs).unwrap();
    assert_eq!(get("/readyz"), (200, "ready\n".to_owned()));
}

#[test]
fn request_ids_are_echoed_logged_and_carried_into_the_build_log() {
    ensure_base_image();
    let metrics_address = free_address();
    let buildgrid = Buildgrid::spawn_with_args(&[
        "--log-json",
        "--metrics-listen",
        &metrics_address.to_string(),
        "--gc-interval",
        "60",
    ]);
    let client = reqwest::blocking::Client::new();
    let token = buildgrid.token();

    // A sane id is kept; anything else is replaced by one the server makes.
    let echoed = |sent: &str| {
        client
            .get(buildgrid.url("/healthz"))
            .header("X-Request-Id", sent)
            .send()
            .unwrap()
            .headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(echoed("probe-1"), "probe-1");
    let made = echoed("no spaces or \"quotes\" here");
    assert_eq!(made.len(), 32, "{made}");
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    assert_ne!(echoed(&"x".repeat(65)), "x".repeat(65));
    let line = request_line(&buildgrid, "probe-1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/healthz");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], 3);
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");

    // A build queued by a request names it first in its log.
    buildgrid.make_public("acme");
    let source = Source::example();
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/observed", &url);
    let queued: Value = client
        .post(buildgrid.url("/api/apps/acme/observed/builds"))
        .bearer_auth(&token)
        .header("X-Request-Id", "e2e-build-1")
        .json(&json!({ "ref": "main" }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = queued["id"].as_i64().unwrap_or_else(|| panic!("{queued}"));
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "succeeded", "{}", build_log(&buildgrid, id));
    let log = build_log(&buildgrid, id);
    assert_eq!(
        log.lines().next(),
        Some("requested by request e2e-build-1"),
        "{log}"
    );
    let line = request_line(&buildgrid, "e2e-build-1");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/api/apps/{namespace}/{app}/builds");
    assert_eq!(line["status"], 202);
    // So does a build queued by `git push`: git's hook, a process of its own, is told the id.
    source.write("index.html", "<p>pushed with a request id</p>\n");
    source.commit("pushed with a request id");
    let push_url = format!(
        "http://push:{token}@{}/git/acme/observed.git",
        buildgrid.host()
    );
    let pushed = source.git(&[
        "-c",
        "http.extraHeader=X-Request-Id: e2e-push-1",
        "push",
        &push_url,
        "main",
    ]);
    let pushed_id: i64 = pushed
        .split("buildgrid: build ")
        .nth(1)
        .and_then(|after| after.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the push did not queue a build:\n{pushed}"));
    let pushed_build = wait_for_build(&buildgrid, pushed_id);
    let pushed_log = build_log(&buildgrid, pushed_id);
    assert_eq!(pushed_build["state"], "succeeded", "{pushed_log}");
    assert_eq!(
        pushed_log.lines().next(),
        Some("requested by request e2e-push-1"),
        "{pushed_log}"
    );

    // A pull with credentials: its line names the user.
    let image = build["image"].as_str().unwrap();
    let (name, tag) = image
        .strip_prefix(&format!("{}/", buildgrid.host()))
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    let manifest = client
        .get(buildgrid.url(&format!("/v2/{name}/manifests/{tag}")))
        .basic_auth("admin", Some(&token))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .header("X-Request-Id", "e2e-pull-1")
        .send()
        .unwrap();
    assert_eq!(manifest.status(), 200);
    let manifest: Value = manifest.json().unwrap();
    let line = request_line(&buildgrid, "e2e-pull-1");
    assert!(
        line["user"].as_str().unwrap().starts_with("admin"),
        "{line}"
    );
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = client
        .get(buildgrid.url(&format!("/v2/{name}/blobs/{layer}")))
        .send()
        .unwrap();
    assert_eq!(blob.status(), 200);
    let blob_bytes = blob.bytes().unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&blob_bytes)), layer);
    // A wrong password counts as an auth failure.
    let refused = client
        .get(buildgrid.url("/v2/"))
        .basic_auth("admin", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);

    // An open event stream (the timeline of a public app) is counted while it lasts.
    let stream = client
        .get(buildgrid.url("/apps/acme/observed/events"))
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);

    // The separate address serves /metrics without credentials.
    let metrics = reqwest::blocking::get(format!("http://{metrics_address}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    positive(
        &metrics,
        r#"buildgrid_registry_requests_total{route="manifest",method="GET",status="200"}"#,
    );
    positive(
        &metrics,
        r#"buildgrid_registry_requests_total{route="blob",method="GET",status="200"}"#,
    );
    positive(
        &metrics,
        r#"buildgrid_registry_request_duration_seconds_count{route="blob",method="GET"}"#,
    );
    let served = sample(
        &metrics,
        r#"buildgrid_registry_bytes_served_total{route="blob"}"#,
    )
    .unwrap_or_else(|| panic!("no blob bytes in:\n{metrics}"));
    assert!(served >= blob_bytes.len() as f64, "{served}");
    positive(&metrics, "buildgrid_registry_auth_failures_total");
    positive(&metrics, r#"buildgrid_builds_total{outcome="succeeded"}"#);
    positive(
        &metrics,
        r#"buildgrid_build_duration_seconds_count{outcome="succeeded"}"#,
    );
    for stage in ["fetch", "context", "build", "store"] {
        positive(
            &metrics,
            &format!(r#"buildgrid_build_stage_duration_seconds_count{{stage="{stage}"}}"#),
        );
    }
    assert_eq!(
        sample(&metrics, r#"buildgrid_builds_unfinished{state="queued"}"#),
        Some(0.0),
        "{metrics}"
    );
    // Scheduled collections are counted from the start (none has run within the test).
    assert_eq!(
        sample(&metrics, r#"buildgrid_gc_runs_total{outcome="done"}"#),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"buildgrid_gc_deleted_total{kind="blobs"}"#),
        Some(0.0),
        "{metrics}"
    );
    positive(&metrics, "buildgrid_store_blobs");
    positive(&metrics, "buildgrid_store_blob_bytes");
    positive(&metrics, "buildgrid_web_event_streams_open");
    drop(stream);
    // Labels never name a repository, a namespace or a user.
    for name in ["acme", "observed", "admin"] {
        assert!(!metrics.contains(name), "{name} in the metrics:\n{metrics}");
    }

    // On the main address, /metrics is for admins only.
    let main = |auth: Option<(&str, &str)>| {
        let mut request = client.get(buildgrid.url("/metrics"));
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    assert_eq!(main(None).0, 401);
    assert_eq!(main(Some(("admin", "wrong"))).0, 401);
    buildgrid.cli_ok(&["user", "create", "member"]);
    let member_token = buildgrid
        .cli_ok(&[
            "token", "create", "--name", "m", "--user", "member", "--scope", "pull",
        ])
        .trim()
        .to_owned();
    assert_eq!(main(Some(("member", &member_token))).0, 403);
    let (status, body) = main(Some(("admin", &token)));
    assert_eq!(status, 200);
    assert!(body.contains("buildgrid_builds_total"), "{body}");
}

#[test]
fn sigterm_when_idle_exits_at_once() {
    let mut buildgrid = Buildgrid::spawn();
    // Neither an idle keep-alive connection nor an open event stream (a browser's timeline)
    // holds the stop up.
    let client = reqwest::blocking::Client::new();
    assert_eq!(
        client
            .get(buildgrid.url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    buildgrid.make_public("acme");
    let source = Source::example();
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/idle", &url);
    let stream = client
        .get(buildgrid.url("/apps/acme/idle/events"))
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    let started = Instant::now();
    sigterm(&buildgrid);
    let status = buildgrid
        .wait_exit(Duration::from_secs(1))
        .unwrap_or_else(|| {
            panic!(
                "still running 1 s after SIGTERM:\n{}",
                serve_log(&buildgrid)
            )
        });
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(serve_log(&buildgrid).contains("stopping"));
    drop((client, stream));
}

/// Reads an HTTP/1.1 response's head; returns its status and `Content-Length`.
fn read_head(reader: &mut impl BufRead) -> (u16, u64) {
    let mut status = 0;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            return (status, length);
        }
        if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
            status = code[..3].parse().unwrap();
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
}

#[test]
fn sigterm_lets_a_blob_pull_in_flight_finish() {
    let mut buildgrid = Buildgrid::spawn_with_args(&["--log-json"]);
    buildgrid.make_public("acme");
    let image = TestImage::build("big", 96);
    buildgrid.import_ok(&image.archive, "acme/big.e2e", "v1");
    let manifest: Value = reqwest::blocking::Client::new()
        .get(buildgrid.url("/v2/acme/big.e2e/manifests/v1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap();
    let digest = layer["digest"].as_str().unwrap().to_owned();
    let size = layer["size"].as_u64().unwrap();
    assert!(size > 64 << 20, "{size}");

    // The pull starts, reads its first bytes, and is slow to read the rest.
    let mut stream = TcpStream::connect(buildgrid.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /v2/acme/big.e2e/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nX-Request-Id: big-pull\r\n\r\n",
        buildgrid.host()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_head(&mut reader), (200, size));
    let mut body = vec![0u8; 1 << 20];
    reader.read_exact(&mut body).unwrap();

    sigterm(&buildgrid);
    std::thread::sleep(Duration::from_millis(500));
    // No new connections once stopping.
    assert!(
        TcpStream::connect_timeout(&buildgrid.addr, Duration::from_secs(1)).is_err(),
        "a new connection was accepted after SIGTERM"
    );
    let mut chunk = vec![0u8; 4 << 20];
    while (body.len() as u64) < size {
        let n = reader.read(&mut chunk).unwrap();
        assert!(n > 0, "the pull ended after {} of {size} bytes", body.len());
        body.extend_from_slice(&chunk[..n]);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), digest);
    let status = buildgrid
        .wait_exit(Duration::from_secs(10))
        .expect("buildgrid exits once the pull is done");
    assert!(status.success(), "{status}");
    // Its log line counts the whole body, written when the body was done.
    let line = request_line(&buildgrid, "big-pull");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], size);
}

#[test]
fn sigterm_during_a_build_marks_it_interrupted() {
    ensure_base_image();
    let mut buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let source = Source::example();
    source.write(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\nRUN echo sleeping && sleep 124\nCMD [\"true\"]\n",
    );
    source.commit("slow");
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/stopped", &url);
    let id: i64 = buildgrid
        .cli_ok(&["build", "acme/stopped"])
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !build_log(&buildgrid, id)
        .lines()
        .any(|l| l.trim() == "sleeping")
    {
        assert!(
            Instant::now() < deadline,
            "build {id} never started sleeping"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    sigterm(&buildgrid);
    let status = buildgrid
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "still running 5 s after SIGTERM:\n{}",
                serve_log(&buildgrid)
            )
        });
    assert!(status.success(), "{status}");
    let reason = "interrupted: buildgrid stopped (SIGTERM)";
    let log = build_log(&buildgrid, id);
    assert_eq!(
        log.trim_end().lines().last(),
        Some(format!("build failed: {reason}").as_str()),
        "{log}"
    );

    // The next start finds nothing running: the build is failed with the reason.
    buildgrid.restart();
    let build = wait_for_build(&buildgrid, id);
    assert_eq!(build["state"], "failed");
    assert_eq!(build["reason"], reason);
    assert!(!serve_log(&buildgrid).contains("builds interrupted by the last stop"));
    // The engine's build stopped with the stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_ok("docker", &["ps", "--no-trunc", "--format", "{{.Command}}"]).contains("sleep 124")
    {
        assert!(
            Instant::now() < deadline,
            "the engine still runs the stopped build"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
