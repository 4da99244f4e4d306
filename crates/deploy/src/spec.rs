//! What a service is: stored as JSON in the store, validated here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// The first host port; replica `i` of a deploy uses `host + 2*i + slot` (see `host_port`).
    pub host: u16,
    pub container: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Health {
    /// `GET http://<server>:<host port of the first published port><path>` answers 2xx or 3xx.
    Http { path: String },
    /// The container is still running this many seconds after it started.
    Running { seconds: u64 },
    /// `/bin/sh -c <command>` run inside the container exits with 0.
    Command { command: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Run with `/bin/sh -c`; the image's own command when `None`.
    pub command: Option<String>,
    pub ports: Vec<Port>,
    pub env: Vec<(String, String)>,
    /// Sealed in the store (its `secrets`), passed to the containers in plain text; shown
    /// masked and never logged.
    pub secret_env: Vec<(String, String)>,
    pub replicas: u32,
    pub health: Health,
    /// Seconds a new replica may take to become healthy.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: u64,
    /// Seconds an old container gets to stop before it is killed.
    pub stop_grace: u64,
    pub servers: Vec<String>,
    /// Containers use the server's network instead of published ports: each replica gets its
    /// host port in `PORT` and must listen on it (for engines without a bridge network).
    #[serde(default)]
    pub network_host: bool,
    /// The image repository of the service's own git source, when it does not run the app's
    /// image (`<namespace>/<app>.<repo>` of another repository).
    #[serde(default)]
    pub source: Option<String>,
    /// The service's fixed address on each of its servers, answered by the install's proxy
    /// there (`crate::proxy`), which forwards to the replicas' first published port.
    #[serde(default)]
    pub publish: Option<Publish>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// The port the proxy listens on, on every address of the server.
    pub port: u16,
    /// Only requests for this host name (several services can then share a port).
    pub host: Option<String>,
}

/// How long a new replica may take to become healthy, unless a service says.
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 30;

fn default_health_timeout() -> u64 {
    DEFAULT_HEALTH_TIMEOUT
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid port {0:?}: use HOST:CONTAINER, e.g. 8080:80")]
    Port(String),
    #[error("invalid environment variable {0:?}: use KEY=VALUE")]
    Env(String),
    #[error("replicas must be between 1 and 20")]
    Replicas,
    #[error("the health timeout must be between 1 and 3600 seconds")]
    HealthTimeout,
    #[error("an HTTP health check needs a published port (--port)")]
    HealthWithoutPort,
    #[error("a published service needs a port of its replicas to forward to (--port)")]
    PublishWithoutPort,
    #[error("the published port {0} is one of the replicas' own host ports")]
    PublishOnReplicaPort(u16),
    #[error("invalid host name {0:?} to publish for")]
    PublishHost(String),
    #[error("a service runs on at least one server (--server)")]
    NoServer,
    #[error(
        "host ports of different services overlap: replica i of a deploy uses HOST + 2*i + (0 or 1), so leave room between services"
    )]
    PortsOverlap,
}

pub fn parse_port(text: &str) -> Result<Port, SpecError> {
    let error = || SpecError::Port(text.to_owned());
    let (host, container) = text.split_once(':').ok_or_else(error)?;
    Ok(Port {
        host: host.parse().map_err(|_| error())?,
        container: container.parse().map_err(|_| error())?,
    })
}

pub fn parse_env(text: &str) -> Result<(String, String), SpecError> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(SpecError::Env(text.chars().take(40).collect())),
    }
}

impl ServiceSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=20).contains(&self.replicas) {
            return Err(SpecError::Replicas);
        }
        if !(1..=3600).contains(&self.health_timeout) {
            return Err(SpecError::HealthTimeout);
        }
        if matches!(self.health, Health::Http { .. }) && self.ports.is_empty() {
            return Err(SpecError::HealthWithoutPort);
        }
        if self.servers.is_empty() {
            return Err(SpecError::NoServer);
        }
        if let Some(publish) = &self.publish {
            if self.ports.is_empty() {
                return Err(SpecError::PublishWithoutPort);
            }
            if self.host_ports().contains(&u32::from(publish.port)) {
                return Err(SpecError::PublishOnReplicaPort(publish.port));
            }
            if let Some(host) = &publish.host
                && (host.is_empty()
                    || host.len() > 253
                    || !host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            {
                return Err(SpecError::PublishHost(host.clone()));
            }
        }
        Ok(())
    }

    /// The host ports a service may use: every replica in either slot.
    pub fn host_ports(&self) -> Vec<u32> {
        let mut ports = Vec::new();
        for port in &self.ports {
            for replica in 0..self.replicas {
                for slot in 0..2 {
                    ports.push(host_port(port.host, replica, slot));
                }
            }
        }
        ports
    }
}

/// The host port of replica `replica` in `slot`. A deploy starts its new containers before it
/// stops the old ones, so it takes the slot the running containers do not use (their
/// `buildgrid.slot` label) and never wants a host port they hold.
pub fn host_port(base: u16, replica: u32, slot: u32) -> u32 {
    u32::from(base) + 2 * replica + slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_env() {
        assert_eq!(
            parse_port("8080:80"),
            Ok(Port {
                host: 8080,
                container: 80
            })
        );
        assert!(parse_port("80").is_err());
        assert!(parse_port("a:80").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert_eq!(host_port(8000, 0, 0), 8000);
        assert_eq!(host_port(8000, 1, 1), 8003);
    }
}
