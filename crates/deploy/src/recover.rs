//! What deploys that did not end well leave on the servers, and what becomes of it.
//!
//! A deploy that failed on a server, or whose process stopped, may leave containers there: its
//! own new replicas beside the older ones still serving (when the engine could not be told to
//! remove them, or nobody was left to tell it). Such a deploy's containers are removed when
//! older containers of the same service still run there, and adopted as the serving ones when
//! they are the only ones (the deploy had already stopped the old ones).

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use buildgrid_store::{Deploy, Store, StoreError};

use crate::Labelled;
use crate::part::{removal, remove};
use crate::run::Log;

/// The containers of `service` on an engine that stay: it removes the leftovers of failed and
/// interrupted deploys that sit beside older containers, and tells `note` what it removed or
/// adopted (container, text).
pub(crate) async fn settle(
    store: &Store,
    docker: &Docker,
    install: &crate::Install,
    app: &str,
    service: &str,
    note: &(dyn Fn(&str, &str) + Sync),
) -> Result<Vec<Labelled>, String> {
    let mine: Vec<Labelled> = crate::labelled_containers(docker, install, Some(app))
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?
        .into_iter()
        .filter(|c| c.service == service)
        .collect();
    let mut by_deploy: BTreeMap<i64, Vec<Labelled>> = BTreeMap::new();
    for container in mine {
        by_deploy
            .entry(container.deploy.parse().unwrap_or(0))
            .or_default()
            .push(container);
    }
    let oldest = by_deploy.keys().next().copied();
    let mut states = HashMap::new();
    for id in by_deploy.keys() {
        let state = store
            .db
            .deploy(*id)
            .map_err(|e| e.to_string())?
            .map(|d| d.state);
        states.insert(*id, state);
    }
    let mut kept = Vec::new();
    for (id, containers) in by_deploy {
        let unfinished = matches!(
            states.get(&id).and_then(Option::as_deref),
            Some("failed" | "interrupted")
        );
        if unfinished && Some(id) != oldest {
            for container in containers {
                let outcome = remove(docker, &container.name, 0).await;
                let done = format!(
                    "removed: left by deploy {id}, which did not finish, beside older containers"
                );
                note(&container.name, &removal(outcome, &done));
            }
        } else {
            if states.get(&id).and_then(Option::as_deref) == Some("interrupted") {
                for container in &containers {
                    note(
                        &container.name,
                        &format!(
                            "adopted: deploy {id} did not finish, but its containers are the only ones of the service"
                        ),
                    );
                    // Replicas get their restart policy once healthy: its deploy may have stopped first.
                    if let Err(reason) = crate::part::keep_restarting(docker, &container.name).await
                    {
                        note(&container.name, &reason);
                    }
                }
            }
            kept.extend(containers);
        }
    }
    Ok(kept)
}

/// Marks the running deploys whose lease lapsed (the process running them stopped, whatever
/// its process id now names) interrupted, and settles what they left on their servers, noting
/// it in their logs. Returns the interrupted deploys. `serve` runs it every
/// [`buildgrid_store::LEASE_REAP_EVERY`].
pub async fn recover(store: &Store) -> Result<Vec<Deploy>, StoreError> {
    let interrupted = store.db.interrupt_lapsed_deploys()?;
    let servers = store.db.servers()?;
    let install = crate::install(store)?;
    for deploy in &interrupted {
        let print = |_: &buildgrid_store::DeployLine| {};
        let log = Log {
            store,
            deploy: deploy.id,
            print: &print,
        };
        log.line(
            None,
            None,
            None,
            "deploy",
            "interrupted: the process running it stopped; settling what it left",
        );
        let Some(app) = store.db.app_by_id(deploy.app_id)? else {
            continue;
        };
        let app_name = app.app.to_string();
        for service in store.db.services(app.id)? {
            let Ok(spec) = serde_json::from_str::<crate::spec::ServiceSpec>(&service.spec) else {
                continue;
            };
            for server in servers.iter().filter(|s| spec.servers.contains(&s.name)) {
                let note = |container: &str, text: &str| {
                    log.line(
                        Some(&server.name),
                        Some(&service.name),
                        Some(container),
                        "deploy",
                        text,
                    )
                };
                let settled = match crate::engine(store, server).await {
                    Ok(docker) => {
                        settle(store, &docker, &install, &app_name, &service.name, &note).await
                    }
                    Err(error) => Err(error.to_string()),
                };
                if let Err(reason) = settled {
                    log.line(
                        Some(&server.name),
                        Some(&service.name),
                        None,
                        "deploy",
                        &format!("not settled ({reason}); the next deploy to this server will"),
                    );
                }
            }
        }
    }
    Ok(interrupted)
}
