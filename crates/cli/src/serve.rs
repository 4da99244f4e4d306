use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use buildgrid_access::Access;
use buildgrid_builder::Builder;
use buildgrid_registry::{AuthSettings, Registry};
use buildgrid_store::{LEASE_REAP_EVERY, Lease, Store};
use clap::Args;

type Deployer = Arc<dyn buildgrid_web::Deployer>;
/// What every HTTP worker's app is made of, set once before serving.
type Parts = (Arc<Builder>, web::Data<Registry>, Deployer);

/// How often counted downloads are written to the store.
const DOWNLOAD_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// `serve`'s flags. Each setting may also come from a `BUILDGRID_*` variable or the config file
/// (`config`): a flag wins over a variable, a variable over the file.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:5000; env:
    /// BUILDGRID_LISTEN; config: server.listen].
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// The URL users reach buildgrid at, when it differs from the listen address (a proxy)
    /// [env: BUILDGRID_PUBLIC_URL; config: server.public_url].
    #[arg(long)]
    pub(crate) public_url: Option<String>,
    /// HTTP worker threads [default: one per core; env: BUILDGRID_WORKERS; config:
    /// server.workers].
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// Builds running at once [default: 2; env: BUILDGRID_BUILD_CONCURRENCY; config:
    /// builds.concurrency].
    #[arg(long)]
    pub(crate) build_concurrency: Option<usize>,
    /// Minutes after which a running build fails [default: 30; env: BUILDGRID_BUILD_TIMEOUT;
    /// config: builds.timeout_minutes].
    #[arg(long)]
    pub(crate) build_timeout: Option<u64>,
    /// Bytes a `git push` may send (its pack); a larger push is refused [default: 2 GiB; env:
    /// BUILDGRID_MAX_PUSH_SIZE; config: server.max_push_size].
    #[arg(long)]
    pub(crate) max_push_size: Option<u64>,
    /// A second address that serves only `/metrics`, `/healthz` and `/readyz`, without
    /// credentials; unset, `/metrics` is on the main address for admins only [env:
    /// BUILDGRID_METRICS_LISTEN; config: server.metrics_listen].
    #[arg(long)]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Seconds requests in flight may take to finish after SIGTERM or SIGINT [default: 10;
    /// env: BUILDGRID_SHUTDOWN_GRACE; config: server.shutdown_grace].
    #[arg(long)]
    pub(crate) shutdown_grace: Option<u64>,
    /// Minutes between garbage collections (`buildgrid gc`), run on a thread of their own
    /// [default: none; env: BUILDGRID_GC_INTERVAL; config: server.gc_interval].
    #[arg(long)]
    pub(crate) gc_interval: Option<u64>,
    /// After each garbage collection, prune the Docker engine's build cache down to this size
    /// (bytes, or with K, M, G, KiB, MiB, GiB) [default: 20GiB; env:
    /// BUILDGRID_ENGINE_CACHE_BUDGET; config: builds.engine_cache_budget].
    #[arg(long)]
    pub(crate) engine_cache_budget: Option<buildgrid_builder::prune::ByteSize>,
    /// Answer blob GETs with `307` to a presigned URL of the object store valid this many
    /// seconds, rather than streaming the bytes (only with an object store, `--blob-store`)
    /// [default: streamed; env: BUILDGRID_BLOB_REDIRECT; config: server.blob_redirect].
    #[arg(long)]
    pub(crate) blob_redirect: Option<u64>,
}

pub fn run(
    data: &Path,
    blob_store: Option<&str>,
    args: crate::config::Serve,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let data = data
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", data.display()))?;
    if args.blob_redirect.is_some() && blob_store.is_none() {
        anyhow::bail!(
            "--blob-redirect needs an object store (--blob-store s3://…): blobs in the data directory are streamed"
        );
    }
    let store = Arc::new(crate::open_store(&data, blob_store)?);
    let access = Arc::new(Access::new(store.clone()).context("cannot set up access control")?);
    raise_open_file_limit();
    let operations = web::Data::new(crate::metrics::Operations {
        handle: crate::metrics::install()?,
        store: store.clone(),
        access: access.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let slot: Arc<std::sync::OnceLock<Parts>> = Arc::default();
        let app_store = store.clone();
        let app_builder = slot.clone();
        // One for all workers: the caps on open streams and archive writers hold per process.
        let shared = buildgrid_web::Shared::default();
        let streams = shared.clone();
        let app_operations = operations.clone();
        let mut server = HttpServer::new(move || {
            let (builder, registry, deployer) = app_builder
                .get()
                .expect("the builder starts before serving")
                .clone();
            let pages = web_settings(&builder, deployer, shared.clone());
            App::new()
                .wrap_fn(crate::request_log::observe)
                .configure(|cfg| crate::metrics::configure(cfg, app_operations.clone(), false))
                .configure(|cfg| buildgrid_registry::configure(cfg, registry))
                .configure(|cfg| buildgrid_builder::configure(cfg, builder))
                .configure(|cfg| buildgrid_web::configure(cfg, app_store.clone(), pages))
        });
        if let Some(workers) = args.workers {
            server = server.workers(workers);
        }
        // Signals are handled below: SIGTERM and SIGINT alike stop gracefully.
        // Blob answers go out as headers then body windows: with Nagle's algorithm on, a small
        // blob's last segment waits for the client's delayed ACK (~40 ms).
        let server = server
            .disable_signals()
            .tcp_nodelay(true)
            .shutdown_timeout(args.shutdown_grace)
            .bind(args.listen)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = server.addrs()[0];
        let metrics_server = match args.metrics_listen {
            None => None,
            Some(listen) => {
                let operations = operations.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .wrap_fn(crate::request_log::observe)
                        .configure(|cfg| crate::metrics::configure(cfg, operations.clone(), true))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(args.shutdown_grace)
                .bind(listen)
                .with_context(|| format!("cannot listen on {listen} for metrics"))?;
                Some(server)
            }
        };
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"))
            .trim_end_matches('/')
            .to_owned();
        let registry_host = public_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&public_url)
            .trim_end_matches('/')
            .to_owned();
        // Deploys started from the command line pull from the registry at this address.
        store
            .db
            .set_setting("public_url", &public_url)
            .context("cannot record the public URL")?;
        let registry = web::Data::new(
            Registry::new(
                store.clone(),
                access.clone(),
                AuthSettings::for_public_url(&public_url),
            )
            .with_blob_redirect(args.blob_redirect),
        );
        let registry_host_for_deploys = registry_host.clone();
        let builder = Builder::new(
            store.clone(),
            access.clone(),
            buildgrid_builder::Settings {
                concurrency: args.build_concurrency,
                timeout: Duration::from_secs(args.build_timeout * 60),
                registry_host,
                public_url: public_url.clone(),
                exe: std::env::current_exe().context("cannot locate the buildgrid executable")?,
                max_push_size: args.max_push_size,
            },
        );
        let interrupted = builder
            .recover()
            .context("cannot recover the build queue")?;
        crate::gc::start(&store, args.gc_interval, args.engine_cache_budget)?;
        if !interrupted.is_empty() {
            tracing::warn!(
                ?interrupted,
                "builds interrupted by the last stop are marked failed"
            );
        }
        // Builds and deploys whose lease lapsed (the process running them stopped: the last
        // `serve`, or a `buildgrid deploy`): marked interrupted, and what the deploys left on
        // the servers settled, now and every few seconds, in the background (a server may be
        // slow to answer).
        tokio::spawn(reap(store.clone(), builder.clone()));
        let deploys = crate::auto_deploy::AutoDeploy::new(store.clone(), registry_host_for_deploys);
        let deployer: Deployer = Arc::new(crate::auto_deploy::WebDeployer(deploys.clone()));
        builder.on_success(Arc::new(move |build| deploys.built(build)));
        let _ = slot.set((builder.clone(), registry.clone(), deployer));
        // The first admin exists before anyone learns the port: a command run as soon as the
        // line is read finds it.
        let made = buildgrid_access::bootstrap(&store).context("cannot create the first admin")?;
        // Tests and scripts read this line to learn the port. Nobody may be reading stdout
        // later on, so failures to print are ignored rather than fatal.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "buildgrid listening on http://{address}");
        if let Some(server) = &metrics_server {
            let _ = writeln!(out, "metrics listening on http://{}", server.addrs()[0]);
        }
        if let Some((name, password)) = made.user {
            let _ = writeln!(
                out,
                "admin user {name} created; web password (shown once): {password}"
            );
        }
        if let Some(secret) = made.token {
            let _ = writeln!(
                out,
                "admin token (shown once; use it as the password of git pushes and docker login): {secret}"
            );
        }
        let _ = out.flush();
        builder.start();
        let flusher = registry.clone();
        let flushing = tokio::spawn(async move {
            let mut tick = tokio::time::interval(DOWNLOAD_FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                let registry = flusher.clone();
                let _ = tokio::task::spawn_blocking(move || registry.flush_downloads()).await;
            }
        });
        let upkeep = operations.clone();
        let upkeeping = tokio::spawn(async move {
            // Histograms gather samples until they are drained: drained here when nobody scrapes.
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.handle.run_upkeep();
            }
        });
        let server = server.run();
        let metrics_server = metrics_server.map(|server| server.run());
        let handles: Vec<_> = std::iter::once(server.handle())
            .chain(metrics_server.as_ref().map(|s| s.handle()))
            .collect();
        let metrics_serving = metrics_server.map(tokio::spawn);
        let signal: Arc<std::sync::OnceLock<&'static str>> = Arc::default();
        let received = signal.clone();
        tokio::spawn(async move {
            let name = stop_signal().await;
            let _ = received.set(name);
            tracing::info!(
                signal = name,
                grace_seconds = args.shutdown_grace,
                "stopping: no new connections; requests in flight may finish"
            );
            // Event streams never finish by themselves; their browsers reconnect.
            streams.close_streams();
            futures_util::future::join_all(handles.iter().map(|h| h.stop(true))).await;
        });
        let result = server.await;
        if let Some(serving) = metrics_serving {
            let _ = serving.await;
        }
        let reason = match signal.get() {
            Some(name) => format!("interrupted: buildgrid stopped ({name})"),
            None => "interrupted: buildgrid stopped".to_owned(),
        };
        stop_work(&store, &builder, &reason).await;
        upkeeping.abort();
        flushing.abort();
        registry.flush_downloads();
        tracing::info!("stopped");
        result.context("the HTTP server failed")
    });
    // Blocking tasks still running (an ingest the stop interrupted) are not waited for: what
    // they leave half done, the next start finds and removes.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM and SIGINT: stop buildgrid with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// Settles the work in progress when the server has stopped: running builds end failed with
/// `reason` (their workers stop them; any a worker did not end is marked as a restart would),
/// and deploys this process runs are marked interrupted, as the next start's recovery would.
async fn stop_work(store: &Arc<Store>, builder: &Arc<Builder>, reason: &str) {
    if tokio::time::timeout(Duration::from_secs(5), builder.stop(reason))
        .await
        .is_err()
    {
        tracing::warn!("build workers did not stop within 5 s");
    }
    let me = Lease::this_process().owner;
    match store.db.interrupt_builds_of(&me, reason) {
        Ok(ids) if !ids.is_empty() => tracing::warn!(?ids, "builds still running marked failed"),
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot mark running builds failed"),
    }
    match store
        .db
        .interrupt_deploys_of(&me, "interrupted: the process running it stopped")
    {
        Ok(deploys) if !deploys.is_empty() => {
            let ids: Vec<i64> = deploys.iter().map(|d| d.id).collect();
            tracing::warn!(?ids, "deploys in progress marked interrupted");
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot mark deploys in progress interrupted"),
    }
}

/// Every [`LEASE_REAP_EVERY`], from the start: builds whose lease lapsed end failed, and
/// deploys whose lease lapsed are marked interrupted and what they left on the servers settled.
/// A process killed in the middle of either is thus settled within the lease's term, whether
/// or not `serve` restarts, whatever process id the next one gets.
async fn reap(store: Arc<Store>, builder: Arc<Builder>) {
    let mut ticks = tokio::time::interval(LEASE_REAP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match builder.recover() {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(?ids, "builds whose process stopped are marked failed");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot mark interrupted builds failed"),
        }
        match buildgrid_deploy::recover(&store).await {
            Ok(deploys) if !deploys.is_empty() => {
                let ids: Vec<i64> = deploys.iter().map(|d| d.id).collect();
                tracing::warn!(?ids, "deploys whose process stopped are settled");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot recover interrupted deploys"),
        }
    }
}

/// The web pages' settings: the builder's public URL, its wake-up, its access rules and deploys.
fn web_settings(
    builder: &Arc<Builder>,
    deployer: Deployer,
    shared: buildgrid_web::Shared,
) -> buildgrid_web::Settings {
    let waker = builder.clone();
    buildgrid_web::Settings {
        public_url: builder.settings.public_url.clone(),
        wake: Arc::new(move || waker.wake()),
        access: builder.access.clone(),
        deployer: Some(deployer),
        shared,
    }
}

/// Raises the soft limit of open files to the hard one: every connection, event stream, blob
/// and store connection is a file, and the usual soft default (1,024) is far below what one
/// server holds open under load.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, "cannot raise the limit of open files");
        }
    }
}
