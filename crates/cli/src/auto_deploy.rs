//! Deploys after builds: a successful build of an app's branch is deployed when the app has
//! services and automatic deploys are not turned off (`buildgrid app auto-deploy <app> off`).
//! Deploys of one app run one at a time; a newer build waiting for its turn replaces an older
//! one that waits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use buildgrid_store::{BuildState, Store};

/// The settings key that turns automatic deploys of an app off.
pub fn setting_key(app: &str) -> String {
    format!("auto_deploy:{app}")
}

#[derive(Default)]
struct Queue {
    /// The build waiting to be deployed, per app.
    pending: HashMap<i64, i64>,
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
        let wanted = build.state == BuildState::Succeeded
            && build.git_ref == app.branch
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
        if !wanted {
            return;
        }
        {
            let mut queue = self.queue.lock().unwrap();
            queue.pending.insert(app.id, build.id);
            if !queue.running.insert(app.id) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move { this.run(app.id).await });
    }

    async fn run(self: Arc<Self>, app_id: i64) {
        loop {
            let next = {
                let mut queue = self.queue.lock().unwrap();
                match queue.pending.remove(&app_id) {
                    Some(build) => build,
                    None => {
                        queue.running.remove(&app_id);
                        return;
                    }
                }
            };
            let Ok(Some(app)) = self.store.db.app_by_id(app_id) else {
                continue;
            };
            let trigger = format!("build {next}");
            let print = |line: &buildgrid_store::DeployLine| {
                tracing::debug!(line = %line.line, "deploy");
            };
            match buildgrid_deploy::deploy(
                &self.store,
                &app,
                Some(next),
                &self.registry_host,
                &trigger,
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
