//! A server's Docker URL: `unix://`, `tcp://` or `ssh://`, and the host its published ports are
//! reached at.

use crate::ServerError;

/// A server's Docker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerUrl {
    /// `unix:///path/to/docker.sock`.
    Unix { path: String },
    /// `tcp://host[:port]`; without a port, 2375 (2376 with TLS), as the docker CLI does.
    Tcp { host: String, port: Option<u16> },
    /// `ssh://[user@]host[:port]`.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
    },
}

impl DockerUrl {
    pub fn parse(url: &str) -> Result<DockerUrl, ServerError> {
        let invalid = || ServerError::Url(url.to_owned());
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(invalid());
            }
            return Ok(DockerUrl::Unix {
                path: path.to_owned(),
            });
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (user, address) = match authority.rsplit_once('@') {
            Some((user, address)) if scheme == "ssh" => (Some(user), address),
            Some(_) => return Err(invalid()),
            None => (None, authority),
        };
        if user.is_some_and(|u| u.is_empty() || u.starts_with('-') || !plain(u)) {
            return Err(invalid());
        }
        let (host, port) = host_and_port(address).ok_or_else(invalid)?;
        match scheme {
            "tcp" => Ok(DockerUrl::Tcp { host, port }),
            "ssh" => Ok(DockerUrl::Ssh {
                user: user.map(str::to_owned),
                host,
                port,
            }),
            _ => Err(invalid()),
        }
    }
}

/// No characters that would end a host or user name in a URL or on ssh's command line.
fn plain(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/@?#[]\\\"'".contains(c))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes without brackets.
fn host_and_port(address: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            if !host.contains(':') {
                return None;
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        }
        None => match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    if host.is_empty() || host.starts_with('-') || !plain(host) {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    Some((host.to_owned(), port))
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The address buildgrid reaches a server's published ports at: the host of a `tcp://` or
/// `ssh://` URL, else this machine.
pub fn server_host(url: &str) -> String {
    match DockerUrl::parse(url) {
        Ok(DockerUrl::Tcp { host, .. } | DockerUrl::Ssh { host, .. }) if host.contains(':') => {
            format!("[{host}]")
        }
        Ok(DockerUrl::Tcp { host, .. } | DockerUrl::Ssh { host, .. }) => host,
        _ => "127.0.0.1".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(url: &str, expected: Option<DockerUrl>) {
        assert_eq!(DockerUrl::parse(url).ok(), expected, "{url}");
    }

    fn tcp(host: &str, port: Option<u16>) -> Option<DockerUrl> {
        Some(DockerUrl::Tcp {
            host: host.into(),
            port,
        })
    }

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>) -> Option<DockerUrl> {
        Some(DockerUrl::Ssh {
            user: user.map(Into::into),
            host: host.into(),
            port,
        })
    }

    #[test]
    fn docker_urls() {
        check(
            "unix:///var/run/docker.sock",
            Some(DockerUrl::Unix {
                path: "/var/run/docker.sock".into(),
            }),
        );
        check("unix://docker.sock", None);
        check("unix://", None);
        check("tcp://10.0.0.5:2376", tcp("10.0.0.5", Some(2376)));
        check(
            "tcp://docker.example:2375/",
            tcp("docker.example", Some(2375)),
        );
        check("tcp://docker.example", tcp("docker.example", None));
        check("tcp://[::1]:2376", tcp("::1", Some(2376)));
        check("tcp://[::1]", tcp("::1", None));
        check("tcp://host:", None);
        check("tcp://host:0", None);
        check("tcp://host:99999", None);
        check("tcp://host:2376/v1", None);
        check("tcp://user@host:2376", None);
        check("tcp://:2376", None);
        check("tcp://::1:2376", None);
        check(
            "ssh://deploy@10.0.0.5",
            ssh(Some("deploy"), "10.0.0.5", None),
        );
        check(
            "ssh://deploy@10.0.0.5:2222",
            ssh(Some("deploy"), "10.0.0.5", Some(2222)),
        );
        check("ssh://box.example", ssh(None, "box.example", None));
        check(
            "ssh://deploy@[fe80::1]:22",
            ssh(Some("deploy"), "fe80::1", Some(22)),
        );
        check("ssh://@host", None);
        check("ssh://-oProxyCommand=x@host", None);
        check("ssh://user@-oProxyCommand=x", None);
        check("ssh://user@ho st", None);
        check("http://host:2375", None);
        check("/var/run/docker.sock", None);
    }

    #[test]
    fn published_ports_are_reached_at_the_url_host() {
        assert_eq!(server_host("unix:///var/run/docker.sock"), "127.0.0.1");
        assert_eq!(server_host("tcp://10.0.0.5:2376"), "10.0.0.5");
        assert_eq!(server_host("ssh://deploy@box.example:2222"), "box.example");
        assert_eq!(server_host("ssh://[fe80::1]"), "[fe80::1]");
    }
}
