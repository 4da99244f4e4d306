//! Deploys after builds: a successful build of an app's branch is deployed when the app has
//! services and automatic deploys are not turned off (`buildgrid app auto-deploy <app> off`).
//! Deploys of one app run one at a time; a newer build waiting for its turn replaces an older
//! one that waits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use buildgrid_core::{AppRef, RequestId};
use buildgrid_store::{BuildState, Store};
use buildgrid_web::{Running, ServerRunning};

/// The settings key that turns automatic deploys of an app off.
pub fn setting_key(app: &str) -> String {
    format!("auto_deploy:{app}")
}

#[derive(Default)]
struct Queue {
    /// The build waiting to be deployed, what asked for it and the HTTP request that did, if
    /// one did, per app.
    pending: HashMap<i64, (i64, String, Option<RequestId>)>,
    /// Apps a deploy is running for.
    running: HashSet<i64>,
}

pub struct AutoDeploy {
    store: Arc<Store>,
    registry_host: String,
    queue: Mutex<Queue>,
}

impl AutoDeploy {
    pub fn new(store: Arc<Store>, registry_host: String) -> Arc<AutoDeploy> {
        Arc::new(AutoDeploy {
            store,
            registry_host,
            queue: Mutex::default(),
        })
    }

    /// After build `id` succeeded: queue its deploy if it should have one.
    pub fn built(self: &Arc<Self>, id: i64) {
        let Ok(Some(build)) = self.store.db.build(id) else {
            return;
        };
        let Ok(Some(app)) = self.store.db.app_by_id(build.app_id) else {
            return;
        };
        // A build of one of the app's sources deploys after a build of that source's branch.
        let branch = match build.source_id {
            None => app.branch.clone(),
            Some(id) => match self.store.db.source(id) {
                Ok(Some(source)) => source.branch,
                _ => return,
            },
        };
        let wanted = build.state == BuildState::Succeeded
            && build.git_ref == branch
            && !self
                .store
                .db
                .services(app.id)
                .unwrap_or_default()
                .is_empty()
            && self
                .store
                .db
                .setting(&setting_key(&app.app.to_string()))
                .ok()
                .flatten()
                .as_deref()
                != Some("off");
        if wanted {
            self.queue_deploy(app.id, build.id, format!("build {}", build.id), None);
        }
    }

    /// Queues a deploy of `build`: it replaces a deploy of the app waiting for its turn.
    pub fn queue_deploy(
        self: &Arc<Self>,
        app_id: i64,
        build: i64,
        trigger: String,
        request: Option<RequestId>,
    ) {
        {
            let mut queue = self.queue.lock().unwrap();
            queue.pending.insert(app_id, (build, trigger, request));
            if !queue.running.insert(app_id) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move { this.run(app_id).await });
    }

    async fn run(self: Arc<Self>, app_id: i64) {
        loop {
            let (next, trigger, request) = {
                let mut queue = self.queue.lock().unwrap();
                match queue.pending.remove(&app_id) {
                    Some(next) => next,
                    None => {
                        queue.running.remove(&app_id);
                        return;
                    }
                }
            };
            let Ok(Some(app)) = self.store.db.app_by_id(app_id) else {
                continue;
            };
            let print = |line: &buildgrid_store::DeployLine| {
                tracing::debug!(line = %line.line, "deploy");
            };
            match buildgrid_deploy::deploy(
                &self.store,
                &app,
                Some(next),
                &self.registry_host,
                &trigger,
                request.as_ref(),
                &print,
            )
            .await
            {
                Ok(deploy) => {
                    tracing::info!(app = %app.app, deploy = deploy.id, state = %deploy.state, "deploy ended")
                }
                Err(error) => {
                    tracing::warn!(app = %app.app, %error, "no deploy after build {next}")
                }
            }
        }
    }
}

/// Deploys for the web pages: queue one, and ask the servers what runs of an app.
pub struct WebDeployer(pub Arc<AutoDeploy>);

impl buildgrid_web::Deployer for WebDeployer {
    fn deploy(&self, app_id: i64, build: i64, trigger: String, request: Option<RequestId>) {
        self.0.queue_deploy(app_id, build, trigger, request);
    }

    fn running(&self, app: AppRef) -> buildgrid_web::BoxFuture<Vec<ServerRunning>> {
        let store = self.0.store.clone();
        Box::pin(async move { running(&store, &app).await })
    }
}

/// What runs of `app` on the servers of its services, asking them all at once.
async fn running(store: &Store, app: &AppRef) -> Vec<ServerRunning> {
    let Ok(Some(row)) = store.db.app(app) else {
        return Vec::new();
    };
    let services = buildgrid_deploy::app_services(store, row.id).unwrap_or_default();
    let servers = buildgrid_deploy::servers_of(store, &services).unwrap_or_default();
    let Ok(install) = buildgrid_deploy::install(store) else {
        return Vec::new();
    };
    let name = app.to_string();
    let asks = servers.into_iter().map(|server| {
        let name = name.clone();
        let install = install.clone();
        async move {
            let host = buildgrid_deploy::server_host(&server.docker_url);
            let containers = match buildgrid_deploy::engine(store, &server).await {
                Ok(docker) => buildgrid_deploy::labelled_containers(&docker, &install, Some(&name))
                    .await
                    .map_err(|e| e.to_string())
                    .map(|list| {
                        list.into_iter()
                            .map(|c| Running {
                                addresses: c.ports.iter().map(|p| format!("{host}:{p}")).collect(),
                                service: c.service,
                                name: c.name,
                                image: c.image,
                                state: c.state,
                                deploy: c.deploy,
                            })
                            .collect()
                    }),
                Err(error) => Err(error.to_string()),
            };
            ServerRunning {
                server: server.name,
                containers,
            }
        }
    });
    futures_util::future::join_all(asks).await
}
