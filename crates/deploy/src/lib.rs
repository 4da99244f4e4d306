//! Deploys: an app's services run on its servers (Docker engines), each engine pulling the
//! built image from buildgrid's own registry with a short-lived pull-only token.
//!
//! A deploy starts every new replica of a service and waits until it is healthy before it stops
//! any old one; a failure removes what the deploy started and leaves the old containers serving.
//! Containers carry `buildgrid.*` labels, and buildgrid touches no container without them.
//!
//! Architecture invariant: this crate talks to engines through bollard and never to git.

mod run;
pub mod spec;

use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, Docker};
use buildgrid_store::{Server, Store, StoreError};

pub use run::{DeployError, deploy};

/// Labels on every container buildgrid starts.
pub const LABEL_APP: &str = "buildgrid.app";
pub const LABEL_SERVICE: &str = "buildgrid.service";
pub const LABEL_DEPLOY: &str = "buildgrid.deploy";
pub const LABEL_BUILD: &str = "buildgrid.build";
/// Which of the two host-port slots a container's replicas publish on (see `spec::host_port`).
pub const LABEL_SLOT: &str = "buildgrid.slot";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("unsupported Docker URL {0:?}: use unix:///path/to/docker.sock or tcp://host:port")]
    Url(String),
    #[error("the engine at {url} does not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client for the engine at `url`, at the API version the engine speaks.
pub async fn engine(url: &str) -> Result<Docker, ServerError> {
    let unreachable = |reason: String| ServerError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let docker = if url.starts_with("unix://") {
        Docker::connect_with_unix(url, 60, API_DEFAULT_VERSION)
    } else if let Some(rest) = url.strip_prefix("tcp://") {
        Docker::connect_with_http(&format!("http://{rest}"), 60, API_DEFAULT_VERSION)
    } else {
        return Err(ServerError::Url(url.to_owned()));
    }
    .map_err(|e| unreachable(e.to_string()))?;
    let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| unreachable("no answer within 10 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}

/// The address buildgrid reaches a server's published ports at.
pub fn server_host(url: &str) -> String {
    match url.strip_prefix("tcp://") {
        Some(rest) => rest
            .rsplit_once(':')
            .map_or(rest, |(host, _)| host)
            .to_owned(),
        None => "127.0.0.1".to_owned(),
    }
}

/// Registers a server after checking that its engine answers; records the engine's version.
pub async fn add_server(store: &Store, name: &str, url: &str) -> Result<Server, ServerError> {
    let docker = engine(url).await?;
    let version = docker
        .version()
        .await
        .map_err(|e| ServerError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(store.db.add_server(
        name,
        url,
        version.version.as_deref().unwrap_or("unknown"),
        version.api_version.as_deref().unwrap_or("unknown"),
    )?)
}

/// A container buildgrid started, by its labels.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub name: String,
    pub service: String,
    pub deploy: String,
    pub slot: u32,
    pub state: String,
}

/// Containers buildgrid runs on an engine (of `app` when given).
pub async fn labelled_containers(
    docker: &Docker,
    app: Option<&str>,
) -> Result<Vec<Labelled>, bollard::errors::Error> {
    let label = match app {
        Some(app) => format!("{LABEL_APP}={app}"),
        None => LABEL_APP.to_owned(),
    };
    let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&std::collections::HashMap::from([(
            "label".to_owned(),
            vec![label],
        )]))
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    Ok(containers
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            let name = c
                .names
                .and_then(|n| n.first().cloned())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned();
            Labelled {
                name,
                service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
                deploy: labels.get(LABEL_DEPLOY).cloned().unwrap_or_default(),
                slot: labels
                    .get(LABEL_SLOT)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            }
        })
        .collect())
}
