//! Access with real clients: `docker login`, `docker pull` and `docker logout` through the
//! engine, `skopeo inspect --creds`, and `git push` with and without the right to build.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use buildgrid_store::Store;

use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::{Buildgrid, TestImage, run};

/// The docker CLI with a configuration directory of its own, so logins stay in the test.
fn docker(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the docker CLI is needed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn login(config: &Path, host: &str, user: &str, password: &str) -> Output {
    docker(
        config,
        &["login", host, "-u", user, "--password-stdin"],
        Some(password),
    )
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Creates a user, optionally a member of `namespace`, and returns its registry password.
fn user(buildgrid: &Buildgrid, name: &str, namespace: Option<&str>) -> String {
    buildgrid.cli_ok(&["user", "create", name]);
    if let Some(namespace) = namespace {
        buildgrid.cli_ok(&["namespace", "add-member", namespace, name]);
    }
    let printed = buildgrid.cli_ok(&["user", "registry-password", name]);
    printed
        .lines()
        .find_map(|line| line.strip_prefix("password: "))
        .expect("the password is printed")
        .to_owned()
}

fn web_password(created: &str) -> String {
    created
        .lines()
        .find_map(|line| line.strip_prefix("web password (shown once): "))
        .unwrap()
        .to_owned()
}

#[test]
fn docker_login_pull_and_logout_with_registry_credentials() {
    let buildgrid = Buildgrid::spawn();
    let image = TestImage::build("private hello", 0);
    let digest = buildgrid.import_ok(&image.archive, "acme/private", "v1");
    let host = buildgrid.host();
    let reference = format!("{host}/acme/private:v1");
    let config = tempfile::tempdir().unwrap();
    let config = config.path();

    let anonymous = docker(config, &["pull", &reference], None);
    assert!(!anonymous.status.success());
    assert!(
        text(&anonymous).contains("authentication required to pull acme/private"),
        "{}",
        text(&anonymous)
    );

    let password = user(&buildgrid, "ann", Some("acme"));
    let created = buildgrid.cli_ok(&["user", "create", "web-only"]);
    let refused = login(config, &host, "web-only", &web_password(&created));
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("unauthorized"),
        "{}",
        text(&refused)
    );

    let logged_in = login(config, &host, "ann", &password);
    assert!(logged_in.status.success(), "{}", text(&logged_in));
    assert!(text(&logged_in).contains("Login Succeeded"));
    let pulled = docker(config, &["pull", &reference], None);
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert!(text(&pulled).contains(&digest), "{}", text(&pulled));
    let printed = docker(config, &["run", "--rm", &reference], None);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        "private hello"
    );
    run("docker", &["rmi", "--no-prune", &reference]);

    let logged_out = docker(config, &["logout", &host], None);
    assert!(logged_out.status.success(), "{}", text(&logged_out));
    let after_logout = docker(config, &["pull", &reference], None);
    assert!(!after_logout.status.success(), "{}", text(&after_logout));

    // The audit log names who pulled the private image (entries are written within seconds).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audit = buildgrid.cli_ok(&["audit"]);
        if audit.contains(&format!("\tann\tpull\tacme/private@{digest}\t127.0.0.1"))
            || audit.contains(&format!(
                "\tann\tpull\tacme/private:v1 ({digest})\t127.0.0.1"
            ))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "audit log:\n{audit}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let audit = buildgrid.cli_ok(&["audit"]);
    let log = std::fs::read_to_string(buildgrid.data.path().join("serve.log")).unwrap();
    for secret in [&password, &web_password(&created)] {
        assert!(
            !audit.contains(secret.as_str()),
            "a secret in the audit log"
        );
        assert!(!log.contains(secret.as_str()), "a secret in the server log");
    }
}

#[test]
fn tokens_and_non_members_get_exactly_their_rights() {
    let buildgrid = Buildgrid::spawn();
    let image = TestImage::build("token hello", 0);
    buildgrid.import_ok(&image.archive, "acme/private", "v1");
    let host = buildgrid.host();
    let reference = format!("{host}/acme/private:v1");
    let source = format!("docker://{reference}");
    user(&buildgrid, "ann", Some("acme"));
    let bob = user(&buildgrid, "bob", None);

    // A non-member signs in, but may not pull.
    let config = tempfile::tempdir().unwrap();
    assert!(login(config.path(), &host, "bob", &bob).status.success());
    let denied = docker(config.path(), &["pull", &reference], None);
    assert!(!denied.status.success());
    assert!(text(&denied).contains("denied"), "{}", text(&denied));

    // A read-only token: docker login with any user name, pull, then revoke it.
    let token = buildgrid
        .cli_ok(&[
            "token",
            "create",
            "--user",
            "ann",
            "--name",
            "ci",
            "--scope",
            "pull:acme",
        ])
        .trim()
        .to_owned();
    let config = tempfile::tempdir().unwrap();
    assert!(login(config.path(), &host, "ci", &token).status.success());
    let pulled = docker(config.path(), &["pull", &reference], None);
    assert!(pulled.status.success(), "{}", text(&pulled));
    run("docker", &["rmi", "--no-prune", &reference]);
    let skopeo = |creds: Option<&str>| {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if let Some(creds) = creds {
            args.extend(["--creds", creds]);
        }
        args.push(&source);
        run("skopeo", &args)
    };
    let inspected = skopeo(Some(&format!("ci:{token}")));
    assert!(inspected.status.success(), "{}", text(&inspected));
    assert!(!skopeo(None).status.success());
    assert!(!skopeo(Some(&format!("bob:{bob}"))).status.success());

    let listed = buildgrid.cli_ok(&["token", "list", "--user", "ann"]);
    let id = listed.split_whitespace().next().unwrap().to_owned();
    assert!(
        listed.contains("ci\tann\tpull:acme\tno expiry\tlast used"),
        "{listed}"
    );
    buildgrid.cli_ok(&["token", "revoke", &id]);
    let revoked = skopeo(Some(&format!("ci:{token}")));
    assert!(!revoked.status.success());
    assert!(
        text(&revoked).contains("the token was revoked"),
        "{}",
        text(&revoked)
    );

    // An expired token (made through the store, as no command makes one in the past).
    let store = Store::open(&buildgrid.data_dir()).unwrap();
    let ann = buildgrid_access::user(&store, "ann").unwrap();
    let scopes = [buildgrid_access::Scope::parse("pull").unwrap()];
    let (_, expired) =
        buildgrid_access::create_token(&store, &ann, "old", &scopes, Some(1)).unwrap();
    let refused = skopeo(Some(&format!("ann:{expired}")));
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("the token has expired"),
        "{}",
        text(&refused)
    );
    let config = tempfile::tempdir().unwrap();
    assert!(
        !login(config.path(), &host, "ann", &expired)
            .status
            .success()
    );
}

fn push(source: &Source, url: &str) -> Output {
    Command::new("git")
        .args(["push", url, "main"])
        .current_dir(source.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HOME", source.path())
        .output()
        .unwrap()
}

#[test]
fn git_push_needs_build_rights_on_the_app() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    create_app(
        &buildgrid,
        "acme/gated",
        "https://git.example.com/acme/gated.git",
    );
    let ann = user(&buildgrid, "ann", Some("acme"));
    let bob = user(&buildgrid, "bob", None);
    let pull_only = buildgrid
        .cli_ok(&["token", "create", "--user", "ann", "--scope", "pull:acme"])
        .trim()
        .to_owned();
    let other_app = buildgrid
        .cli_ok(&[
            "token",
            "create",
            "--user",
            "ann",
            "--scope",
            "build:acme/other",
        ])
        .trim()
        .to_owned();
    let source = Source::example();
    let url = |user: &str, password: &str| {
        format!(
            "http://{user}:{password}@{}/git/acme/gated.git",
            buildgrid.host()
        )
    };
    for (who, push_url) in [
        ("a non-member", url("bob", &bob)),
        ("a pull-only token", url("ci", &pull_only)),
        ("a token of another app", url("ci", &other_app)),
    ] {
        let output = push(&source, &push_url);
        assert!(!output.status.success(), "{who} pushed");
        assert!(
            text(&output).contains("The requested URL returned error: 403"),
            "{who}: {}",
            text(&output)
        );
    }
    assert!(
        !buildgrid.cli(&["build-log", "1"]).status.success(),
        "a refused push queued a build"
    );

    let output = push(&source, &url("ann", &ann));
    assert!(output.status.success(), "{}", text(&output));
    let id: String = text(&output)
        .split("buildgrid: build ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no build queued:\n{}", text(&output)))
        .to_owned();
    let log = buildgrid.cli_ok(&["build-log", &id, "--follow"]);
    assert!(log.contains("acme/gated"), "{log}");
    // Reading the build needs rights too.
    let anonymous = reqwest::blocking::get(buildgrid.url(&format!("/api/builds/{id}"))).unwrap();
    assert_eq!(anonymous.status(), 401);
}
