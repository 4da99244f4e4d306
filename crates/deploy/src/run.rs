//! One deploy: which build and image each service runs, the pull credential, and every service
//! on every server at once (`part.rs`), new replicas first and the old ones stopped when all
//! are up. Every step goes to the deploy log as it happens.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::auth::DockerCredentials;
use buildgrid_core::{AppRef, RequestId};
use buildgrid_store::{
    App, Build, BuildState, Deploy, DeployImage, DeployLine, LEASE_RENEW_EVERY, Lease, Server,
    Store, StoreError, Undeployable,
};

use crate::part::Part;
use crate::spec::ServiceSpec;

/// The user whose short-lived tokens engines pull with.
const DEPLOY_USER: &str = "buildgrid-deployer";

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Undeployable> for DeployError {
    fn from(error: Undeployable) -> Self {
        match error {
            Undeployable::Store(error) => DeployError::Store(error),
            refused => DeployError::Refused(refused.to_string()),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) struct Log<'a> {
    pub store: &'a Store,
    pub deploy: i64,
    pub print: &'a (dyn Fn(&DeployLine) + Sync),
}

impl Log<'_> {
    pub fn line(
        &self,
        server: Option<&str>,
        service: Option<&str>,
        container: Option<&str>,
        stream: &str,
        text: &str,
    ) {
        self.write(DeployLine {
            seq: 0,
            at_ms: now_ms(),
            server: server.map(str::to_owned),
            service: service.map(str::to_owned),
            container: container.map(str::to_owned),
            stream: stream.to_owned(),
            line: text.to_owned(),
        });
    }

    /// Stores `line` (its time as given: a container's lines keep the time it printed them)
    /// and prints it.
    pub fn write(&self, mut line: DeployLine) {
        match self.store.db.append_deploy_line(self.deploy, &line) {
            Ok(seq) => line.seq = seq,
            Err(error) => tracing::error!(%error, "cannot store a deploy log line"),
        }
        (self.print)(&line);
    }
}

/// Deploys `build` of `app` (the newest successful build when `None`); returns the deploy as it
/// ended. Refuses failed builds, images no longer stored, and apps without services.
pub async fn deploy(
    store: &Store,
    app: &App,
    build: Option<i64>,
    registry_host: &str,
    trigger: &str,
    request: Option<&RequestId>,
    print: &(dyn Fn(&DeployLine) + Sync),
) -> Result<Deploy, DeployError> {
    let build = pick_build(store, app, build)?;
    let view = store.db.build_app_view(app, &build)?;
    let (image_ref, digest) = pull_reference(&view, &build, registry_host);
    let rows = store.db.services(app.id)?;
    if rows.is_empty() {
        return Err(DeployError::Refused(format!(
            "app {} has no services: add one with `buildgrid service add {} <name> --server <server>`",
            app.app, app.app
        )));
    }
    // Each service runs its source's build: the chosen one, or its source's newest good one.
    let mut services = Vec::new();
    for row in rows {
        let spec: ServiceSpec = serde_json::from_str(&row.spec).map_err(|e| {
            DeployError::Refused(format!("service {} is unreadable: {e}", row.name))
        })?;
        let (build, image, digest) =
            service_build(store, app, &build, &row.name, &spec, registry_host)?;
        services.push((row.name, spec, build, image, digest));
    }
    let servers: HashMap<String, Server> = store
        .db
        .servers()?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let deploy_started = std::time::Instant::now();
    let lease = Lease::this_process();
    let deploy = store
        .db
        .start_deploy(app.id, build.id, trigger, &lease)
        .map_err(|e| match e {
            StoreError::Conflict(message) => DeployError::Refused(message),
            other => other.into(),
        })?;
    // The deploy's lease is renewed while it runs; this process stopping lets it lapse.
    let work = async {
        let log = Log {
            store,
            deploy: deploy.id,
            print,
        };
        if let Some(request) = request {
            log.line(
                None,
                None,
                None,
                "deploy",
                &format!("requested by request {request}"),
            );
        }
        log.line(
            None,
            None,
            None,
            "deploy",
            &format!(
                "deploy {} of build {} ({image_ref}, {digest}) to {} service{}",
                deploy.id,
                build.id,
                services.len(),
                if services.len() == 1 { "" } else { "s" }
            ),
        );
        let (token_id, token) = pull_token(store, &app.app, deploy.id)?;
        let credentials = DockerCredentials {
            username: Some(DEPLOY_USER.to_owned()),
            password: Some(token),
            serveraddress: Some(registry_host.to_owned()),
            ..Default::default()
        };
        let images: Vec<DeployImage> = services
            .iter()
            .map(|(name, _, build, image, digest)| DeployImage {
                deploy_id: deploy.id,
                service: name.clone(),
                build_id: build.id,
                image_ref: image.clone(),
                digest: digest.clone(),
            })
            .collect();
        store.db.record_deploy_images(&images)?;
        let install = crate::install(store)?;
        let mut failures = Vec::new();
        let mut parts = Vec::new();
        for (name, spec, service_build, service_image, _) in &services {
            if service_build.id != build.id {
                log.line(
                    None,
                    Some(name),
                    None,
                    "deploy",
                    &format!(
                        "service {name} runs build {} ({service_image}) of its own repository",
                        service_build.id
                    ),
                );
            }
            for server_name in &spec.servers {
                let Some(server) = servers.get(server_name) else {
                    let reason = format!("server {server_name} is not registered");
                    log.line(Some(server_name), Some(name), None, "deploy", &reason);
                    failures.push(reason);
                    continue;
                };
                parts.push(Part {
                    app,
                    build: service_build,
                    deploy: &deploy,
                    service: name,
                    spec,
                    server,
                    image_ref: service_image,
                    install: &install,
                    credentials: &credentials,
                    log: &log,
                });
            }
        }
        // Every service on every server at once: first the new replicas, until all are healthy;
        // then the old ones stop, where the new ones are up.
        let started = futures_util::future::join_all(parts.iter().map(Part::start)).await;
        let mut up = Vec::new();
        let mut failed_servers = Vec::new();
        for (part, outcome) in parts.iter().zip(started) {
            match outcome {
                Ok(started) => up.push((part, started)),
                Err(reason) => {
                    part.line(None, "deploy", &format!("failed: {reason}"));
                    failed_servers.push(&part.server.name);
                    failures.push(format!("{}/{}: {reason}", part.server.name, part.service));
                }
            }
        }
        let finished = futures_util::future::join_all(
            up.into_iter()
                .map(|(part, started)| async move { (part, part.finish(started).await) }),
        )
        .await;
        for (part, outcome) in finished {
            if let Err(reason) = outcome {
                part.line(None, "deploy", &format!("failed: {reason}"));
                failed_servers.push(&part.server.name);
                failures.push(format!("{}/{}: {reason}", part.server.name, part.service));
            }
        }
        // Where every part is up: the install's images nothing there needs any more go.
        let hosts: Vec<String> = std::iter::once(registry_host.to_owned())
            .chain(install.registry_host.clone())
            .collect();
        let mut done: Vec<&Server> = parts
            .iter()
            .map(|p| p.server)
            .filter(|s| !failed_servers.contains(&&s.name))
            .collect();
        done.sort_by_key(|s| &s.name);
        done.dedup_by_key(|s| &s.name);
        futures_util::future::join_all(
            done.into_iter()
                .map(|server| crate::prune::prune(&log, server, &deploy, &hosts)),
        )
        .await;
        if let Err(error) = store.db.delete_token(token_id) {
            tracing::warn!(%error, "cannot delete a deploy's pull token");
        }
        let (state, reason) = if failures.is_empty() {
            ("succeeded", None)
        } else {
            ("failed", Some(failures.join("; ")))
        };
        log.line(
            None,
            None,
            None,
            "deploy",
            &match &reason {
                None => format!("deploy {} succeeded", deploy.id),
                Some(reason) => format!("deploy {} failed: {reason}", deploy.id),
            },
        );
        store
            .db
            .finish_deploy(deploy.id, state, reason.as_deref())?;
        metrics::counter!("buildgrid_deploys_total", "outcome" => state).increment(1);
        metrics::histogram!("buildgrid_deploy_duration_seconds", "outcome" => state)
            .record(deploy_started.elapsed().as_secs_f64());
        Ok::<_, DeployError>(
            store
                .db
                .deploy(deploy.id)?
                .expect("the deploy was just recorded"),
        )
    };
    holding_lease(store, deploy.id, &lease, work).await
}

/// Runs `work`, renewing deploy `id`'s lease every [`LEASE_RENEW_EVERY`] until it ends.
async fn holding_lease<T>(
    store: &Store,
    id: i64,
    lease: &Lease,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut ticks = tokio::time::interval(LEASE_RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => match store.db.renew_deploy_lease(id, lease) {
                Ok(true) => {}
                Ok(false) => tracing::warn!(deploy = id, "the deploy's lease was lost"),
                Err(error) => tracing::error!(%error, deploy = id, "cannot renew the deploy's lease"),
            },
        }
    }
}

/// The build to deploy: `build`, or the newest successful build of the app's own repository;
/// refused unless it succeeded and its image is still stored.
fn pick_build(store: &Store, app: &App, build: Option<i64>) -> Result<Build, DeployError> {
    let id = match build {
        Some(id) => id,
        None => {
            store
                .db
                .builds_of_app(app.id, 200)?
                .into_iter()
                .find(|b| b.state == BuildState::Succeeded && b.source_id.is_none())
                .ok_or_else(|| {
                    DeployError::Refused(format!(
                        "app {} has no successful build to deploy",
                        app.app
                    ))
                })?
                .id
        }
    };
    Ok(store.db.deployable_build(app, id)?)
}

/// The build service `name` runs, its image reference and digest: `chosen` when it builds the
/// same repository, else the newest successful build of the service's repository.
fn service_build(
    store: &Store,
    app: &App,
    chosen: &Build,
    name: &str,
    spec: &ServiceSpec,
    registry_host: &str,
) -> Result<(Build, String, String), DeployError> {
    let source = crate::service_source(store, app, name, spec)?;
    let source_id = source.as_ref().map(|s| s.id);
    let view = source
        .as_ref()
        .map_or_else(|| app.clone(), |s| s.app_view(app));
    let build = if chosen.source_id == source_id {
        chosen.clone()
    } else {
        let newest = store
            .db
            .builds_of_app(app.id, 500)?
            .into_iter()
            .find(|b| b.source_id == source_id && b.state == BuildState::Succeeded)
            .ok_or_else(|| {
                DeployError::Refused(format!(
                    "service {name} runs {}, which has no successful build: run `buildgrid build {} --service {name}`",
                    view.image_repo, app.app
                ))
            })?;
        store.db.deployable_build(app, newest.id)?
    };
    let (image, digest) = pull_reference(&view, &build, registry_host);
    Ok((build, image, digest))
}

/// The reference engines pull a deployable build's image by, at the registry's current address
/// (the build may have been made while buildgrid answered at another one), and its digest.
/// `view` is the app as the build's source sees it.
fn pull_reference(view: &App, build: &Build, registry_host: &str) -> (String, String) {
    let tag = build
        .image_ref
        .as_deref()
        .and_then(|r| r.rsplit_once(':'))
        .map_or("latest", |(_, tag)| tag);
    (
        format!("{registry_host}/{}:{tag}", view.image_repo),
        build.image_digest.clone().unwrap_or_default(),
    )
}

/// A pull-only token for this deploy, of a non-admin user that is a member of the app's
/// namespace, valid for 15 minutes and deleted when the deploy ends.
fn pull_token(store: &Store, app: &AppRef, deploy: i64) -> Result<(i64, String), DeployError> {
    let user = buildgrid_access::system_user(store, DEPLOY_USER)
        .map_err(|e| DeployError::Refused(e.to_string()))?;
    store.db.add_member(app.namespace(), user.id)?;
    let scope = buildgrid_access::Scope::parse(&format!("pull:{}", app.namespace()))
        .map_err(|e| DeployError::Refused(e.to_string()))?;
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
        + 900;
    buildgrid_access::create_token(
        store,
        &user,
        &format!("deploy {deploy}"),
        &[scope],
        Some(expires),
    )
    .map_err(|e| DeployError::Refused(e.to_string()))
}
