//! The routes: which replicas answer a port and host name, kept in a file across restarts.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// One route as it is asked for and stored: requests to `port` whose host name is `host` (any
/// host name when empty) go to `targets`, the replicas of `service`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    pub port: u16,
    #[serde(default)]
    pub host: String,
    pub service: String,
    pub targets: Vec<SocketAddr>,
}

impl Route {
    /// The route's key with its host name as requests are matched: lower case, no port.
    pub fn key(&self) -> (u16, String) {
        (self.port, normalize_host(&self.host))
    }
}

/// The replicas a route forwards to. Every request holds this for as long as it runs (its
/// response body included), so the set replaced by a switch has drained when no request
/// holds it any more.
#[derive(Debug)]
pub struct Backends {
    pub service: String,
    pub targets: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backends {
    pub fn new(service: String, targets: Vec<SocketAddr>) -> Self {
        Backends {
            service,
            targets,
            next: AtomicUsize::new(0),
        }
    }

    /// The replicas in the order this request tries them: round robin, then the others.
    pub fn order(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.targets.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| self.targets[(start + i) % n])
    }
}

/// The routes in force, by port and then host name ("" for any host).
#[derive(Clone, Default)]
pub struct Table {
    ports: HashMap<u16, HashMap<String, Arc<Backends>>>,
}

impl Table {
    /// The replicas that answer `host` on `port`: the route of that name, else the port's route
    /// for any host.
    pub fn lookup(&self, port: u16, host: &str) -> Option<Arc<Backends>> {
        let hosts = self.ports.get(&port)?;
        hosts.get(host).or_else(|| hosts.get("")).cloned()
    }

    /// The route of exactly this port and host name.
    pub fn lookup_exact(&self, key: &(u16, String)) -> Option<Arc<Backends>> {
        self.ports.get(&key.0)?.get(&key.1).cloned()
    }

    /// Puts `backends` in place for the route's key and gives back what it replaced.
    pub fn set(&mut self, key: (u16, String), backends: Arc<Backends>) -> Option<Arc<Backends>> {
        self.ports.entry(key.0).or_default().insert(key.1, backends)
    }

    pub fn remove(&mut self, key: &(u16, String)) -> Option<Arc<Backends>> {
        let hosts = self.ports.get_mut(&key.0)?;
        let removed = hosts.remove(&key.1);
        if hosts.is_empty() {
            self.ports.remove(&key.0);
        }
        removed
    }

    /// Every route, sorted by port and host name.
    pub fn routes(&self) -> Vec<Route> {
        let mut sorted = BTreeMap::new();
        for (port, hosts) in &self.ports {
            for (host, backends) in hosts {
                sorted.insert(
                    (*port, host.clone()),
                    Route {
                        port: *port,
                        host: host.clone(),
                        service: backends.service.clone(),
                        targets: backends.targets.clone(),
                    },
                );
            }
        }
        sorted.into_values().collect()
    }

    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.ports.keys().copied().collect();
        ports.sort_unstable();
        ports
    }
}

/// A host name as requests are matched: lower case, without a port, without a final dot.
pub fn normalize_host(host: &str) -> String {
    let name = if host.starts_with('[') {
        // An IPv6 literal keeps its colons inside its brackets.
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The file that keeps the routes across the proxy's restarts.
pub struct RouteFile {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    routes: Vec<Route>,
}

impl RouteFile {
    pub fn new(state: &Path) -> Self {
        RouteFile {
            path: state.join("routes.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored routes; none when the file does not exist yet.
    pub fn load(&self) -> std::io::Result<Vec<Route>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", self.path.display()),
                    )
                })?;
                Ok(stored.routes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the stored routes in one step: a crash leaves the old file or the new one.
    pub fn save(&self, routes: &[Route]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.new");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&Stored {
            routes: routes.to_vec(),
        })?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn host_names_match_without_case_port_or_final_dot() {
        assert_eq!(normalize_host("Shop.Example.com:8080"), "shop.example.com");
        assert_eq!(normalize_host("shop.example.com."), "shop.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host(""), "");
    }

    #[test]
    fn a_named_host_wins_over_the_ports_route_for_any_host() {
        let mut table = Table::default();
        table.set(
            (80, String::new()),
            Arc::new(Backends::new("any".into(), vec![addr(1)])),
        );
        table.set(
            (80, "shop".into()),
            Arc::new(Backends::new("shop".into(), vec![addr(2)])),
        );
        assert_eq!(table.lookup(80, "shop").unwrap().service, "shop");
        assert_eq!(table.lookup(80, "other").unwrap().service, "any");
        assert!(table.lookup(81, "shop").is_none());
        assert!(table.remove(&(80, String::new())).is_some());
        assert!(table.lookup(80, "other").is_none());
        assert_eq!(table.ports(), vec![80]);
    }

    #[test]
    fn replicas_take_turns_and_each_request_may_try_all() {
        let backends = Backends::new("web".into(), vec![addr(1), addr(2), addr(3)]);
        let first: Vec<_> = backends.order().collect();
        let second: Vec<_> = backends.order().collect();
        assert_eq!(first, vec![addr(1), addr(2), addr(3)]);
        assert_eq!(second, vec![addr(2), addr(3), addr(1)]);
        assert_eq!(Backends::new("none".into(), vec![]).order().count(), 0);
    }

    #[test]
    fn routes_survive_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = RouteFile::new(dir.path());
        assert!(file.load().unwrap().is_empty());
        let routes = vec![Route {
            port: 8080,
            host: "shop".into(),
            service: "web".into(),
            targets: vec![addr(9000), addr(9001)],
        }];
        file.save(&routes).unwrap();
        assert_eq!(file.load().unwrap(), routes);
        std::fs::write(file.path(), b"{").unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("routes.json"), "{err}");
    }
}
