//! The control socket: a deploy asks the proxy, in one JSON line, to switch or remove a route
//! or to list them, and reads one JSON line back. The socket is a Unix socket in the proxy's
//! state directory, reached on a remote server by running `buildgrid proxy …` inside the
//! proxy's container.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http::Request;
use http_body_util::{BodyExt, Either, Full};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::Shared;
use crate::forward::Upstream;
use crate::table::Route;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy's state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("a route needs at least one replica")]
    NoTargets,
    #[error("port {port}{} is published by {service}: choose another port or host name", if host.is_empty() { String::new() } else { format!(" for {host}") })]
    Taken {
        port: u16,
        host: String,
        service: String,
    },
    #[error("no route for host {host:?} on port {port}")]
    NoRoute { port: u16, host: String },
    #[error(
        "replica {target} did not pass its health check (GET {path}) within {seconds} s: {last}; the route still goes to the replicas it had"
    )]
    Unhealthy {
        target: SocketAddr,
        path: String,
        seconds: u64,
        last: String,
    },
    #[error("the proxy's control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the proxy answered: {0}")]
    Refused(String),
}

/// How the proxy checks a new replica before it takes traffic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `GET <path>` must answer 2xx or 3xx.
    pub path: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Check every target (when `health` is given), then switch the route to them in one
    /// step, then wait until the replaced replicas' requests ended (at most `drain_ms`).
    Deploy {
        route: Route,
        health: Option<HealthCheck>,
        drain_ms: u64,
    },
    /// Stop routing a port and host name, after its requests ended.
    Remove {
        port: u16,
        #[serde(default)]
        host: String,
        drain_ms: u64,
    },
    /// The routes in force.
    Routes,
    /// A new proxy takes the listening sockets (see `handover`); this one stops accepting.
    Handover,
}

/// What a deploy or removal did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeployReport {
    /// From the request to every new replica answering its health check.
    pub healthy_ms: u64,
    /// From the request to the switch.
    pub switched_ms: u64,
    /// Whether the replaced replicas' requests all ended before the drain timeout.
    pub drained: bool,
    /// From the switch to the end of the replaced replicas' last request.
    pub drained_ms: u64,
    /// The replicas the route went to before.
    pub previous: Vec<SocketAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done(DeployReport),
    Routes { routes: Vec<Route> },
    Error { message: String },
}

pub fn socket_path(state: &Path) -> PathBuf {
    state.join("control.sock")
}

/// Checks every target at once; the first that fails fails them all.
pub(crate) async fn check_all(
    upstream: &Upstream,
    targets: &[SocketAddr],
    health: &HealthCheck,
) -> Result<(), ProxyError> {
    let checks = targets.iter().map(|t| check(upstream, *t, health));
    for result in join_all(checks).await {
        result?;
    }
    Ok(())
}

async fn check(
    upstream: &Upstream,
    target: SocketAddr,
    health: &HealthCheck,
) -> Result<(), ProxyError> {
    let timeout = Duration::from_millis(health.timeout_ms);
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        let request = Request::get(format!("http://{target}{}", health.path))
            .header(http::header::USER_AGENT, "buildgrid-proxy health check")
            .body(Either::Left(Full::new(Bytes::new())));
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                return Err(ProxyError::Unhealthy {
                    target,
                    path: health.path.clone(),
                    seconds: 0,
                    last: format!("invalid health check path: {e}"),
                });
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_secs(5)), upstream.request(request))
            .await
        {
            Ok(Ok(response)) => {
                let status = response.status();
                // Read the body so the connection can be kept.
                let _ = response.into_body().collect().await;
                if status.is_success() || status.is_redirection() {
                    return Ok(());
                }
                last = format!("answered {status}");
            }
            Ok(Err(e)) => last = format!("no answer: {e}"),
            Err(_) => last = "no answer within 5 s".to_owned(),
        }
        if Instant::now() >= deadline {
            return Err(ProxyError::Unhealthy {
                target,
                path: health.path.clone(),
                seconds: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Listens on the control socket of the proxy's state directory.
pub(crate) fn serve(shared: Arc<Shared>) -> Result<JoinHandle<()>, ProxyError> {
    let path = socket_path(&shared.settings.state);
    let control_error = |source| ProxyError::Control {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(control_error(e)),
    }
    let listener = UnixListener::bind(&path).map_err(control_error)?;
    Ok(tokio::spawn(async move {
        let mut stopping = shared.stopping.subscribe();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("control socket: {e}");
                        continue;
                    }
                },
                _ = crate::stopped(&mut stopping) => break,
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(shared, stream).await {
                    tracing::warn!("control socket: {e}");
                }
            });
        }
    }))
}

async fn answer(shared: Arc<Shared>, mut stream: UnixStream) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new((&mut stream).take(1 << 20))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Err(e) => Reply::Error {
            message: format!("invalid command: {e}"),
        },
        Ok(command) => {
            tracing::info!(?command, "control");
            match command {
                Command::Deploy {
                    route,
                    health,
                    drain_ms,
                } => done(
                    shared
                        .deploy(route, health, Duration::from_millis(drain_ms))
                        .await,
                ),
                Command::Remove {
                    port,
                    host,
                    drain_ms,
                } => done(
                    shared
                        .remove(port, &host, Duration::from_millis(drain_ms))
                        .await,
                ),
                Command::Routes => Reply::Routes {
                    routes: shared.table.read().unwrap().routes(),
                },
                Command::Handover => return shared.hand_over(stream).await,
            }
        }
    };
    let mut text = serde_json::to_vec(&reply)?;
    text.push(b'\n');
    stream.write_all(&text).await
}

fn done(result: Result<DeployReport, ProxyError>) -> Reply {
    match result {
        Ok(report) => Reply::Done(report),
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}

/// Sends one command to the proxy whose state directory is `state` and returns its reply.
pub async fn send(state: &Path, command: &Command) -> Result<Reply, ProxyError> {
    let path = socket_path(state);
    let control_error = |source| ProxyError::Control {
        path: path.clone(),
        source,
    };
    let stream = UnixStream::connect(&path).await.map_err(control_error)?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_vec(command).expect("commands serialize");
    text.push(b'\n');
    write.write_all(&text).await.map_err(control_error)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(control_error)?;
    let reply: Reply = serde_json::from_str(&line)
        .map_err(|e| ProxyError::Refused(format!("an unreadable reply ({e}): {line:?}")))?;
    match reply {
        Reply::Error { message } => Err(ProxyError::Refused(message)),
        reply => Ok(reply),
    }
}
