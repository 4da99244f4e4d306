//! What the builder's HTTP endpoints refuse, and how: webhook bodies read only after the app
//! and the signature header are known (capped and timed), webhook secrets of at least 16
//! bytes, build logs in pages of about a MiB, the same answer for a missing build and one the
//! caller may not see, git paths git's backend refuses, and pushes over the size limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use buildgrid_store::{LogLine, Store};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::fixtures::{Source, WEBHOOK_SECRET, create_app};
use crate::support::Buildgrid;

/// A git URL no build can fetch: these tests only look at what is queued and refused.
const NOWHERE: &str = "file://localhost/nonexistent/app.git";

/// Sends `head` (a request without its blank line) and `body` on a fresh connection and reads
/// the answer for at most `wait`: status (0 without one), body, and how long it took.
fn exchange(addr: SocketAddr, head: &str, body: &[u8], wait: Duration) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    // The server may answer (and stop reading) before the body is all sent.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
        }
        if complete(&response) {
            break;
        }
    }
    let elapsed = started.elapsed();
    let (status, body) = crate::support::status_and_body(&String::from_utf8_lossy(&response));
    (status, body, elapsed)
}

/// Whether `response` holds its head and the whole body its `content-length` announces.
fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .is_some_and(|length| body.len() >= length)
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn hook_head(app: &str, length: usize, signature: Option<&str>) -> String {
    let mut head = format!(
        "POST /hooks/github/{app} HTTP/1.1\r\nHost: buildgrid\r\nX-GitHub-Event: push\r\nContent-Type: application/json\r\nContent-Length: {length}"
    );
    if let Some(signature) = signature {
        head.push_str(&format!("\r\nX-Hub-Signature-256: {signature}"));
    }
    head
}

const QUICK: Duration = Duration::from_secs(5);

#[test]
fn webhook_bodies_are_read_last_capped_and_timed() {
    let buildgrid = Buildgrid::spawn();
    create_app(&buildgrid, "acme/hooked", NOWHERE);
    let signature = sign(WEBHOOK_SECRET.as_bytes(), b"{}");

    // A large body announced without a signature: the answer comes at once, before a byte of
    // the body is sent.
    let head = hook_head("acme/hooked", 3 << 20, None);
    let (status, body, took) = exchange(buildgrid.addr, &head, b"", QUICK);
    assert_eq!(status, 401, "{body}");
    assert!(took < QUICK, "the answer waited for the body");

    // More than the limit announced: refused at once.
    let head = hook_head("acme/hooked", 5 << 20, Some(&signature));
    let (status, body, took) = exchange(buildgrid.addr, &head, b"", QUICK);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limited to 4 MiB"), "{body}");
    assert!(took < QUICK);

    // More than the limit sent in chunks, with no length announced: refused once the limit
    // is passed.
    let head = format!(
        "POST /hooks/github/acme/hooked HTTP/1.1\r\nHost: buildgrid\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {signature}\r\nTransfer-Encoding: chunked"
    );
    let mut chunked = Vec::new();
    for _ in 0..65 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked.extend_from_slice(&vec![b' '; 64 << 10]);
        chunked.extend_from_slice(b"\r\n");
    }
    let (status, body, _) = exchange(buildgrid.addr, &head, &chunked, QUICK);
    assert_eq!(status, 413, "{body}");

    // A body that stops arriving: 408 after 10 seconds, for an app that exists and one that
    // does not alike (an answer at once would tell them apart).
    let stalled: Vec<_> = ["acme/hooked", "acme/missing"]
        .into_iter()
        .map(|app| {
            let (addr, signature) = (buildgrid.addr, signature.clone());
            std::thread::spawn(move || {
                let head = hook_head(app, 1000, Some(&signature));
                exchange(addr, &head, b"{\"ref\":", Duration::from_secs(30))
            })
        })
        .collect();
    let stalled: Vec<_> = stalled.into_iter().map(|t| t.join().unwrap()).collect();
    for (status, body, took) in &stalled {
        assert_eq!(*status, 408, "{body}");
        assert!(
            *took >= Duration::from_secs(9) && *took < Duration::from_secs(20),
            "{took:?}"
        );
    }
    assert_eq!(stalled[0].1, stalled[1].1);
    // So does a body over the limit, sent in chunks, for a missing app.
    let head = format!(
        "POST /hooks/github/acme/missing HTTP/1.1\r\nHost: buildgrid\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {signature}\r\nTransfer-Encoding: chunked"
    );
    let (status, body, _) = exchange(buildgrid.addr, &head, &chunked, QUICK);
    assert_eq!(status, 413, "{body}");

    // A wrong signature gets the same answer for an app that exists and one that does not.
    let payload =
        br#"{"ref":"refs/heads/main","after":"1111111111111111111111111111111111111111"}"#;
    let forged = sign(b"not the secret of this app at all", payload);
    let answers: Vec<(u16, String)> = ["acme/hooked", "acme/missing", "other/missing"]
        .iter()
        .map(|app| {
            let head = hook_head(app, payload.len(), Some(&forged));
            let (status, body, _) = exchange(buildgrid.addr, &head, payload, QUICK);
            (status, body)
        })
        .collect();
    assert_eq!(answers[0].0, 401, "{answers:?}");
    assert!(
        answers[0].1.contains("signature does not match"),
        "{answers:?}"
    );
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    // So does a missing signature.
    let answers: Vec<(u16, String)> = ["acme/hooked", "acme/missing"]
        .iter()
        .map(|app| {
            let head = hook_head(app, payload.len(), None);
            let (status, body, _) = exchange(buildgrid.addr, &head, payload, QUICK);
            (status, body)
        })
        .collect();
    assert_eq!(answers[0].0, 401, "{answers:?}");
    assert_eq!(answers[0], answers[1]);

    // A signed delivery within the limits still queues its build.
    let head = hook_head("acme/hooked", payload.len(), None).replace(
        "X-GitHub-Event: push",
        &format!(
            "X-GitHub-Event: push\r\nX-Hub-Signature-256: {}",
            sign(WEBHOOK_SECRET.as_bytes(), payload)
        ),
    );
    let (status, body, _) = exchange(buildgrid.addr, &head, payload, QUICK);
    assert_eq!(status, 202, "{body}");
}

#[test]
fn webhook_secrets_have_at_least_16_bytes() {
    let buildgrid = Buildgrid::spawn();
    for secret in ["", "s3cret", "fifteen-bytes!!"] {
        let output = buildgrid.cli(&[
            "app",
            "create",
            "acme/weak",
            "--git",
            NOWHERE,
            "--webhook-secret",
            secret,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{secret:?} was accepted");
        assert!(stderr.contains("at least 16"), "{secret:?}: {stderr}");
    }
    let output = Command::new(crate::support::BIN)
        .args(["app", "create", "acme/weak", "--git", NOWHERE, "--data"])
        .arg(buildgrid.data_dir())
        .env("BUILDGRID_WEBHOOK_SECRET", "short")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a short secret from the environment"
    );
    assert!(buildgrid.cli_ok(&["app", "list"]).is_empty());
    buildgrid.cli_ok(&[
        "app",
        "create",
        "acme/strong",
        "--git",
        NOWHERE,
        "--webhook-secret",
        "sixteen-bytes!!!",
    ]);

    // An app stored with an empty secret (before secrets had a minimum): deliveries signed
    // with it are refused, and the log says why.
    let store = Store::open(&buildgrid.data_dir()).unwrap();
    store
        .db
        .create_app(&buildgrid_store::NewApp {
            app: buildgrid_core::AppRef::parse("acme/empty").unwrap(),
            git_url: NOWHERE.into(),
            branch: "main".into(),
            dockerfile: "Dockerfile".into(),
            context: String::new(),
            build_args: Default::default(),
            image_repo: buildgrid_core::RepoName::parse("acme/empty.localhost-nonexistent-app")
                .unwrap(),
            webhook_secret: String::new(),
        })
        .unwrap();
    let payload =
        br#"{"ref":"refs/heads/main","after":"1111111111111111111111111111111111111111"}"#;
    let head = hook_head("acme/empty", payload.len(), Some(&sign(b"", payload)));
    let (status, body, _) = exchange(buildgrid.addr, &head, payload, QUICK);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature does not match"), "{body}");
    assert!(store.db.build(1).unwrap().is_none(), "a build was queued");
    let log = std::fs::read_to_string(buildgrid.data.path().join("serve.log")).unwrap();
    assert!(
        log.contains("webhook secret is too short") && log.contains("acme/empty"),
        "{log}"
    );
}

/// Queues a build of `app` from the CLI and waits until the worker has ended it.
fn finished_build(buildgrid: &Buildgrid, app: &str) -> i64 {
    let id: i64 = buildgrid.cli_ok(&["build", app]).trim().parse().unwrap();
    let store = Store::open(&buildgrid.data_dir()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store.db.build(id).unwrap().unwrap().state.is_finished() {
        assert!(Instant::now() < deadline, "build {id} never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    id
}

#[test]
fn build_logs_come_in_pages_of_about_a_mebibyte() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    buildgrid.cli_ok(&["namespace", "publish-logs", "acme", "on"]);
    create_app(&buildgrid, "acme/chatty", NOWHERE);
    let id = finished_build(&buildgrid, "acme/chatty");
    // 320 lines of 16 KiB: 5 MiB, which one answer of up to 5,000 lines would hold whole.
    let store = Store::open(&buildgrid.data_dir()).unwrap();
    let first = store.db.last_log_seq(id).unwrap();
    let lines: Vec<LogLine> = (1..=320)
        .map(|n| LogLine {
            seq: first + n,
            at_ms: 0,
            step: None,
            line: format!("{n:05} {}", "x".repeat((16 << 10) - 6)),
        })
        .collect();
    store.db.append_logs(id, &lines).unwrap();
    let total = first + 320;

    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let response =
            reqwest::blocking::get(buildgrid.url(&format!("/api/builds/{id}/log?after={after}")))
                .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().unwrap();
        assert!(
            text.len() < (1 << 20) + (64 << 10),
            "a page of {} bytes",
            text.len()
        );
        let page: Value = serde_json::from_str(&text).unwrap();
        let lines = page["lines"].as_array().unwrap();
        seen.extend(lines.iter().map(|l| l["seq"].as_i64().unwrap()));
        after = page["next"].as_i64().unwrap();
        pages += 1;
        if !page["more"].as_bool().unwrap() {
            break;
        }
        assert!(!lines.is_empty(), "a page that says more has no lines");
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    assert!(pages >= 5, "{pages} pages");
    // Past the end: no lines, and the cursor stays.
    let end: Value =
        reqwest::blocking::get(buildgrid.url(&format!("/api/builds/{id}/log?after={total}")))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(end["lines"].as_array().unwrap().len(), 0);
    assert_eq!(end["next"], total);
    assert_eq!(end["more"], false);

    // The CLI prints the whole log, and --follow ends (the build failed, so it fails too).
    let printed = buildgrid.cli_ok(&["build-log", &id.to_string()]);
    assert_eq!(printed.lines().filter(|l| l.contains("xxxx")).count(), 320);
    let followed = buildgrid.cli(&["build-log", &id.to_string(), "--follow"]);
    assert!(!followed.status.success());
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert_eq!(followed.lines().filter(|l| l.contains("xxxx")).count(), 320);
    assert!(followed.contains("00320 x"));
}

/// Status and body of `method path` sent with a user name and password.
fn call(
    buildgrid: &Buildgrid,
    method: &str,
    path: &str,
    credentials: Option<&(&str, String)>,
) -> (u16, String) {
    let client = reqwest::blocking::Client::new();
    let mut request = match method {
        "POST" => client.post(buildgrid.url(path)),
        _ => client.get(buildgrid.url(path)),
    };
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

fn registry_password(buildgrid: &Buildgrid, name: &str, namespace: &str) -> String {
    buildgrid.cli_ok(&["user", "create", name]);
    buildgrid.cli_ok(&["namespace", "add-member", namespace, name]);
    buildgrid
        .cli_ok(&["user", "registry-password", name])
        .lines()
        .find_map(|line| line.strip_prefix("password: "))
        .expect("the password is printed")
        .to_owned()
}

#[test]
fn a_build_one_may_not_see_is_answered_as_a_missing_one() {
    let buildgrid = Buildgrid::spawn();
    create_app(&buildgrid, "acme/hidden", NOWHERE);
    let id = finished_build(&buildgrid, "acme/hidden");
    let missing = id + 1;
    let ann = ("ann", registry_password(&buildgrid, "ann", "acme"));
    let bob = ("bob", registry_password(&buildgrid, "bob", "other"));

    for (method, tail) in [("GET", ""), ("GET", "/log"), ("POST", "/cancel")] {
        for (who, authorization, status) in [("anonymous", None, 401), ("bob", Some(&bob), 404)] {
            let (existing_status, existing) = call(
                &buildgrid,
                method,
                &format!("/api/builds/{id}{tail}"),
                authorization,
            );
            let (missing_status, absent) = call(
                &buildgrid,
                method,
                &format!("/api/builds/{missing}{tail}"),
                authorization,
            );
            assert_eq!(existing_status, status, "{who} {method} {tail}: {existing}");
            assert_eq!(missing_status, status, "{who} {method} {tail}: {absent}");
            assert_eq!(
                existing,
                absent.replace(&missing.to_string(), &id.to_string()),
                "{who} {method} {tail}"
            );
            assert!(
                !existing.contains("acme"),
                "{who} {method} {tail}: {existing}"
            );
        }
    }
    // A member reads it; a missing one is missing for the member too.
    let (status, body) = call(&buildgrid, "GET", &format!("/api/builds/{id}"), Some(&ann));
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &buildgrid,
        "GET",
        &format!("/api/builds/{missing}"),
        Some(&ann),
    );
    assert_eq!(
        (status, body.as_str()),
        (404, &*format!("{{\"error\":\"no build {missing}\"}}"))
    );
    let (status, body) = call(
        &buildgrid,
        "POST",
        &format!("/api/builds/{id}/cancel"),
        Some(&ann),
    );
    assert_eq!(status, 409, "{body}");
    // A public namespace shows its builds to anyone, and their logs to members only until it
    // publishes them; a hidden log answers as a missing build's.
    buildgrid.make_public("acme");
    let (status, body) = call(&buildgrid, "GET", &format!("/api/builds/{id}"), None);
    assert_eq!(status, 200, "{body}");
    for (who, credentials, status) in [("anonymous", None, 401), ("bob", Some(&bob), 404)] {
        let hidden = call(
            &buildgrid,
            "GET",
            &format!("/api/builds/{id}/log"),
            credentials,
        );
        let absent = call(
            &buildgrid,
            "GET",
            &format!("/api/builds/{missing}/log"),
            credentials,
        );
        assert_eq!(hidden.0, status, "{who}: {hidden:?}");
        assert_eq!(
            hidden,
            (
                absent.0,
                absent.1.replace(&missing.to_string(), &id.to_string())
            ),
            "{who}"
        );
    }
    let (status, body) = call(
        &buildgrid,
        "GET",
        &format!("/api/builds/{id}/log"),
        Some(&ann),
    );
    assert_eq!(status, 200, "{body}");
    buildgrid.cli_ok(&["namespace", "publish-logs", "acme", "on"]);
    for credentials in [None, Some(&bob)] {
        let (status, body) = call(
            &buildgrid,
            "GET",
            &format!("/api/builds/{id}/log"),
            credentials,
        );
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn paths_git_refuses_are_answered_404() {
    let buildgrid = Buildgrid::spawn();
    create_app(&buildgrid, "acme/paths", NOWHERE);
    let token = buildgrid.token();
    let request = |path: &str| {
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: buildgrid\r\nAuthorization: Bearer {token}");
        exchange(buildgrid.addr, &head, b"", QUICK)
    };
    let (status, body, _) = request("/git/acme/paths.git/info/refs?service=git-upload-pack");
    assert_eq!(status, 200, "{body}");
    for path in [
        "/git/acme/paths.git/../../../etc/passwd",
        "/git/acme/paths.git//info/refs?service=git-upload-pack",
        "/git/acme/paths.git/%2e%2e/paths.git/info/refs?service=git-upload-pack",
        "/git/acme/paths.git/info/refs%00?service=git-upload-pack",
        "/git/acme/paths.git/info/%00refs",
    ] {
        let (status, body, _) = request(path);
        assert!(matches!(status, 400 | 404), "{path}: {status} {body}");
    }
}

/// `git push <url> <what>` from `source`.
fn push(source: &Source, url: &str, what: &str) -> Output {
    Command::new("git")
        .args(["push", url, what])
        .current_dir(source.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HOME", source.path())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn pushes_over_the_size_limit_or_with_broken_objects_are_refused() {
    let buildgrid = Buildgrid::spawn_with_env(&[("BUILDGRID_MAX_PUSH_SIZE", "200000")]);
    create_app(&buildgrid, "acme/pushed", NOWHERE);
    let url = format!(
        "http://admin:{}@{}/git/acme/pushed.git",
        buildgrid.token(),
        buildgrid.host()
    );
    let source = Source::example();
    let first = source.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let output = push(&source, &url, "main");
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("buildgrid: build 1 queued"),
        "{}",
        text(&output)
    );

    // 1 MiB that does not compress: a pack five times the limit.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(source.path().join("noise.bin"), noise).unwrap();
    source.commit("a large file");
    let output = push(&source, &url, "main");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("pack exceeds maximum allowed size"),
        "{}",
        text(&output)
    );

    // A commit git's checks refuse (no author e-mail), written as it is.
    let tree = source
        .git(&["rev-parse", "HEAD~1^{tree}"])
        .trim()
        .to_owned();
    let object = format!(
        "tree {tree}\nparent {first}\nauthor nobody 1700000000 +0000\ncommitter nobody 1700000000 +0000\n\nbroken\n"
    );
    let object_file = source.path().join("broken-commit");
    std::fs::write(&object_file, object).unwrap();
    let broken = source
        .git(&[
            "hash-object",
            "--literally",
            "-t",
            "commit",
            "-w",
            object_file.to_str().unwrap(),
        ])
        .trim()
        .to_owned();
    let output = push(&source, &url, &format!("{broken}:refs/heads/main"));
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("fsck error in packed object"),
        "{}",
        text(&output)
    );

    // Neither queued a build nor moved the branch.
    assert!(!buildgrid.cli(&["build-log", "2"]).status.success());
    let repository = buildgrid.data_dir().join("git/acme/pushed.git");
    let main = Command::new("git")
        .arg("--git-dir")
        .arg(&repository)
        .args(["rev-parse", "refs/heads/main"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&main.stdout).trim(), first);
}
