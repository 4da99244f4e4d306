//! One deploy: per service and server, pull, start new replicas one at a time until each is
//! healthy, then stop the old ones. Every step goes to the deploy log as it happens.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use buildgrid_core::AppRef;
use buildgrid_store::{
    App, Build, BuildState, Deploy, DeployImage, DeployLine, Server, Store, StoreError,
};
use futures_util::StreamExt;

use crate::spec::{Health, ServiceSpec, host_port};
use crate::{LABEL_APP, LABEL_BUILD, LABEL_DEPLOY, LABEL_SERVICE, engine, server_host};

/// The user whose short-lived tokens engines pull with.
const DEPLOY_USER: &str = "buildgrid-deployer";

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
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
        let mut line = DeployLine {
            seq: 0,
            at_ms: now_ms(),
            server: server.map(str::to_owned),
            service: service.map(str::to_owned),
            container: container.map(str::to_owned),
            stream: stream.to_owned(),
            line: text.to_owned(),
        };
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
    print: &(dyn Fn(&DeployLine) + Sync),
) -> Result<Deploy, DeployError> {
    let build = pick_build(store, app, build)?;
    let view = source_view(store, app, &build)?;
    let (image_ref, digest) = stored_image(store, &view, &build, registry_host)?;
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
    let deploy = store
        .db
        .start_deploy(app.id, build.id, trigger, std::process::id(), process_alive)
        .map_err(|e| match e {
            StoreError::Conflict(message) => DeployError::Refused(message),
            other => other.into(),
        })?;
    let log = Log {
        store,
        deploy: deploy.id,
        print,
    };
    log.line(
        None,
        None,
        None,
        "deploy",
        &format!(
            "deploy {} of build {} ({image_ref}, {digest}) to {} services",
            deploy.id,
            build.id,
            services.len()
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
                credentials: &credentials,
                log: &log,
            });
        }
    }
    // Every service on every server at once: first the new replicas, until all are healthy;
    // then the old ones stop, where the new ones are up.
    let started = futures_util::future::join_all(parts.iter().map(Part::start)).await;
    let mut up = Vec::new();
    for (part, outcome) in parts.iter().zip(started) {
        match outcome {
            Ok(started) => up.push((part, started)),
            Err(reason) => {
                part.line(None, "deploy", &format!("failed: {reason}"));
                failures.push(format!("{}/{}: {reason}", part.server.name, part.service));
            }
        }
    }
    futures_util::future::join_all(up.into_iter().map(|(part, started)| part.finish(started)))
        .await;
    if let Err(error) = store.db.revoke_token(token_id, None) {
        tracing::warn!(%error, "cannot revoke a deploy's pull token");
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
    Ok(store
        .db
        .deploy(deploy.id)?
        .expect("the deploy was just recorded"))
}

/// Whether process `pid` of this machine still runs (deploys record the process running them).
pub(crate) fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn pick_build(store: &Store, app: &App, build: Option<i64>) -> Result<Build, DeployError> {
    match build {
        Some(id) => {
            let build = store
                .db
                .build(id)?
                .filter(|b| b.app_id == app.id)
                .ok_or_else(|| {
                    DeployError::Refused(format!("app {} has no build {id}", app.app))
                })?;
            if build.state != BuildState::Succeeded {
                return Err(DeployError::Refused(format!(
                    "build {id} {}: only a successful build can be deployed",
                    build.state
                )));
            }
            Ok(build)
        }
        None => store
            .db
            .builds_of_app(app.id, 200)?
            .into_iter()
            .find(|b| b.state == BuildState::Succeeded && b.source_id.is_none())
            .ok_or_else(|| {
                DeployError::Refused(format!("app {} has no successful build to deploy", app.app))
            }),
    }
}

/// `app` as builds of `build`'s source see it (its repository and image).
fn source_view(store: &Store, app: &App, build: &Build) -> Result<App, DeployError> {
    match build.source_id {
        None => Ok(app.clone()),
        Some(id) => Ok(store
            .db
            .source(id)?
            .ok_or_else(|| {
                DeployError::Refused(format!("the source of build {} is not stored", build.id))
            })?
            .app_view(app)),
    }
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
    let source = match &spec.source {
        None => None,
        Some(repo) => Some(store.db.source_by_repo(app.id, repo)?.ok_or_else(|| {
            DeployError::Refused(format!(
                "the repository {repo} of service {name} is not stored"
            ))
        })?),
    };
    let source_id = source.as_ref().map(|s| s.id);
    let view = source
        .as_ref()
        .map_or_else(|| app.clone(), |s| s.app_view(app));
    let build = if chosen.source_id == source_id {
        chosen.clone()
    } else {
        store
            .db
            .builds_of_app(app.id, 500)?
            .into_iter()
            .find(|b| b.source_id == source_id && b.state == BuildState::Succeeded)
            .ok_or_else(|| {
                DeployError::Refused(format!(
                    "service {name} runs {}, which has no successful build: run `buildgrid build {} --service {name}`",
                    view.image_repo, app.app
                ))
            })?
    };
    let (image, digest) = stored_image(store, &view, &build, registry_host)?;
    Ok((build, image, digest))
}

/// The reference engines pull the build's image by, at the registry's current address (the
/// build may have been made while buildgrid answered at another one), and its digest.
fn stored_image(
    store: &Store,
    app: &App,
    build: &Build,
    registry_host: &str,
) -> Result<(String, String), DeployError> {
    let (Some(image_ref), Some(digest)) = (&build.image_ref, &build.image_digest) else {
        return Err(DeployError::Refused(format!(
            "build {} made no image",
            build.id
        )));
    };
    let parsed = buildgrid_core::Digest::parse(digest).map_err(|_| {
        DeployError::Refused(format!("build {} has no valid image digest", build.id))
    })?;
    if store
        .db
        .manifest_by_digest(&app.image_repo, &parsed)?
        .is_none()
    {
        return Err(DeployError::Refused(format!(
            "the image of build {} ({image_ref}) is no longer stored",
            build.id
        )));
    }
    let tag = image_ref.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    Ok((
        format!("{registry_host}/{}:{tag}", app.image_repo),
        digest.clone(),
    ))
}

/// A pull-only token for this deploy, of a non-admin user that is a member of the app's
/// namespace, valid for 15 minutes and revoked when the deploy ends.
fn pull_token(store: &Store, app: &AppRef, deploy: i64) -> Result<(i64, String), DeployError> {
    let user = match store.db.user_by_name(DEPLOY_USER)? {
        Some(user) => user,
        None => {
            buildgrid_access::create_user(store, DEPLOY_USER, false)
                .map_err(|e| DeployError::Refused(e.to_string()))?
                .0
        }
    };
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

/// What a part started: its engine, the containers it replaces and its new ones.
struct Started {
    docker: Docker,
    old: Vec<crate::Labelled>,
    new: Vec<String>,
}

/// One service on one server.
struct Part<'a> {
    app: &'a App,
    build: &'a Build,
    deploy: &'a Deploy,
    service: &'a str,
    spec: &'a ServiceSpec,
    server: &'a Server,
    image_ref: &'a str,
    credentials: &'a DockerCredentials,
    log: &'a Log<'a>,
}

impl Part<'_> {
    fn line(&self, container: Option<&str>, stream: &str, text: &str) {
        self.log.line(
            Some(&self.server.name),
            Some(self.service),
            container,
            stream,
            text,
        );
    }

    /// Pulls the image and starts the new replicas until each is healthy; on failure removes
    /// what it started and says why.
    async fn start(&self) -> Result<Started, String> {
        let docker = engine(self.log.store, self.server)
            .await
            .map_err(|e| e.to_string())?;
        self.pull(&docker).await?;
        let app = self.app.app.to_string();
        let note = |container: &str, text: &str| self.line(Some(container), "deploy", text);
        let old =
            crate::recover::settle(self.log.store, &docker, &app, self.service, &note).await?;
        // The new replicas publish on the slot the old ones do not use.
        let slot = match old.first() {
            Some(container) => 1 - container.slot.min(1),
            None => 0,
        };
        let mut new = Vec::new();
        for replica in 0..self.spec.replicas {
            match self.start_replica(&docker, replica, slot).await {
                Ok(name) => new.push(name),
                Err((name, reason)) => {
                    if let Some(name) = name {
                        new.push(name);
                    }
                    for name in &new {
                        let outcome = remove(&docker, name, 0).await;
                        self.line(
                            Some(name),
                            "deploy",
                            &removal(outcome, "removed: this deploy failed"),
                        );
                    }
                    return Err(reason);
                }
            }
        }
        Ok(Started { docker, old, new })
    }

    /// After every part is healthy: what the new replicas printed, then the old ones stopped,
    /// one at a time.
    async fn finish(&self, started: Started) {
        let Started { docker, old, new } = started;
        for name in &new {
            self.first_lines(&docker, name).await;
        }
        for container in old {
            let name = container.name;
            self.line(
                Some(&name),
                "deploy",
                &format!("stopping (grace {} s)", self.spec.stop_grace),
            );
            let outcome = remove(&docker, &name, self.spec.stop_grace).await;
            self.line(
                Some(&name),
                "deploy",
                &removal(outcome, "stopped and removed"),
            );
        }
    }

    async fn pull(&self, docker: &Docker) -> Result<(), String> {
        let (image, tag) = self
            .image_ref
            .rsplit_once(':')
            .unwrap_or((self.image_ref, "latest"));
        self.line(
            None,
            "deploy",
            &format!("pulling {} from buildgrid's registry", self.image_ref),
        );
        let options = CreateImageOptionsBuilder::new()
            .from_image(image)
            .tag(tag)
            .build();
        let mut stream = docker.create_image(Some(options), None, Some(self.credentials.clone()));
        let started = Instant::now();
        while let Some(item) = stream.next().await {
            if let Err(error) = item {
                let reason = format!("pull refused or failed: {}", engine_message(&error));
                self.line(None, "deploy", &reason);
                return Err(reason);
            }
        }
        self.line(
            None,
            "deploy",
            &format!("pulled in {:.2} s", started.elapsed().as_secs_f64()),
        );
        Ok(())
    }

    /// Starts replica `replica` and waits until it is healthy: its name, or the name (when it
    /// was created) and why it failed.
    async fn start_replica(
        &self,
        docker: &Docker,
        replica: u32,
        slot: u32,
    ) -> Result<String, (Option<String>, String)> {
        let name = format!(
            "bg.{}.{}.{}.d{}.r{replica}",
            self.app.app.namespace(),
            self.app.app.app(),
            self.service,
            self.deploy.id
        );
        let labels = HashMap::from([
            (LABEL_APP.to_owned(), self.app.app.to_string()),
            (LABEL_SERVICE.to_owned(), self.service.to_owned()),
            (LABEL_DEPLOY.to_owned(), self.deploy.id.to_string()),
            (LABEL_BUILD.to_owned(), self.build.id.to_string()),
            (crate::LABEL_SLOT.to_owned(), slot.to_string()),
        ]);
        let mut env: Vec<String> = self
            .spec
            .env
            .iter()
            .chain(&self.spec.secret_env)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut bindings = HashMap::new();
        let mut exposed = Vec::new();
        if self.spec.network_host
            && let Some(port) = self.spec.ports.first()
        {
            env.push(format!("PORT={}", host_port(port.host, replica, slot)));
        }
        for port in self.spec.ports.iter().filter(|_| !self.spec.network_host) {
            let key = format!("{}/tcp", port.container);
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some(host_port(port.host, replica, slot).to_string()),
                }]),
            );
        }
        let body = ContainerCreateBody {
            image: Some(self.image_ref.to_owned()),
            cmd: self
                .spec
                .command
                .as_ref()
                .map(|c| vec!["/bin/sh".to_owned(), "-c".to_owned(), c.clone()]),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                network_mode: self.spec.network_host.then(|| "host".to_owned()),
                restart_policy: Some(bollard::models::RestartPolicy {
                    name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| {
                (
                    None,
                    format!("cannot create {name}: {}", engine_message(&e)),
                )
            })?;
        self.line(Some(&name), "deploy", "created");
        docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| {
                (
                    Some(name.clone()),
                    format!("cannot start {name}: {}", engine_message(&e)),
                )
            })?;
        self.line(Some(&name), "deploy", "started");
        self.wait_healthy(docker, &name, replica, slot)
            .await
            .map_err(|reason| (Some(name.clone()), reason))?;
        Ok(name)
    }

    async fn wait_healthy(
        &self,
        docker: &Docker,
        name: &str,
        replica: u32,
        slot: u32,
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(self.spec.health_timeout);
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            // A container that exited (and maybe was restarted by its policy) is not healthy.
            let inspected = docker
                .inspect_container(
                    name,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await;
            let running = match inspected {
                Ok(c) => {
                    c.restart_count.unwrap_or(0) == 0
                        && c.state
                            .as_ref()
                            .is_some_and(|s| s.running == Some(true) && s.restarting != Some(true))
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => false,
                Err(error) => {
                    let reason =
                        format!("the engine stopped answering: {}", engine_message(&error));
                    self.line(Some(name), "health", &reason);
                    return Err(reason);
                }
            };
            if !running {
                let reason = format!("{name} exited before it was healthy");
                self.line(Some(name), "health", &reason);
                self.first_lines(docker, name).await;
                return Err(reason);
            }
            let healthy = match &self.spec.health {
                Health::Running { seconds } => started.elapsed() >= Duration::from_secs(*seconds),
                Health::Command { command } => {
                    let outcome = exec_status(docker, name, command).await;
                    let text = match &outcome {
                        Ok(code) => format!("{command}: exit code {code}"),
                        Err(reason) => format!("{command}: {reason}"),
                    };
                    self.line(Some(name), "health", &text);
                    outcome == Ok(0)
                }
                Health::Http { path } => {
                    let port = host_port(self.spec.ports[0].host, replica, slot);
                    let url = format!(
                        "http://{}:{port}{path}",
                        server_host(&self.server.docker_url)
                    );
                    let answer = client.get(&url).send().await;
                    let text = match &answer {
                        Ok(response) => format!("GET {url}: {}", response.status()),
                        Err(error) => format!("GET {url}: {}", without_url(error)),
                    };
                    self.line(Some(name), "health", &text);
                    answer.is_ok_and(|r| r.status().is_success() || r.status().is_redirection())
                }
            };
            if healthy {
                self.line(Some(name), "health", "healthy");
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reason = format!("{name} was not healthy within {} s", timeout.as_secs());
                self.line(Some(name), "health", &reason);
                return Err(reason);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the container printed first, into the deploy log.
    async fn first_lines(&self, docker: &Docker, name: &str) {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let mut stream = docker.logs(name, Some(options));
        while let Some(Ok(output)) = stream.next().await {
            let (stream_name, bytes) = match output {
                bollard::container::LogOutput::StdErr { message } => ("stderr", message),
                other => ("stdout", other.into_bytes()),
            };
            let secrets: Vec<String> = self
                .spec
                .secret_env
                .iter()
                .map(|(_, v)| v.clone())
                .collect();
            for text in String::from_utf8_lossy(&bytes).lines() {
                self.line(
                    Some(name),
                    stream_name,
                    &crate::output::mask(text, &secrets),
                );
            }
        }
    }
}

/// The exit code of `/bin/sh -c <command>` run in a container (output discarded).
async fn exec_status(docker: &Docker, container: &str, command: &str) -> Result<i64, String> {
    let options = bollard::exec::CreateExecOptions {
        cmd: Some(vec!["/bin/sh", "-c", command]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, options)
        .await
        .map_err(|e| engine_message(&e))?;
    match docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| engine_message(&e))?
    {
        bollard::exec::StartExecResults::Attached { mut output, .. } => {
            while output.next().await.is_some() {}
        }
        bollard::exec::StartExecResults::Detached => {}
    }
    let inspected = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| engine_message(&e))?;
    inspected.exit_code.ok_or_else(|| "no exit code".to_owned())
}

/// Stops a container within `grace` seconds and removes it; why not, when the engine refused.
pub(crate) async fn remove(docker: &Docker, name: &str, grace: u64) -> Result<(), String> {
    let stop = StopContainerOptionsBuilder::new().t(grace as i32).build();
    let _ = docker.stop_container(name, Some(stop)).await;
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(error) => Err(engine_message(&error)),
    }
}

/// The log line after removing a container: what happened, or why it stays for later.
pub(crate) fn removal(outcome: Result<(), String>, done: &str) -> String {
    match outcome {
        Ok(()) => done.to_owned(),
        Err(reason) => {
            format!("could not be removed ({reason}); the next deploy to this server removes it")
        }
    }
}

fn engine_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn without_url(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connection refused".into()
    } else if error.is_timeout() {
        "timed out".into()
    } else {
        "no answer".into()
    }
}
