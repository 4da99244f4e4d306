//! Engines over SSH, reached the way the docker CLI reaches them: each connection runs the
//! system `ssh` with `docker system dial-stdio` on the remote machine and speaks HTTP over its
//! stdin and stdout.
//!
//! Host keys are trusted on first use into `<data>/ssh/known_hosts`, and a changed one is
//! refused. Requests to one host share an SSH connection (ssh's ControlMaster, its socket in
//! `<data>/ssh/`) that stays open a minute after the last one.
//!
//! The requests go through bollard's custom transport: bollard's own `ssh` feature only takes a
//! key (no known_hosts file, batch mode or shared connection), and a local socket in front of
//! ssh would need a listener in every process that deploys.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::{Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

/// What the engine is asked for in the `Host` header, as the docker CLI does.
const API_HOST: &str = "api.moby.localhost";
/// The longest path of a unix socket (108 bytes with the terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// One remote machine and how to log in there.
#[derive(Debug, Clone)]
pub(crate) struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The key to log in with; without one, ssh picks (agent, `~/.ssh/config`, default keys).
    pub key: Option<PathBuf>,
    /// `<data>/ssh`: `known_hosts` and the sockets of shared connections.
    pub dir: PathBuf,
    /// Share one SSH connection between requests. Checking a new server logs in anew instead,
    /// so that the key given is the one that works.
    pub multiplex: bool,
}

/// A path as an ssh option's value, `%` being ssh's token character and whitespace needing
/// quotes; `tokens` is appended as it is.
fn option_path(path: &Path, tokens: &str) -> String {
    let text = path.to_string_lossy().replace('%', "%%") + tokens;
    if text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// `ssh`'s arguments for one connection to the engine.
pub(crate) fn ssh_args(target: &SshTarget) -> Vec<OsString> {
    let mut options = vec![
        "BatchMode=yes".to_owned(),
        "ConnectTimeout=10".to_owned(),
        "StrictHostKeyChecking=accept-new".to_owned(),
        format!(
            "UserKnownHostsFile={}",
            option_path(&target.dir.join("known_hosts"), "")
        ),
        "LogLevel=ERROR".to_owned(),
    ];
    // `%C` becomes 40 hex digits, and ssh appends 17 characters while it creates the socket;
    // with a longer path, each request logs in anew.
    let control_path_len = target.dir.as_os_str().len() + 1 + 40 + 17;
    if target.multiplex && control_path_len <= SOCKET_PATH_MAX {
        options.push("ControlMaster=auto".to_owned());
        options.push(format!("ControlPath={}", option_path(&target.dir, "/%C")));
        options.push("ControlPersist=60".to_owned());
    } else {
        options.push("ControlMaster=no".to_owned());
        options.push("ControlPath=none".to_owned());
    }
    if let Some(key) = &target.key {
        options.push(format!("IdentityFile={}", option_path(key, "")));
        options.push("IdentitiesOnly=yes".to_owned());
    }
    let mut args: Vec<OsString> = Vec::new();
    for option in options {
        args.push("-o".into());
        args.push(option.into());
    }
    if let Some(port) = target.port {
        args.push("-p".into());
        args.push(port.to_string().into());
    }
    if let Some(user) = &target.user {
        args.push("-l".into());
        args.push(user.into());
    }
    for arg in ["-T", "--", &target.host, "docker", "system", "dial-stdio"] {
        args.push(arg.into());
    }
    args
}

/// What ssh printed when it failed, on one line that says what to do.
pub(crate) fn ssh_failure(printed: &str, target: &SshTarget) -> String {
    let known_hosts = target.dir.join("known_hosts");
    if printed.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        // ssh names the line it trusted: `Offending ED25519 key in <file>:<line>`.
        let offending = printed
            .lines()
            .find_map(|l| l.trim().strip_prefix("Offending ")?.split_once(" key in "))
            .and_then(|(_, at)| at.trim().rsplit_once(':'));
        let line = match offending {
            Some((file, line)) => format!("line {line} of {file}"),
            None => format!("its line from {}", known_hosts.display()),
        };
        return format!(
            "the SSH host key of {} changed since buildgrid first trusted it: if the machine's key changed on purpose, remove {line}",
            target.host
        );
    }
    let lines: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    let Some(last) = lines.last() else {
        return "ssh closed the connection without saying why".to_owned();
    };
    if last.contains("docker: not found") || last.contains("docker: command not found") {
        return format!(
            "there is no docker command on {} ({last}): install the Docker CLI there",
            target.host
        );
    }
    if last.contains("Permission denied (") {
        return format!(
            "ssh cannot log in ({last}): is the key (--ssh-key) in the remote user's authorized_keys?"
        );
    }
    if last.starts_with("ssh:") {
        last.to_string()
    } else {
        format!("ssh: {last}")
    }
}

/// A client whose every connection is one `ssh … docker system dial-stdio`.
pub(crate) fn connect(target: SshTarget) -> Result<Docker, Error> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target.dir)?;
    }
    let target = Arc::new(target);
    Docker::connect_with_custom_transport(
        move |request: BollardRequest| request_over_ssh(target.clone(), request),
        Some(format!("http://{API_HOST}")),
        60,
        API_DEFAULT_VERSION,
    )
}

async fn request_over_ssh(
    target: Arc<SshTarget>,
    request: BollardRequest,
) -> Result<Response<Incoming>, Error> {
    let mut child = tokio::process::Command::new("ssh")
        .args(ssh_args(&target))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot run ssh ({e}): install OpenSSH's client (Debian's openssh-client)"
            ))
        })?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("ssh started without its pipes").into());
    };
    let printed = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tokio::io::join(stdout, stdin))).await?;
    // The connection, and with it ssh, lasts until the response has been read.
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
        drop(child);
    });
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path.parse::<Uri>()?;
    parts
        .headers
        .insert(HOST, HeaderValue::from_static(API_HOST));
    match sender
        .send_request(BollardRequest::from_parts(parts, body))
        .await
    {
        Ok(response) => Ok(response),
        Err(error) => {
            let printed = tokio::time::timeout(Duration::from_secs(5), printed)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let reason = if printed.trim().is_empty() {
                format!("ssh: {error}")
            } else {
                ssh_failure(&printed, &target)
            };
            Err(std::io::Error::other(reason).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            user: Some("deploy".into()),
            host: "10.0.0.5".into(),
            port: Some(2222),
            key: Some("/data/servers/edge/ssh_key".into()),
            dir: "/data/ssh".into(),
            multiplex: true,
        }
    }

    fn line(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn ssh_runs_dial_stdio_with_the_server_key_and_buildgrid_known_hosts() {
        assert_eq!(
            line(&ssh_args(&target())),
            "-o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=accept-new \
             -o UserKnownHostsFile=/data/ssh/known_hosts -o LogLevel=ERROR \
             -o ControlMaster=auto -o ControlPath=/data/ssh/%C -o ControlPersist=60 \
             -o IdentityFile=/data/servers/edge/ssh_key -o IdentitiesOnly=yes \
             -p 2222 -l deploy -T -- 10.0.0.5 docker system dial-stdio"
        );
        let plain = SshTarget {
            user: None,
            port: None,
            key: None,
            multiplex: false,
            dir: "/my data/100%".into(),
            ..target()
        };
        assert_eq!(
            line(&ssh_args(&plain)),
            "-o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=accept-new \
             -o UserKnownHostsFile=\"/my data/100%%/known_hosts\" -o LogLevel=ERROR \
             -o ControlMaster=no -o ControlPath=none -T -- 10.0.0.5 docker system dial-stdio"
        );
        let deep = SshTarget {
            dir: PathBuf::from("/").join("d".repeat(60)),
            ..target()
        };
        assert!(line(&ssh_args(&deep)).contains("ControlMaster=no"));
    }

    #[test]
    fn ssh_failures_on_one_line() {
        let target = target();
        let check = |printed: &str, expected: &str| {
            assert_eq!(ssh_failure(printed, &target), expected, "{printed}");
        };
        check(
            "Warning: Permanently added '[10.0.0.5]:2222' (ED25519) to the list of known hosts.\r\n\
             deploy@10.0.0.5: Permission denied (publickey).\r\n",
            "ssh cannot log in (deploy@10.0.0.5: Permission denied (publickey).): is the key \
             (--ssh-key) in the remote user's authorized_keys?",
        );
        check(
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
             @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
             @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
             IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
             Offending ED25519 key in /data/ssh/known_hosts:1\n\
             Host key for [10.0.0.5]:2222 has changed and you have requested strict checking.\n\
             Host key verification failed.\n",
            "the SSH host key of 10.0.0.5 changed since buildgrid first trusted it: if the \
             machine's key changed on purpose, remove line 1 of /data/ssh/known_hosts",
        );
        check(
            "bash: line 1: docker: command not found\n",
            "there is no docker command on 10.0.0.5 (bash: line 1: docker: command not found): \
             install the Docker CLI there",
        );
        check(
            "ssh: connect to host 10.0.0.5 port 2222: Connection refused\n",
            "ssh: connect to host 10.0.0.5 port 2222: Connection refused",
        );
        check(
            "permission denied while trying to connect to the Docker daemon socket\n",
            "ssh: permission denied while trying to connect to the Docker daemon socket",
        );
    }
}
