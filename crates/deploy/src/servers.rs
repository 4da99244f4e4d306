//! Servers: a client for a server's engine (a unix socket, TCP with or without
//! TLS, or SSH), and registering a new one.
//!
//! What a server connects with is copied into the data directory when it is added, so that
//! deploys do not depend on the files the user named: `<data>/servers/<name>/` holds `ca.pem`,
//! `cert.pem` and `key.pem` for TLS and `ssh_key` for SSH.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, Docker};
use buildgrid_store::{Server, ServerAccess, Store, StoreError};

use crate::docker_url::{DockerUrl, authority};
use crate::ssh::{self, SshTarget};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "unsupported Docker URL {0:?}: use unix:///path/to/docker.sock, tcp://host:port or ssh://user@host[:port]"
    )]
    Url(String),
    #[error(
        "a server's name is 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit, not {0:?}"
    )]
    Name(String),
    #[error("{0}")]
    Options(String),
    #[error("cannot use {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the engine at {url} does not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a server's files are.
fn server_dir(data: &Path, name: &str) -> PathBuf {
    data.join("servers").join(name)
}

/// A client for the server's engine, at the API version the engine speaks.
pub async fn engine(store: &Store, server: &Server) -> Result<Docker, ServerError> {
    let access = ServerAccess {
        tls: server.tls,
        ssh_key: server.ssh_key,
    };
    let files = server_dir(store.root(), &server.name);
    connect(store.root(), &server.docker_url, access, &files, true).await
}

/// Connects to the engine at `url` with the files in `files` that `access` says it needs; over
/// SSH, `multiplex` shares one SSH connection between requests.
async fn connect(
    data: &Path,
    url: &str,
    access: ServerAccess,
    files: &Path,
    multiplex: bool,
) -> Result<Docker, ServerError> {
    let unreachable = |reason: String| ServerError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let parsed = DockerUrl::parse(url)?;
    let docker = match &parsed {
        DockerUrl::Unix { .. } => Docker::connect_with_unix(url, 60, API_DEFAULT_VERSION),
        DockerUrl::Tcp { host, port } if access.tls => Docker::connect_with_ssl(
            &authority(host, port.unwrap_or(2376)),
            &files.join("key.pem"),
            &files.join("cert.pem"),
            &files.join("ca.pem"),
            60,
            API_DEFAULT_VERSION,
        ),
        DockerUrl::Tcp { host, port } => Docker::connect_with_http(
            &format!("http://{}", authority(host, port.unwrap_or(2375))),
            60,
            API_DEFAULT_VERSION,
        ),
        DockerUrl::Ssh { user, host, port } => ssh::connect(SshTarget {
            user: user.clone(),
            host: host.clone(),
            port: *port,
            key: access.ssh_key.then(|| files.join("ssh_key")),
            dir: data.join("ssh"),
            multiplex,
        }),
    }
    .map_err(|e| unreachable(reason(&e, access.tls)))?;
    // SSH may take its own 10 s connect timeout and then report why it failed.
    let wait = match parsed {
        DockerUrl::Ssh { .. } => Duration::from_secs(20),
        _ => Duration::from_secs(10),
    };
    let docker = tokio::time::timeout(wait, docker.negotiate_version())
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", wait.as_secs())))?
        .map_err(|e| unreachable(reason(&e, access.tls)))?;
    Ok(docker)
}

/// An error and its causes on one line, with what to check when TLS is what failed.
fn reason(error: &(dyn std::error::Error + 'static), tls: bool) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    if !tls {
        if text.contains("HTTP request to an HTTPS server") {
            return format!(
                "the engine speaks TLS: add it with --tls-ca, --tls-cert and --tls-key ({text})"
            );
        }
        return text;
    }
    let hint = if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        "the engine's certificate is not signed by the CA given with --tls-ca, or does not name this host"
    } else if text.contains("received fatal alert") {
        "the engine refused the client certificate: is --tls-cert signed by the CA the engine trusts (its --tlscacert)?"
    } else {
        return text;
    };
    format!("{hint} ({text})")
}

/// The files a new server connects with, as the user named them.
#[derive(Debug, Default, Clone)]
pub struct ServerFiles {
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
}

/// The TLS files, when all three are given; a refusal when only some are.
fn tls_files(files: &ServerFiles) -> Result<Option<[(&Path, &str); 3]>, ServerError> {
    match (&files.tls_ca, &files.tls_cert, &files.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Ok(Some([
            (ca.as_path(), "ca.pem"),
            (cert.as_path(), "cert.pem"),
            (key.as_path(), "key.pem"),
        ])),
        (None, None, None) => Ok(None),
        (ca, cert, key) => {
            let missing: Vec<&str> = [(ca, "--tls-ca"), (cert, "--tls-cert"), (key, "--tls-key")]
                .into_iter()
                .filter(|(given, _)| given.is_none())
                .map(|(_, flag)| flag)
                .collect();
            Err(ServerError::Options(format!(
                "TLS needs --tls-ca, --tls-cert and --tls-key together: {} missing",
                missing.join(" and ")
            )))
        }
    }
}

fn check_name(name: &str) -> Result<(), ServerError> {
    let fine = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if fine {
        Ok(())
    } else {
        Err(ServerError::Name(name.to_owned()))
    }
}

/// Copies `from` to `to`, readable by this user only; checks it holds the PEM block `pem`.
fn copy_private(from: &Path, to: &Path, pem: Option<&str>) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = std::fs::read(from).map_err(|e| ServerError::File {
        path: from.to_owned(),
        reason: e.to_string(),
    })?;
    if let Some(pem) = pem
        && !String::from_utf8_lossy(&bytes).contains(pem)
    {
        return Err(ServerError::File {
            path: from.to_owned(),
            reason: format!("it holds no PEM {pem} block"),
        });
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .and_then(|mut file| file.write_all(&bytes))
        .map_err(|e| ServerError::File {
            path: to.to_owned(),
            reason: e.to_string(),
        })
}

/// Registers a server after checking that its engine answers with the given files; records the
/// engine's version. Nothing is stored when the check fails.
pub async fn add_server(
    store: &Store,
    name: &str,
    url: &str,
    files: &ServerFiles,
) -> Result<Server, ServerError> {
    check_name(name)?;
    let parsed = DockerUrl::parse(url)?;
    let tls = tls_files(files)?;
    if tls.is_some() && !matches!(parsed, DockerUrl::Tcp { .. }) {
        return Err(ServerError::Options(
            "--tls-ca, --tls-cert and --tls-key are for tcp:// URLs".into(),
        ));
    }
    if files.ssh_key.is_some() && !matches!(parsed, DockerUrl::Ssh { .. }) {
        return Err(ServerError::Options("--ssh-key is for ssh:// URLs".into()));
    }
    if store.db.servers()?.iter().any(|s| s.name == name) {
        return Err(StoreError::Conflict(format!("server {name} exists already")).into());
    }
    let access = ServerAccess {
        tls: tls.is_some(),
        ssh_key: files.ssh_key.is_some(),
    };
    // The files are checked where they will stay, then kept only when the server is stored.
    let servers = store.root().join("servers");
    let staging = servers.join(format!(".{name}.new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let checked = async {
        if access != ServerAccess::default() {
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&staging)
                    .map_err(|e| ServerError::File {
                        path: staging.clone(),
                        reason: e.to_string(),
                    })?;
            }
            for (from, to) in tls.into_iter().flatten() {
                let pem = if to == "key.pem" {
                    "PRIVATE KEY"
                } else {
                    "CERTIFICATE"
                };
                copy_private(from, &staging.join(to), Some(pem))?;
            }
            if let Some(key) = &files.ssh_key {
                copy_private(key, &staging.join("ssh_key"), None)?;
            }
        }
        // Over SSH each check logs in anew, so that the key given is the one that works.
        let docker = connect(store.root(), url, access, &staging, false).await?;
        let version = docker
            .version()
            .await
            .map_err(|e| ServerError::Unreachable {
                url: url.to_owned(),
                reason: reason(&e, access.tls),
            })?;
        Ok::<_, ServerError>(version)
    }
    .await;
    let stored = checked.and_then(|version| {
        Ok(store.db.add_server(
            name,
            url,
            access,
            version.version.as_deref().unwrap_or("unknown"),
            version.api_version.as_deref().unwrap_or("unknown"),
        )?)
    });
    let server = match stored {
        Ok(server) => server,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    if access != ServerAccess::default() {
        let kept = server_dir(store.root(), name);
        // Files of a server of this name that is no longer stored are stale.
        let _ = std::fs::remove_dir_all(&kept);
        std::fs::rename(&staging, &kept).map_err(|e| ServerError::File {
            path: kept,
            reason: e.to_string(),
        })?;
    }
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_needs_all_three_files() {
        let some = |path: &str| Some(PathBuf::from(path));
        let files = ServerFiles {
            tls_ca: some("ca.pem"),
            tls_key: some("key.pem"),
            ..ServerFiles::default()
        };
        let error = tls_files(&files).unwrap_err().to_string();
        assert!(error.ends_with(": --tls-cert missing"), "{error}");
        let files = ServerFiles {
            tls_cert: some("cert.pem"),
            ..ServerFiles::default()
        };
        let error = tls_files(&files).unwrap_err().to_string();
        assert!(error.ends_with("--tls-ca and --tls-key missing"), "{error}");
        assert!(tls_files(&ServerFiles::default()).unwrap().is_none());
    }

    #[test]
    fn server_names_become_directory_names() {
        for name in ["local", "edge-1", "eu.west_2"] {
            assert!(check_name(name).is_ok(), "{name}");
        }
        for name in ["", ".hidden", "../up", "a/b", "-x", &"x".repeat(65)] {
            assert!(check_name(name).is_err(), "{name}");
        }
    }
}
