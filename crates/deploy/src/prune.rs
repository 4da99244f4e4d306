//! After a deploy succeeds on a server: the images this install pulled there that nothing
//! needs any more are removed from its engine.
//!
//! The install's names of an image are those in its registry (`host/…`, as `Install::owns`
//! tells containers apart); only those names are removed, never with force, so an image another
//! install or anyone else pulled or tagged keeps its other names and stays. An image stays when
//! a container on the engine uses it (running or stopped), or when a service on the server may
//! need it: what the service runs, what deploys newer than that left running, the images of its
//! last `keep-deployed` deploys before (its rollback targets, as the store's collection counts
//! them), and what a deploy in flight is pulling. A removal that fails is logged and never fails
//! the deploy.

use std::collections::{HashMap, HashSet};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use buildgrid_store::{Deploy, Server, Store, StoreError};

use crate::part::engine_message;
use crate::run::Log;

/// One deploy of a service, as its history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ran {
    pub deploy_id: i64,
    pub build_id: i64,
    /// `succeeded`, or the deploy that runs now and has succeeded on this server.
    pub succeeded: bool,
    /// Still running: it may be pulling its image now.
    pub running: bool,
    pub image_ref: String,
    pub digest: String,
}

/// What of a service's history (newest first) its server keeps: every deploy up to the newest
/// that succeeded (it runs; newer ones may have left containers), deploys in flight, and the
/// images of `keep_deployed` distinct earlier builds that succeeded (its rollback targets).
pub(crate) fn kept_deploys(history: &[Ran], keep_deployed: u32) -> Vec<&Ran> {
    let current = history
        .iter()
        .position(|r| r.succeeded)
        .unwrap_or(history.len().saturating_sub(1));
    let mut kept: Vec<&Ran> = history.iter().take(current + 1).collect();
    let running = history.get(current).map(|r| r.build_id);
    let mut before: Vec<i64> = Vec::new();
    for ran in history.iter().skip(current + 1) {
        if ran.running {
            kept.push(ran);
        }
        if !ran.succeeded || Some(ran.build_id) == running || before.contains(&ran.build_id) {
            continue;
        }
        if before.len() < keep_deployed as usize {
            before.push(ran.build_id);
            kept.push(ran);
        }
    }
    kept
}

/// The references (without the registry host) and digests the services on `server` keep,
/// with `current` counted as succeeded.
fn kept_images(
    store: &Store,
    server: &str,
    current: &Deploy,
) -> Result<(HashSet<String>, HashSet<String>), StoreError> {
    let mut services: HashMap<i64, Vec<String>> = HashMap::new();
    for (app_id, service, servers) in store.db.service_servers()? {
        if servers.iter().any(|s| s == server) {
            services.entry(app_id).or_default().push(service);
        }
    }
    let (mut refs, mut digests) = (HashSet::new(), HashSet::new());
    for (app_id, names) in services {
        let keep_deployed = match store.db.app_by_id(app_id)? {
            Some(app) => {
                store
                    .db
                    .effective_retention(app.app.namespace(), Some(app.app.app()))?
                    .keep_deployed
            }
            None => continue,
        };
        let deploys = store.db.deploys_of_app(app_id, 1000)?;
        let states: HashMap<i64, &Deploy> = deploys.iter().map(|d| (d.id, d)).collect();
        let ids: Vec<i64> = deploys.iter().map(|d| d.id).collect();
        let images = store.db.deploy_images(&ids)?;
        for name in names {
            let mut history: Vec<Ran> = images
                .iter()
                .filter(|i| i.service == name)
                .filter_map(|i| {
                    let deploy = states.get(&i.deploy_id)?;
                    Some(Ran {
                        deploy_id: i.deploy_id,
                        build_id: i.build_id,
                        succeeded: deploy.state == "succeeded" || deploy.id == current.id,
                        running: deploy.state == "running" && deploy.id != current.id,
                        image_ref: i.image_ref.clone(),
                        digest: i.digest.clone(),
                    })
                })
                .collect();
            history.sort_by_key(|r| std::cmp::Reverse(r.deploy_id));
            for ran in kept_deploys(&history, keep_deployed) {
                refs.insert(without_host(&ran.image_ref).to_owned());
                if !ran.digest.is_empty() {
                    digests.insert(ran.digest.clone());
                }
            }
        }
    }
    Ok((refs, digests))
}

/// `host/path:tag` without its registry host.
fn without_host(reference: &str) -> &str {
    reference
        .split_once('/')
        .map_or(reference, |(_, rest)| rest)
}

/// Whether an image name (`host/path:tag` or `host/path@digest`) is in one of `hosts`.
pub(crate) fn in_registry(name: &str, hosts: &[String]) -> bool {
    hosts.iter().any(|host| {
        name.strip_prefix(host.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Removes from `server`'s engine the install's images (named after one of `hosts`) that no
/// container uses and no service on the server keeps; one log line per image removed or left.
pub(crate) async fn prune(log: &Log<'_>, server: &Server, current: &Deploy, hosts: &[String]) {
    let line = |text: &str| log.line(Some(&server.name), None, None, "deploy", text);
    let (refs, digests) = match kept_images(log.store, &server.name, current) {
        Ok(kept) => kept,
        Err(error) => {
            line(&format!("old images are left on the server: {error}"));
            return;
        }
    };
    let docker = match crate::engine(log.store, server).await {
        Ok(docker) => docker,
        Err(error) => {
            line(&format!("old images are left on the server: {error}"));
            return;
        }
    };
    let unused = match unused_images(&docker).await {
        Ok(images) => images,
        Err(error) => {
            let reason = engine_message(&error);
            line(&format!("old images are left on the server: {reason}"));
            return;
        }
    };
    for image in unused {
        let ours: Vec<&str> = image
            .repo_tags
            .iter()
            .chain(&image.repo_digests)
            .map(String::as_str)
            .filter(|name| in_registry(name, hosts))
            .collect();
        let Some(shown) = ours.first().copied() else {
            continue;
        };
        let kept = ours.iter().any(|name| match name.rsplit_once('@') {
            Some((_, digest)) => digests.contains(digest),
            None => refs.contains(without_host(name)),
        });
        if kept {
            continue;
        }
        // Only the install's names go (tags, then digests), never with force: an image that
        // has other names (someone tagged or pulled it as well) keeps them and stays; the last
        // name removes the image.
        let mut targets: Vec<&str> = ours.iter().copied().filter(|n| !n.contains('@')).collect();
        targets.extend(ours.iter().copied().filter(|n| n.contains('@')));
        let (mut deleted, mut failed) = (false, None);
        for target in targets {
            if deleted {
                break;
            }
            let options = RemoveImageOptionsBuilder::new().build();
            match docker.remove_image(target, Some(options), None).await {
                Ok(items) => deleted = items.iter().any(|item| item.deleted.is_some()),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(error) => failed = Some(engine_message(&error)),
            }
        }
        line(&match (failed, deleted) {
            (Some(reason), _) => format!(
                "image {shown} could not be removed ({reason}); the next deploy to this server tries again"
            ),
            (None, true) => {
                format!("removed image {shown}: no container uses it and it is no rollback target")
            }
            (None, false) => format!(
                "removed the name {shown}: no container uses it and it is no rollback target; \
                 the image stays under its other names"
            ),
        });
    }
}

/// The images on the engine that no container (running or stopped) was created from.
async fn unused_images(
    docker: &Docker,
) -> Result<Vec<bollard::models::ImageSummary>, bollard::errors::Error> {
    let containers = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
        .await?;
    let used: HashSet<String> = containers
        .into_iter()
        .flat_map(|c| [c.image_id, c.image])
        .flatten()
        .collect();
    let images = docker
        .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
        .await?;
    Ok(images
        .into_iter()
        .filter(|i| !used.contains(&i.id) && !i.repo_tags.iter().any(|t| used.contains(t)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{Ran, in_registry, kept_deploys};

    fn ran(deploy_id: i64, build_id: i64, state: &str) -> Ran {
        Ran {
            deploy_id,
            build_id,
            succeeded: state == "succeeded",
            running: state == "running",
            image_ref: format!("127.0.0.1:5000/acme/shop.x:{build_id}"),
            digest: format!("sha256:{build_id}"),
        }
    }

    #[track_caller]
    fn check(history: &[Ran], keep_deployed: u32, expected: &[i64]) {
        let kept: Vec<i64> = kept_deploys(history, keep_deployed)
            .iter()
            .map(|r| r.deploy_id)
            .collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn keeps_what_runs_and_the_last_distinct_rollback_targets() {
        let history: Vec<Ran> = (1..=5).rev().map(|i| ran(i, i, "succeeded")).collect();
        check(&history, 2, &[5, 4, 3]);
        check(&history, 0, &[5]);
        check(&history, 9, &[5, 4, 3, 2, 1]);
        // A failed deploy newer than what runs may have left containers; it is no target.
        let history = [
            ran(6, 6, "failed"),
            ran(5, 5, "succeeded"),
            ran(4, 4, "failed"),
            ran(3, 5, "succeeded"),
            ran(2, 2, "succeeded"),
            ran(1, 1, "succeeded"),
        ];
        check(&history, 1, &[6, 5, 2]);
        // A deploy in flight keeps what it pulls.
        let history = [
            ran(3, 3, "succeeded"),
            ran(2, 2, "running"),
            ran(1, 1, "succeeded"),
        ];
        check(&history, 0, &[3, 2]);
        check(&[], 3, &[]);
    }

    #[test]
    fn a_name_is_the_installs_when_it_is_in_its_registry() {
        let hosts = vec!["127.0.0.1:5000".to_owned()];
        assert!(in_registry("127.0.0.1:5000/acme/shop.x:1", &hosts));
        assert!(in_registry("127.0.0.1:5000/acme/shop.x@sha256:ab", &hosts));
        assert!(!in_registry("127.0.0.1:50001/acme/shop.x:1", &hosts));
        assert!(!in_registry("127.0.0.1:5000x/acme/shop.x:1", &hosts));
        assert!(!in_registry("busybox:latest", &hosts));
        assert!(!in_registry("mine/127.0.0.1:5000/x:1", &hosts));
    }
}
