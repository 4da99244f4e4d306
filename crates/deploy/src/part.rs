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
use buildgrid_store::{App, Build, Deploy, Server};
use futures_util::StreamExt;

use crate::run::Log;
use crate::spec::{Health, ServiceSpec, host_port};
use crate::{LABEL_APP, LABEL_BUILD, LABEL_DEPLOY, LABEL_SERVICE, engine, server_host};

/// What a part started: its engine, the containers it replaces and its new ones.
pub(crate) struct Started {
    docker: Docker,
    old: Vec<crate::Labelled>,
    new: Vec<String>,
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
    pub async fn finish(&self, started: Started) {
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
