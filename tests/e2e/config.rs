//! The settings file (`--config`, `BUILDGRID_CONFIG`) under `BUILDGRID_*` variables and flags,
//! and `buildgrid config check`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{BIN, raw_http};

/// `buildgrid <args>` with no `BUILDGRID_*` variable but those given.
fn buildgrid(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().unwrap()
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("BUILDGRID_") {
            command.env_remove(name);
        }
    }
    command.args(args).envs(env.iter().copied());
    command
}

#[track_caller]
fn check_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = buildgrid(args, env);
    assert!(
        output.status.success(),
        "buildgrid {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The line of `config check`'s output that sets `key`.
#[track_caller]
fn line<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{output}"))
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("buildgrid.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn flags_win_over_variables_over_the_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "data = \"from-file\"\n\
         [server]\n\
         listen = \"127.0.0.1:6001\"\n\
         workers = 3\n\
         max_push_size = 1000\n\
         [builds]\n\
         concurrency = 4\n\
         timeout_minutes = 7\n",
    );
    let env = [
        ("BUILDGRID_CONFIG", file.as_str()),
        // The flat name of earlier versions and the sectioned name both work.
        ("BUILDGRID_LISTEN", "127.0.0.1:6002"),
        ("BUILDGRID_BUILDS__CONCURRENCY", "5"),
    ];
    let output = check_ok(
        &[
            "config",
            "check",
            "--build-concurrency",
            "6",
            "--workers",
            "8",
        ],
        &env,
    );
    // The file's relative data directory is relative to the file.
    let data = dir.path().join("from-file").display().to_string();
    assert_eq!(line(&output, "data"), format!("data = {data:?}  # file"));
    assert_eq!(
        line(&output, "listen"),
        "listen = \"127.0.0.1:6002\"  # env BUILDGRID_LISTEN"
    );
    assert_eq!(
        line(&output, "concurrency"),
        "concurrency = 6  # flag --build-concurrency"
    );
    assert_eq!(line(&output, "workers"), "workers = 8  # flag --workers");
    assert_eq!(
        line(&output, "max_push_size"),
        "max_push_size = 1000  # file; bytes"
    );
    assert_eq!(
        line(&output, "timeout_minutes"),
        "timeout_minutes = 7  # file"
    );
    assert_eq!(line(&output, "json"), "json = false  # default");

    // Without the flags, the sectioned variable wins over the file; without the file, defaults.
    let output = check_ok(&["config", "check"], &env);
    assert_eq!(
        line(&output, "concurrency"),
        "concurrency = 5  # env BUILDGRID_BUILDS__CONCURRENCY"
    );
    assert_eq!(line(&output, "workers"), "workers = 3  # file");
    let output = check_ok(&["config", "check"], &[]);
    assert!(output.starts_with("# config file: none"), "{output}");
    assert_eq!(
        line(&output, "listen"),
        "listen = \"127.0.0.1:5000\"  # default"
    );
    assert_eq!(line(&output, "concurrency"), "concurrency = 2  # default");

    // Two names of one setting that disagree are refused rather than one silently chosen.
    let output = buildgrid(
        &["config", "check"],
        &[
            ("BUILDGRID_LISTEN", "127.0.0.1:1"),
            ("BUILDGRID_SERVER__LISTEN", "127.0.0.1:2"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("BUILDGRID_LISTEN and BUILDGRID_SERVER__LISTEN are both set"),
        "{stderr}"
    );
}

#[test]
fn serve_takes_its_address_and_data_directory_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("served");
    let file = write_config(
        dir.path(),
        &format!(
            "data = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n",
            data.display().to_string()
        ),
    );
    let mut child = command(&["serve", "--config", &file], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("buildgrid listening on http://127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"));
    let answered = addr.as_ref().map(|addr| {
        raw_http(
            addr.parse().unwrap(),
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(addr.is_some(), "unexpected first line: {first:?}");
    // The registry answers (a ping without credentials is challenged).
    let (status, _) = answered.unwrap();
    assert!(matches!(status, 200 | 401), "GET /v2/ answered {status}");
    assert!(
        data.join("buildgrid.db").is_file(),
        "no database in the file's data directory"
    );
}

#[test]
fn an_unknown_key_is_refused_with_its_name_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[builds]\nconcurency = 3\n",
    );
    for args in [
        vec!["config", "check", "--config", &file],
        vec!["serve", "--config", &file],
    ] {
        let output = buildgrid(&args, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} accepted the file");
        assert!(stderr.contains("buildgrid.toml"), "{stderr}");
        assert!(stderr.contains("line 5"), "{stderr}");
        assert!(stderr.contains("unknown field `concurency`"), "{stderr}");
        assert!(stderr.contains("expected one of `concurrency`"), "{stderr}");
    }
    // A value of the wrong type is named the same way.
    let file = write_config(dir.path(), "[server]\nworkers = \"four\"\n");
    let output = buildgrid(&["config", "check", "--config", &file], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn config_check_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[server]\npublic_url = \"https://robot:hunter22@buildgrid.example.com/\"\n",
    );
    let key = "c2VjcmV0LWtleS1vZi0zMi1ieXRlcy1leGFjdGx5ISE=";
    let output = check_ok(
        &["config", "check", "--config", &file],
        &[("BUILDGRID_SECRET_KEY", key)],
    );
    assert!(!output.contains("hunter22"), "{output}");
    assert!(!output.contains(key), "{output}");
    assert_eq!(
        line(&output, "public_url"),
        "public_url = \"https://***@buildgrid.example.com/\"  # file"
    );
    assert!(
        output.contains("# key of sealed secrets: *** (env BUILDGRID_SECRET_KEY)"),
        "{output}"
    );
}
