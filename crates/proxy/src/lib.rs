//! buildgrid's proxy: the fixed address of each deployed service on a server.
//!
//! It listens on the ports services publish, forwards each request to one of the service's
//! current replicas (round robin; another replica when one cannot be reached) and switches a
//! route to new replicas in one step, only after every new replica answered its health check.
//! The replicas it switched away from keep the requests they have until those end (or the drain
//! timeout passes); only then does a deploy stop them. Routes live in a file in the proxy's
//! state directory and come back when the proxy starts again. A deploy talks to the proxy
//! through a Unix socket in that directory (`control`).

pub mod control;
pub mod forward;
mod handover;
pub mod table;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control::{DeployReport, ProxyError};
use crate::forward::{Upstream, answer};
use crate::table::{Backends, Route, RouteFile, Table};

/// What a proxy needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where routes and the control socket live.
    pub state: PathBuf,
    /// The address the published ports listen on (all of the server's by default).
    pub bind: IpAddr,
    /// Threads that accept and forward.
    pub workers: usize,
}

/// A thread running a single-threaded runtime until `exit` turns true.
fn worker(
    index: usize,
    mut exit: watch::Receiver<bool>,
) -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("proxy-{index}"))
        .spawn(move || runtime.block_on(stopped(&mut exit)))?;
    Ok(handle)
}

/// A port the proxy listens on: the task accepting on it, and the socket to hand over.
struct Listening {
    task: JoinHandle<()>,
    socket: std::net::TcpListener,
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    table: RwLock<Table>,
    file: RouteFile,
    /// The health checks' client.
    upstream: Upstream,
    /// Idle connections to replicas.
    pool: Arc<forward::Pool>,
    /// Per port: the task accepting on it, and the listening socket to hand to a new proxy.
    listeners: Mutex<HashMap<u16, Listening>>,
    /// One single-threaded runtime per core: a client connection, its requests and its
    /// connections to replicas stay on the thread that accepted it.
    workers: Vec<tokio::runtime::Handle>,
    /// Ends the workers' threads once the proxy has stopped.
    workers_exit: watch::Sender<bool>,
    next_worker: std::sync::atomic::AtomicUsize,
    /// Whether a new proxy took the sockets: the control socket is then its.
    handed_over: std::sync::atomic::AtomicBool,
    /// Set to true when the proxy stops: listeners stop accepting, connections end after
    /// their current request.
    stopping: watch::Sender<bool>,
    /// One change of routes at a time.
    changes: tokio::sync::Mutex<()>,
    connections: Arc<tokio::sync::Semaphore>,
}

/// How long a stopping proxy leaves a connection that has no request to close it itself.
const IDLE_CLOSE: Duration = Duration::from_secs(1);

/// Connections open at once at most; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16_384;

impl Proxy {
    /// Loads the stored routes and listens on their ports. Must run inside a Tokio runtime.
    pub async fn start(settings: Settings) -> Result<Proxy, ProxyError> {
        std::fs::create_dir_all(&settings.state).map_err(|e| ProxyError::State {
            path: settings.state.clone(),
            source: e,
        })?;
        // A proxy already running here hands its sockets over (and stops accepting) before
        // the routes are read, so no change of routes falls between the two.
        let control_path = control::socket_path(&settings.state);
        let inherited = handover::take(&control_path)
            .map_err(|e| ProxyError::Control {
                path: control_path.clone(),
                source: e,
            })?
            .unwrap_or_default();
        let file = RouteFile::new(&settings.state);
        let routes = file.load().map_err(|e| ProxyError::State {
            path: file.path().to_owned(),
            source: e,
        })?;
        let mut table = Table::default();
        for route in routes {
            table.set(
                route.key(),
                Arc::new(Backends::new(route.service, route.targets)),
            );
        }
        let ports = table.ports();
        let (stopping, _) = watch::channel(false);
        let (workers_exit, _) = watch::channel(false);
        let workers = (0..settings.workers.max(1))
            .map(|i| worker(i, workers_exit.subscribe()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| ProxyError::State {
                path: settings.state.clone(),
                source: e,
            })?;
        let proxy = Proxy {
            shared: Arc::new(Shared {
                settings,
                table: RwLock::new(table),
                file,
                upstream: forward::upstream_client(),
                pool: Arc::default(),
                listeners: Mutex::new(HashMap::new()),
                workers,
                workers_exit,
                next_worker: Default::default(),
                handed_over: std::sync::atomic::AtomicBool::new(false),
                stopping,
                changes: tokio::sync::Mutex::new(()),
                connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            }),
        };
        for (port, socket) in inherited {
            tracing::info!(port, "took over the running proxy's socket");
            proxy.shared.adopt(port, socket)?;
        }
        for port in ports {
            proxy.shared.listen(port)?;
        }
        Ok(proxy)
    }

    /// Answers deploys on the control socket until the proxy stops.
    pub fn serve_control(&self) -> Result<JoinHandle<()>, ProxyError> {
        control::serve(self.shared.clone())
    }

    /// The ports it listens on.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .shared
            .listeners
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect();
        ports.sort_unstable();
        ports
    }

    pub fn routes(&self) -> Vec<Route> {
        self.shared.table.read().unwrap().routes()
    }

    /// Switches a route to new replicas (see [`control::Command::Deploy`]).
    pub async fn deploy(
        &self,
        route: Route,
        health: Option<control::HealthCheck>,
        drain: Duration,
    ) -> Result<DeployReport, ProxyError> {
        self.shared.deploy(route, health, drain).await
    }

    /// Removes a route after its requests drained.
    pub async fn remove(
        &self,
        port: u16,
        host: &str,
        drain: Duration,
    ) -> Result<DeployReport, ProxyError> {
        self.shared.remove(port, host, drain).await
    }

    /// Returns once the proxy stops accepting: asked to, or a new proxy took its sockets.
    pub async fn stopping(&self) {
        stopped(&mut self.shared.stopping.subscribe()).await
    }

    /// Stops accepting, lets every open request finish within `grace`, then returns.
    pub async fn stop(self, grace: Duration) {
        self.shared.stopping.send_replace(true);
        let handles: Vec<_> = self.shared.listeners.lock().unwrap().drain().collect();
        for (_, listening) in handles {
            let _ = listening.task.await;
        }
        let deadline = Instant::now() + grace;
        while self.shared.connections.available_permits() < MAX_CONNECTIONS
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !self
            .shared
            .handed_over
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            let _ = std::fs::remove_file(control::socket_path(&self.shared.settings.state));
        }
        self.shared.workers_exit.send_replace(true);
    }
}

impl Shared {
    /// Listens on `port` unless it already does.
    fn listen(self: &Arc<Self>, port: u16) -> Result<(), ProxyError> {
        if self.listeners.lock().unwrap().contains_key(&port) {
            return Ok(());
        }
        let address = SocketAddr::new(self.settings.bind, port);
        let socket = bind(address).map_err(|e| ProxyError::Listen { address, source: e })?;
        tracing::info!(%address, "listening");
        self.adopt(port, socket)
    }

    /// Accepts on a listening socket, bound here or handed over by the proxy before.
    fn adopt(self: &Arc<Self>, port: u16, socket: std::net::TcpListener) -> Result<(), ProxyError> {
        let address = SocketAddr::new(self.settings.bind, port);
        let listen_error = |source| ProxyError::Listen { address, source };
        let kept = socket.try_clone().map_err(listen_error)?;
        socket.set_nonblocking(true).map_err(listen_error)?;
        // One task accepts and hands the connections to the workers in turn.
        let shared = self.clone();
        let task = self.workers[0].spawn(async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => shared.accept(listener, port).await,
                Err(e) => tracing::error!(port, "cannot accept: {e}"),
            }
        });
        self.listeners
            .lock()
            .unwrap()
            .insert(port, Listening { task, socket: kept });
        Ok(())
    }

    /// Gives the listening sockets to a new proxy over `stream` and stops accepting.
    async fn hand_over(self: &Arc<Self>, stream: tokio::net::UnixStream) -> std::io::Result<()> {
        let _change = self.changes.lock().await;
        let sockets = self
            .listeners
            .lock()
            .unwrap()
            .iter()
            .map(|(port, listening)| Ok((*port, listening.socket.try_clone()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        tokio::task::spawn_blocking(move || handover::give(&stream, &sockets))
            .await
            .map_err(std::io::Error::other)??;
        tracing::info!("a new proxy took the sockets; finishing open requests");
        self.handed_over
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stopping.send_replace(true);
        Ok(())
    }

    async fn accept(self: Arc<Self>, listener: TcpListener, port: u16) {
        let mut stopping = self.stopping.subscribe();
        loop {
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = crate::stopped(&mut stopping) => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(port, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = crate::stopped(&mut stopping) => break,
            };
            self.dispatch(stream, peer, port, permit);
        }
        // Connections already in the queue are served rather than reset when the socket
        // closes (after a handover the socket stays open in the new proxy, which takes them).
        while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
            let Ok(permit) = self.connections.clone().acquire_owned().await else {
                break;
            };
            self.dispatch(stream, peer, port, permit);
        }
    }

    /// Hands an accepted connection to the workers in turn, so each serves as many.
    fn dispatch(
        self: &Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        port: u16,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, "cannot hand a connection to a worker: {e}");
                return;
            }
        };
        let worker = self
            .next_worker
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.workers.len();
        let shared = self.clone();
        self.workers[worker].spawn(async move {
            let _permit = permit;
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => shared.connection(stream, peer, port).await,
                Err(e) => tracing::warn!(%peer, "cannot serve a connection: {e}"),
            }
        });
    }

    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        port: u16,
    ) {
        let client = forward::client_ip(peer);
        let shared = self.clone();
        let affinity = Arc::new(forward::Affinity::new(self.pool.clone()));
        let service = service_fn(move |request| {
            let shared = shared.clone();
            let affinity = affinity.clone();
            async move {
                let host = forward::requested_host(&request);
                let backends = shared.table.read().unwrap().lookup(port, &host);
                let response = match backends {
                    Some(backends) => forward::forward(&affinity, backends, request, client).await,
                    None => answer(
                        http::StatusCode::NOT_FOUND,
                        format!("no service is published for {host:?} on port {port}"),
                    ),
                };
                let mut response = response;
                if *shared.stopping.borrow() {
                    // The client opens its next connection to the proxy that stays.
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            }
            _ = crate::stopped(&mut stopping) => {
                // A busy connection ends after its next answer, which says so; one left idle
                // is closed after a while.
                if tokio::time::timeout(IDLE_CLOSE, connection.as_mut()).await.is_err() {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        }
    }

    async fn deploy(
        self: &Arc<Self>,
        route: Route,
        health: Option<control::HealthCheck>,
        drain: Duration,
    ) -> Result<DeployReport, ProxyError> {
        if route.targets.is_empty() {
            return Err(ProxyError::NoTargets);
        }
        let _change = self.changes.lock().await;
        if let Some(current) = self.table.read().unwrap().lookup_exact(&route.key())
            && current.service != route.service
        {
            return Err(ProxyError::Taken {
                port: route.port,
                host: route.key().1,
                service: current.service.clone(),
            });
        }
        let started = Instant::now();
        if let Some(health) = &health {
            control::check_all(&self.upstream, &route.targets, health).await?;
        }
        let healthy_ms = started.elapsed().as_millis() as u64;
        self.listen(route.port)?;
        let backends = Arc::new(Backends::new(route.service.clone(), route.targets.clone()));
        let previous = self.switch(|table| table.set(route.key(), backends))?;
        let switched = Instant::now();
        let (drained, previous_targets) = drain_of(previous, drain).await;
        Ok(DeployReport {
            healthy_ms,
            switched_ms: switched.duration_since(started).as_millis() as u64,
            drained,
            drained_ms: switched.elapsed().as_millis() as u64,
            previous: previous_targets,
        })
    }

    async fn remove(
        self: &Arc<Self>,
        port: u16,
        host: &str,
        drain: Duration,
    ) -> Result<DeployReport, ProxyError> {
        let _change = self.changes.lock().await;
        let key = (port, table::normalize_host(host));
        let previous = self.switch(|table| table.remove(&key))?;
        if previous.is_none() {
            return Err(ProxyError::NoRoute { port, host: key.1 });
        }
        let switched = Instant::now();
        let (drained, previous) = drain_of(previous, drain).await;
        Ok(DeployReport {
            healthy_ms: 0,
            switched_ms: 0,
            drained,
            drained_ms: switched.elapsed().as_millis() as u64,
            previous,
        })
    }

    /// Changes the table in one step, stored before it takes effect.
    fn switch(
        &self,
        change: impl FnOnce(&mut Table) -> Option<Arc<Backends>>,
    ) -> Result<Option<Arc<Backends>>, ProxyError> {
        let mut table = self.table.write().unwrap();
        let mut next = table.clone();
        let previous = change(&mut next);
        self.file
            .save(&next.routes())
            .map_err(|e| ProxyError::State {
                path: self.file.path().to_owned(),
                source: e,
            })?;
        *table = next;
        let targets = table.routes().into_iter().flat_map(|r| r.targets).collect();
        self.pool.keep_only(&targets);
        Ok(previous)
    }
}

/// Returns once the proxy is stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Waits until no request holds the replicas a switch replaced, or `drain` passed.
async fn drain_of(previous: Option<Arc<Backends>>, drain: Duration) -> (bool, Vec<SocketAddr>) {
    let Some(previous) = previous else {
        return (true, Vec::new());
    };
    let deadline = Instant::now() + drain;
    while Arc::strong_count(&previous) > 1 {
        if Instant::now() >= deadline {
            return (false, previous.targets.clone());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (true, previous.targets.clone())
}

fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(1024)?.into_std()
}

/// The control socket of the proxy whose state directory is `state`.
pub fn control_socket(state: &Path) -> PathBuf {
    control::socket_path(state)
}
