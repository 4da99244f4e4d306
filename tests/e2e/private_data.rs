//! The data directory is private to the user buildgrid runs as: made 0700 with files other
//! users cannot read, an open one closed at the next start, one of another user refused; and
//! the secret env values of services never reach the database file in plain text.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{BIN, Buildgrid, TestImage};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn buildgrid_in(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn the_data_directory_buildgrid_makes_is_closed_to_other_users() {
    let buildgrid = Buildgrid::spawn();
    let image = TestImage::build("private", 0);
    buildgrid.import_ok(&image.archive, "acme/private", "v1");
    let data = buildgrid.data_dir();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("buildgrid.db")), 0o600);
    let blobs = files(&data.join("blobs"));
    assert!(blobs.len() >= 3, "{blobs:?}");
    for file in blobs.iter().chain(&files(&data.join("tmp"))) {
        assert_eq!(
            mode(file) & 0o077,
            0,
            "{} is {:o}",
            file.display(),
            mode(file)
        );
    }
    for name in ["buildgrid.db-wal", "buildgrid.db-shm"] {
        let path = data.join(name);
        if path.exists() {
            assert_eq!(mode(&path) & 0o077, 0, "{name} is {:o}", mode(&path));
        }
    }
}

#[test]
fn an_open_data_directory_is_closed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(buildgrid_in(&data, &["user", "list"]).status.success());
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("buildgrid.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let output = buildgrid_in(&data, &["user", "list"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    assert!(
        stderr.contains("was open to other users (mode 0755): set to 0700")
            && stderr.contains("(mode 0644): set to 0600"),
        "{stderr}"
    );
}

#[test]
fn a_data_directory_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // 65534 is `nobody`; the e2e tests run as root, who may give a file away.
    std::os::unix::fs::chown(&data, Some(65534), None).expect("chown (the e2e tests run as root)");
    let me = std::fs::metadata(dir.path()).unwrap().uid();
    for args in [&["user", "list"][..], &["serve", "--listen", "127.0.0.1:0"]] {
        let output = buildgrid_in(&data, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} ran: {stderr}");
        assert!(
            stderr.contains("belongs to uid 65534") && stderr.contains(&format!("chown -R {me}")),
            "{args:?}: {stderr}"
        );
    }
    assert!(!data.join("buildgrid.db").exists());
}

#[test]
fn secret_env_of_a_service_is_not_in_the_database_files() {
    const SECRET: &str = "sealed-secret-3b9e27f4";
    let buildgrid = Buildgrid::spawn();
    buildgrid.cli_ok(&[
        "app",
        "create",
        "acme/sealed",
        "--git",
        "https://git.example.com/acme/sealed.git",
    ]);
    buildgrid.add_local_server();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/sealed",
        "web",
        "--env",
        "PLAIN=visible-value-5c1d",
        "--secret-env",
        &format!("API_KEY={SECRET}"),
        "--health-running",
        "1",
        "--server",
        "local",
    ]);
    let listed = buildgrid.cli_ok(&["service", "list", "acme/sealed"]);
    assert!(listed.contains("API_KEY=***"), "{listed}");
    let data = buildgrid.data_dir();
    let holding = |needle: &str| -> Vec<&str> {
        ["buildgrid.db", "buildgrid.db-wal", "buildgrid.db-shm"]
            .into_iter()
            .filter(|name| {
                let bytes = std::fs::read(data.join(name)).unwrap_or_default();
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
            .collect()
    };
    // The plain env is there to be found: the scan reads what was written.
    assert!(!holding("visible-value-5c1d").is_empty());
    assert_eq!(holding(SECRET), Vec::<&str>::new());
    assert_eq!(mode(&data.join("secret.key")), 0o600);
}
