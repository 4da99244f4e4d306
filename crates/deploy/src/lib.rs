//! Deploys: an app's services run on its servers (Docker engines), each engine pulling the
//! built image from buildgrid's own registry with a short-lived pull-only token.
//!
//! A deploy starts every new replica of a service and waits until it is healthy before it stops
//! any old one; a failure removes what the deploy started and leaves the old containers serving.
//! Containers carry `buildgrid.*` labels, among them the install's id (`buildgrid.install`), and
//! buildgrid touches no container without them: not another install's, nor one made before
//! containers carried the install label.
//!
//! Architecture invariant: this crate talks to engines through bollard and never to git.

mod docker_url;
mod output;
mod part;
pub mod proxy;
mod prune;
mod recover;
mod run;
mod servers;
pub mod spec;
mod ssh;

use bollard::Docker;
use buildgrid_store::{App, Server, Source, Store, StoreError};

pub use docker_url::{DockerUrl, server_host};
pub use output::container_output;
pub use recover::recover;
pub use run::{DeployError, deploy};
pub use servers::{ServerError, ServerFiles, add_server, engine};

/// Labels on every container buildgrid starts.
pub const LABEL_APP: &str = "buildgrid.app";
/// The id of the install that made the container (`Db::install_id`).
pub const LABEL_INSTALL: &str = "buildgrid.install";
pub const LABEL_SERVICE: &str = "buildgrid.service";
pub const LABEL_DEPLOY: &str = "buildgrid.deploy";
pub const LABEL_BUILD: &str = "buildgrid.build";
/// Which of the two host-port slots a container's replicas publish on (see `spec::host_port`).
pub const LABEL_SLOT: &str = "buildgrid.slot";

/// A container buildgrid started, by its labels.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub name: String,
    pub service: String,
    pub deploy: String,
    pub slot: u32,
    pub state: String,
    /// The image reference it was created from.
    pub image: String,
    /// Host ports it publishes.
    pub ports: Vec<u16>,
}

/// Which containers on an engine are this install's.
#[derive(Debug, Clone)]
pub struct Install {
    /// The install's id (`Db::install_id`), which every container it creates carries.
    pub id: String,
    /// `host:port` of the install's registry (from its public URL), which the images of its
    /// containers are named after: how containers made before the install label are told apart.
    pub registry_host: Option<String>,
}

/// The install of `store`.
pub fn install(store: &Store) -> Result<Install, StoreError> {
    let registry_host = store.db.setting("public_url")?.and_then(|url| {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let host = rest.split('/').next().unwrap_or("");
        (!host.is_empty()).then(|| host.to_owned())
    });
    Ok(Install {
        id: store.db.install_id()?,
        registry_host,
    })
}

impl Install {
    /// Whether a container with these labels and image is this install's: it carries the
    /// install's id, or (made before containers carried one) no id and an image of this
    /// install's registry. Installs sharing an engine listen on different addresses, so the
    /// second rule never takes another install's container.
    fn owns(&self, install_label: Option<&String>, image: &str) -> bool {
        match install_label {
            Some(id) => *id == self.id,
            None => self
                .registry_host
                .as_ref()
                .is_some_and(|host| image.starts_with(&format!("{host}/"))),
        }
    }
}

/// The start of the names of the install's containers: `bg-` and the first 6 characters of its
/// id, so that installs sharing an engine never want the same name.
pub fn name_prefix(install: &str) -> String {
    format!("bg-{}", &install[..install.len().min(6)])
}

/// Containers the install `install` runs on an engine (of `app` when given). Containers of
/// other installs are never listed; a container with `buildgrid.app` but no install label (made
/// before containers carried it) is the install's when its image comes from the install's
/// registry, and otherwise belongs to no install: it is named once in the log and left alone.
pub async fn labelled_containers(
    docker: &Docker,
    install: &Install,
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
        .filter(|c| {
            let label = c.labels.as_ref().and_then(|l| l.get(LABEL_INSTALL));
            let owned = install.owns(label, c.image.as_deref().unwrap_or(""));
            if !owned && label.is_none() {
                unowned(c);
            }
            owned
        })
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
                image: c.image.unwrap_or_default(),
                ports: {
                    let mut ports: Vec<u16> = c
                        .ports
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|p| p.public_port)
                        .collect();
                    ports.sort_unstable();
                    ports.dedup();
                    ports
                },
            }
        })
        .collect())
}

/// Logs, once per process, a container with buildgrid's labels but no install label.
fn unowned(container: &bollard::models::ContainerSummary) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let id = container.id.clone().unwrap_or_default();
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.contains(&id) {
        return;
    }
    seen.push(id);
    let name = container
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/'))
        .unwrap_or_default();
    tracing::warn!(
        container = name,
        "container has buildgrid labels but no {LABEL_INSTALL} label (made by an older version): \
         it belongs to no install and is left alone; remove it with docker rm -f when it is not needed"
    );
}

/// The source service `name` of `app` runs the image of: `None` for the app's own repository.
pub fn service_source(
    store: &Store,
    app: &App,
    name: &str,
    spec: &spec::ServiceSpec,
) -> Result<Option<Source>, DeployError> {
    let Some(repo) = &spec.source else {
        return Ok(None);
    };
    match store.db.source_by_repo(app.id, repo)? {
        Some(source) => Ok(Some(source)),
        None => Err(DeployError::Refused(format!(
            "the repository {repo} of service {name} is not stored"
        ))),
    }
}

/// An app's services with their specs; a spec that cannot be read is left out.
pub fn app_services(
    store: &Store,
    app_id: i64,
) -> Result<Vec<(String, spec::ServiceSpec)>, StoreError> {
    Ok(store
        .db
        .services(app_id)?
        .into_iter()
        .filter_map(|s| Some((s.name, serde_json::from_str(&s.spec).ok()?)))
        .collect())
}

/// The servers `services` run on.
pub fn servers_of(
    store: &Store,
    services: &[(String, spec::ServiceSpec)],
) -> Result<Vec<Server>, StoreError> {
    Ok(store
        .db
        .servers()?
        .into_iter()
        .filter(|s| {
            services
                .iter()
                .any(|(_, spec)| spec.servers.contains(&s.name))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::Install;

    #[track_caller]
    fn check(label: Option<&str>, image: &str, owned: bool) {
        let install = Install {
            id: "a1b2c3".into(),
            registry_host: Some("127.0.0.1:5000".into()),
        };
        let label = label.map(str::to_owned);
        assert_eq!(
            install.owns(label.as_ref(), image),
            owned,
            "{label:?} {image}"
        );
    }

    #[test]
    fn an_install_owns_its_labelled_containers_and_older_ones_of_its_registry() {
        check(Some("a1b2c3"), "127.0.0.1:5001/acme/shop.x:1", true);
        check(Some("d4e5f6"), "127.0.0.1:5000/acme/shop.x:1", false);
        // Made before the install label: told apart by the registry the image came from.
        check(None, "127.0.0.1:5000/acme/shop.x:1", true);
        check(None, "127.0.0.1:5001/acme/shop.x:1", false);
        check(None, "127.0.0.1:50001/acme/shop.x:1", false);
        check(None, "busybox", false);
    }
}
