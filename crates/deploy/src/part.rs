//! One service on one server: pull, start the new replicas one at a time until each is healthy,
//! and, once every part of the deploy is up, stop the old ones. Also the container operations
//! the deploy and its recovery share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use buildgrid_store::{App, Build, Deploy, DeployLine, Server};
use futures_util::StreamExt;

use crate::run::Log;
use crate::spec::{Health, ServiceSpec, host_port};
use crate::{LABEL_APP, LABEL_BUILD, LABEL_DEPLOY, LABEL_SERVICE, engine, server_host};

/// What a part started: its engine, the containers it replaces and its new ones.
pub(crate) struct Started {
    docker: Docker,
    old: Vec<crate::Labelled>,
    new: Vec<String>,
    /// The slot of the new replicas' host ports.
    slot: u32,
}

/// One service on one server.
pub(crate) struct Part<'a> {
    pub app: &'a App,
    pub build: &'a Build,
    pub deploy: &'a Deploy,
    pub service: &'a str,
    pub spec: &'a ServiceSpec,
    pub server: &'a Server,
    pub image_ref: &'a str,
    /// The install (`crate::install`).
    pub install: &'a crate::Install,
    pub credentials: &'a DockerCredentials,
    pub log: &'a Log<'a>,
}

impl Part<'_> {
    pub fn line(&self, container: Option<&str>, stream: &str, text: &str) {
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
    pub async fn start(&self) -> Result<Started, String> {
        let docker = engine(self.log.store, self.server)
            .await
            .map_err(|e| e.to_string())?;
        self.pull(&docker).await?;
        let app = self.app.app.to_string();
        let note = |container: &str, text: &str| self.line(Some(container), "deploy", text);
        let old = crate::recover::settle(
            self.log.store,
            &docker,
            self.install,
            &app,
            self.service,
            &note,
        )
        .await?;
        // The new replicas publish on the slot the old ones do not use.
        let slot = match old.first() {
            Some(container) => 1 - container.slot.min(1),
            None => 0,
        };
        let mut new = Vec::new();
        for replica in 0..self.spec.replicas {
            match self.start_replica(&docker, replica, slot).await {
                Ok(name) => new.push(name),
                Err(ReplicaFailed {
                    name,
                    reason,
                    exited,
                }) => {
                    if let Some(name) = name {
                        // What it printed and how it ended stay in the log; the container goes.
                        self.keep_evidence(&docker, &name, exited.as_deref()).await;
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
        Ok(Started {
            docker,
            old,
            new,
            slot,
        })
    }

    /// After every part is healthy: what the new replicas printed, the proxy switched to
    /// them (for a published service), then the old ones stopped, all at once (one at a
    /// time, a service's grace period would count once per replica). When the proxy does not
    /// switch, the old replicas keep running and take the traffic, and the part fails.
    pub async fn finish(&self, started: Started) -> Result<(), String> {
        let Started {
            docker,
            old,
            new,
            slot,
        } = started;
        for name in &new {
            self.printed_lines(&docker, name, FIRST_LINES).await;
        }
        if let Some(publish) = &self.spec.publish {
            self.switch_proxy(&docker, publish, slot).await?;
        }
        let stops = old.into_iter().map(|container| {
            let docker = &docker;
            async move {
                let name = container.name;
                self.line(
                    Some(&name),
                    "deploy",
                    &format!("stopping (grace {} s)", self.spec.stop_grace),
                );
                let outcome = remove(docker, &name, self.spec.stop_grace).await;
                self.line(
                    Some(&name),
                    "deploy",
                    &removal(outcome, "stopped and removed"),
                );
            }
        });
        futures_util::future::join_all(stops).await;
        Ok(())
    }

    /// Points the server's proxy at the new replicas, and waits until the old ones have
    /// answered their last request.
    async fn switch_proxy(
        &self,
        docker: &Docker,
        publish: &crate::spec::Publish,
        slot: u32,
    ) -> Result<(), String> {
        let note = |text: &str| self.line(None, "proxy", text);
        let proxy = crate::proxy::ensure(docker, &self.server.name, self.install, &note).await?;
        let targets: Vec<String> = (0..self.spec.replicas)
            .map(|replica| {
                format!(
                    "127.0.0.1:{}",
                    host_port(self.spec.ports[0].host, replica, slot)
                )
            })
            .collect();
        let health_path = match &self.spec.health {
            Health::Http { path } => Some(path.as_str()),
            _ => None,
        };
        let owner = format!("{}/{}", self.app.app, self.service);
        let report = crate::proxy::switch(
            docker,
            &proxy,
            &owner,
            publish.port,
            publish.host.as_deref(),
            &targets,
            health_path,
            self.spec.health_timeout,
            self.spec.stop_grace.max(1),
        )
        .await?;
        for line in report.lines().filter(|l| !l.trim().is_empty()) {
            note(line.trim());
        }
        Ok(())
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
    ) -> Result<String, ReplicaFailed> {
        // Another install on the engine may hold the plain name (its deploy ids count from 1
        // too): then the name carries this install's prefix.
        let plain = format!(
            "{}.{}.{}.d{}.r{replica}",
            self.app.app.namespace(),
            self.app.app.app(),
            self.service,
            self.deploy.id
        );
        let labels = HashMap::from([
            (LABEL_APP.to_owned(), self.app.app.to_string()),
            (crate::LABEL_INSTALL.to_owned(), self.install.id.clone()),
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
                // No restarts until it is healthy: a replica that exits keeps its exit code
                // for the deploy log (a restart would clear it). It gets its policy then.
                restart_policy: Some(restart_policy(bollard::models::RestartPolicyNameEnum::NO)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut name = format!("bg.{plain}");
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let mut created = docker.create_container(Some(options), body.clone()).await;
        if let Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) = created
        {
            name = format!("{}.{plain}", crate::name_prefix(&self.install.id));
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            created = docker.create_container(Some(options), body).await;
        }
        created.map_err(|e| ReplicaFailed {
            name: None,
            reason: format!("cannot create {name}: {}", engine_message(&e)),
            exited: None,
        })?;
        self.line(Some(&name), "deploy", "created");
        docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| ReplicaFailed {
                name: Some(name.clone()),
                reason: format!("cannot start {name}: {}", engine_message(&e)),
                exited: None,
            })?;
        self.line(Some(&name), "deploy", "started");
        self.wait_healthy(docker, &name, replica, slot)
            .await
            .map_err(|(reason, exited)| ReplicaFailed {
                name: Some(name.clone()),
                reason,
                exited,
            })?;
        keep_restarting(docker, &name)
            .await
            .map_err(|reason| ReplicaFailed {
                name: Some(name.clone()),
                reason,
                exited: None,
            })?;
        Ok(name)
    }

    async fn wait_healthy(
        &self,
        docker: &Docker,
        name: &str,
        replica: u32,
        slot: u32,
    ) -> Result<(), (String, Option<String>)> {
        let timeout = Duration::from_secs(self.spec.health_timeout);
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| (e.to_string(), None))?;
        let started = Instant::now();
        let mut probes = Probes::default();
        loop {
            // A container that exited (and maybe was restarted by its policy) is not healthy.
            let inspected = docker
                .inspect_container(
                    name,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await;
            let exited = match inspected {
                Ok(c) => {
                    let running = c.restart_count.unwrap_or(0) == 0
                        && c.state
                            .as_ref()
                            .is_some_and(|s| s.running == Some(true) && s.restarting != Some(true));
                    (!running).then(|| ended(&c))
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Some("was removed".to_owned()),
                Err(error) => {
                    probes.end(self, name);
                    let reason =
                        format!("the engine stopped answering: {}", engine_message(&error));
                    self.line(Some(name), "health", &reason);
                    return Err((reason, None));
                }
            };
            if let Some(how) = exited {
                probes.end(self, name);
                let reason = format!("{name} {how} before it was healthy");
                self.line(Some(name), "health", &reason);
                return Err((reason, Some(how)));
            }
            let healthy = match &self.spec.health {
                Health::Running { seconds } => started.elapsed() >= Duration::from_secs(*seconds),
                Health::Command { command } => {
                    let outcome = exec_status(docker, name, command).await;
                    let text = match &outcome {
                        Ok(code) => format!("{command}: exit code {code}"),
                        Err(reason) => format!("{command}: {reason}"),
                    };
                    probes.answer(self, name, text);
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
                    probes.answer(self, name, text);
                    answer.is_ok_and(|r| r.status().is_success() || r.status().is_redirection())
                }
            };
            if healthy {
                probes.end(self, name);
                self.line(Some(name), "health", "healthy");
                return Ok(());
            }
            if Instant::now() >= deadline {
                probes.end(self, name);
                let reason = format!("{name} was not healthy within {} s", timeout.as_secs());
                self.line(Some(name), "health", &reason);
                return Err((reason, None));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What a replica that failed leaves in the deploy log before it is removed: its last
    /// lines with the times it printed them, then how it ended: `exited` as the health check
    /// saw it (its policy may have restarted it since), else as it was when the deploy gave up.
    async fn keep_evidence(&self, docker: &Docker, name: &str, exited: Option<&str>) {
        let inspect = || {
            docker.inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
        };
        let before = inspect().await;
        let stop = StopContainerOptionsBuilder::new().t(1).build();
        let _ = docker.stop_container(name, Some(stop)).await;
        self.printed_lines(docker, name, LAST_LINES).await;
        let text = match (exited, before) {
            (Some(exited), _) => exited.to_owned(),
            (None, Ok(before)) if !is_running(&before) => ended(&before),
            (None, Ok(_)) => match inspect().await {
                Ok(after) => format!(
                    "was still running when the deploy gave up; stopped, {}",
                    ended(&after)
                ),
                Err(error) => format!("cannot be inspected: {}", engine_message(&error)),
            },
            (None, Err(error)) => format!("cannot be inspected: {}", engine_message(&error)),
        };
        self.line(Some(name), "deploy", &text);
    }

    /// The last `tail` lines the container printed, into the deploy log with the times it
    /// printed them.
    async fn printed_lines(&self, docker: &Docker, name: &str, tail: u32) {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail.to_string())
            .build();
        let secrets: Vec<String> = self
            .spec
            .secret_env
            .iter()
            .map(|(_, v)| v.clone())
            .collect();
        let mut stream = docker.logs(name, Some(options));
        while let Some(Ok(output)) = stream.next().await {
            let (stream_name, bytes) = match output {
                bollard::container::LogOutput::StdErr { message } => ("stderr", message),
                other => ("stdout", other.into_bytes()),
            };
            for text in String::from_utf8_lossy(&bytes).lines() {
                let (at_ms, text) = crate::output::split_timestamp(text);
                let mut line = DeployLine {
                    server: Some(self.server.name.clone()),
                    service: Some(self.service.to_owned()),
                    container: Some(name.to_owned()),
                    stream: stream_name.to_owned(),
                    line: crate::output::mask(text, &secrets),
                    ..DeployLine::default()
                };
                match at_ms {
                    Some(at_ms) => {
                        line.at_ms = at_ms;
                        self.log.write(line);
                    }
                    None => self.line(Some(name), stream_name, &line.line),
                }
            }
        }
    }
}

/// Why a new replica failed: its name once it was created, the reason, and how it exited when
/// the health check saw it exit.
struct ReplicaFailed {
    name: Option<String>,
    reason: String,
    exited: Option<String>,
}

/// Gives a healthy replica its lasting restart policy (`unless-stopped`).
pub(crate) async fn keep_restarting(docker: &Docker, name: &str) -> Result<(), String> {
    let update = bollard::models::ContainerUpdateBody {
        restart_policy: Some(restart_policy(
            bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED,
        )),
        ..Default::default()
    };
    docker.update_container(name, update).await.map_err(|e| {
        format!(
            "cannot give {name} its restart policy: {}",
            engine_message(&e)
        )
    })
}

fn restart_policy(name: bollard::models::RestartPolicyNameEnum) -> bollard::models::RestartPolicy {
    bollard::models::RestartPolicy {
        name: Some(name),
        maximum_retry_count: None,
    }
}

/// Lines of a new replica's output the deploy log keeps when it is healthy.
const FIRST_LINES: u32 = 20;
/// Lines of a failed replica's output the deploy log keeps before it is removed.
const LAST_LINES: u32 = 50;

/// Health probes that give the same answer one after another are one line in the deploy log:
/// the first is written as it comes; when the answer changes or the wait ends, one more line
/// gives the count of the repeats, the time they took and the last answer.
#[derive(Default)]
struct Probes {
    last: Option<String>,
    repeats: u32,
    since: Option<Instant>,
}

impl Probes {
    fn answer(&mut self, part: &Part<'_>, name: &str, text: String) {
        if self.last.as_deref() == Some(text.as_str()) {
            self.repeats += 1;
            return;
        }
        self.end(part, name);
        part.line(Some(name), "health", &text);
        self.last = Some(text);
        self.since = Some(Instant::now());
    }

    /// Writes the repeats of the last answer, if any.
    fn end(&mut self, part: &Part<'_>, name: &str) {
        if let (Some(last), Some(since)) = (&self.last, self.since)
            && self.repeats > 0
        {
            part.line(
                Some(name),
                "health",
                &repeated(self.repeats, since.elapsed(), last),
            );
        }
        self.repeats = 0;
        self.last = None;
    }
}

/// "the same answer 287 more times in 28.7 s, the last: GET …: connection refused"
fn repeated(repeats: u32, took: Duration, last: &str) -> String {
    let times = if repeats == 1 { "time" } else { "times" };
    format!(
        "the same answer {repeats} more {times} in {:.1} s, the last: {last}",
        took.as_secs_f64()
    )
}

fn is_running(container: &bollard::models::ContainerInspectResponse) -> bool {
    container
        .state
        .as_ref()
        .is_some_and(|s| s.running == Some(true) && s.restarting != Some(true))
}

/// How a container ended, as its engine reports it: "exited with code 3", with "after 2
/// restarts" and "killed for lack of memory" where they apply.
fn ended(container: &bollard::models::ContainerInspectResponse) -> String {
    let state = container.state.as_ref();
    let code = state.and_then(|s| s.exit_code);
    let mut text = match code {
        Some(code) if !is_running(container) || container.restart_count.unwrap_or(0) > 0 => {
            format!("exited with code {code}")
        }
        _ => "stopped".to_owned(),
    };
    if state.and_then(|s| s.oom_killed) == Some(true) {
        text.push_str(", killed for lack of memory");
    }
    match container.restart_count.unwrap_or(0) {
        0 => {}
        1 => text.push_str(" (restarted once)"),
        n => text.push_str(&format!(" (restarted {n} times)")),
    }
    text
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

pub(crate) fn engine_message(error: &bollard::errors::Error) -> String {
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
