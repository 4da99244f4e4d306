//! Servers, services, deploys and deploy logs from the command line. `buildgrid deploy` runs the
//! deploy in this process and follows it; the engines pull from the registry of the running
//! `buildgrid serve` (whose address it records in the data directory).

use anyhow::{Context, bail};
use buildgrid_core::AppRef;
use buildgrid_deploy::spec::{self, Health, ServiceSpec};
use buildgrid_store::{App, DeployLine, DeployLogFilter, NewSource, Source, Store};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Register a Docker engine; it must answer.
    Add {
        name: String,
        /// `unix:///var/run/docker.sock`, `tcp://host:2375` (`tcp://host:2376` with the TLS
        /// files) or `ssh://user@host[:port]` (runs `docker system dial-stdio` there).
        #[arg(long)]
        docker: String,
        /// The CA that signed the engine's certificate (with --tls-cert and --tls-key).
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
        /// The client certificate the engine trusts.
        #[arg(long)]
        tls_cert: Option<std::path::PathBuf>,
        /// The client certificate's private key.
        #[arg(long)]
        tls_key: Option<std::path::PathBuf>,
        /// The private key to log in over SSH with (default: what ssh picks for the host).
        #[arg(long)]
        ssh_key: Option<std::path::PathBuf>,
    },
    /// List servers, whether they answer, and the containers buildgrid runs there.
    List,
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Add a service to an app: what runs of the app's image, where and how many.
    Add(Box<ServiceArgs>),
    /// List an app's services.
    List { app: String },
}

#[derive(Args)]
pub struct ServiceArgs {
    /// `<namespace>/<app>`.
    app: String,
    /// The service's name, e.g. `web` or `worker`.
    name: String,
    /// The command, run with `/bin/sh -c` (default: the image's own).
    #[arg(long)]
    command: Option<String>,
    /// `HOST:CONTAINER`; replica i publishes HOST + 2*i + slot, the slot (0 or 1) alternating
    /// between deploys so that new replicas start before the old ones stop.
    #[arg(long = "port")]
    ports: Vec<String>,
    /// A fixed port for the service on each of its servers, answered by buildgrid's proxy
    /// there: it forwards to the replicas' first port and switches to new replicas only once
    /// every one of them is healthy.
    #[arg(long)]
    publish: Option<u16>,
    /// With --publish: only requests for this host name, so several services share a port.
    #[arg(long, requires = "publish")]
    host: Option<String>,
    /// `KEY=VALUE`; repeat for more.
    #[arg(long = "env")]
    env: Vec<String>,
    /// `KEY=VALUE` kept secret: shown masked, never written to a log.
    #[arg(long = "secret-env")]
    secret_env: Vec<String>,
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Healthy when `GET <path>` on the first published port answers 2xx or 3xx.
    #[arg(long, conflicts_with_all = ["health_running", "health_cmd"])]
    health_http: Option<String>,
    /// Healthy when this command, run with `/bin/sh -c` in the container, exits with 0.
    #[arg(long, conflicts_with = "health_running")]
    health_cmd: Option<String>,
    /// Healthy when still running this many seconds after start (the default, 2 s).
    #[arg(long)]
    health_running: Option<u64>,
    /// Seconds a new replica may take to become healthy before the deploy fails.
    #[arg(long, default_value_t = spec::DEFAULT_HEALTH_TIMEOUT)]
    health_timeout: u64,
    /// Seconds an old container gets to stop.
    #[arg(long, default_value_t = 10)]
    stop_grace: u64,
    /// A server to run on; repeat for more.
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    /// Use the server's network instead of published ports: each replica gets its host port in
    /// `PORT` and listens on it (for engines without a bridge network).
    #[arg(long)]
    network_host: bool,
    /// Run the image of this git repository instead of the app's (built with
    /// `buildgrid build <app> --service <name>`); services of one repository share its image.
    #[arg(long = "git")]
    git_url: Option<String>,
    /// The branch of `--git` to build (default: main).
    #[arg(long, requires = "git_url", default_value = "main")]
    git_branch: String,
    /// The Dockerfile of `--git`, relative to its context.
    #[arg(long, requires = "git_url", default_value = "Dockerfile")]
    dockerfile: String,
    /// The build context of `--git`: a directory of the repository.
    #[arg(long, requires = "git_url", default_value = ".")]
    context: String,
}

#[derive(Args)]
pub struct DeployArgs {
    /// `<namespace>/<app>`.
    app: String,
    /// The build to deploy (default: the newest successful one); an earlier one rolls back.
    #[arg(long)]
    build: Option<i64>,
    /// Kept for scripts: the command always follows the deploy to its end.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// `<namespace>/<app>`.
    app: String,
    /// The deploy (default: the newest).
    #[arg(long)]
    deploy: Option<i64>,
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    service: Option<String>,
    #[arg(long)]
    container: Option<String>,
    /// Follow what the app's running containers print instead (until interrupted), picking up
    /// the containers of later deploys as they start.
    #[arg(long, conflicts_with = "deploy")]
    follow: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn app(store: &Store, name: &str) -> anyhow::Result<App> {
    let app = AppRef::parse(name)?;
    store
        .db
        .app(&app)?
        .with_context(|| format!("no app {app}: create it with `buildgrid app create`"))
}

pub fn server(store: &Store, command: ServerCommand) -> anyhow::Result<()> {
    let runtime = runtime()?;
    match command {
        ServerCommand::Add {
            name,
            docker,
            tls_ca,
            tls_cert,
            tls_key,
            ssh_key,
        } => {
            let files = buildgrid_deploy::ServerFiles {
                tls_ca,
                tls_cert,
                tls_key,
                ssh_key,
            };
            let server =
                runtime.block_on(buildgrid_deploy::add_server(store, &name, &docker, &files))?;
            println!(
                "server {} added: Docker {} (API {})",
                server.name, server.engine_version, server.api_version
            );
        }
        ServerCommand::List => {
            let install = buildgrid_deploy::install(store)?;
            for server in store.db.servers()? {
                let state = runtime.block_on(async {
                    match buildgrid_deploy::engine(store, &server).await {
                        Ok(docker) => {
                            match buildgrid_deploy::labelled_containers(&docker, &install, None)
                                .await
                            {
                                Ok(containers) => format!(
                                    "reachable, {} containers of buildgrid{}",
                                    containers.len(),
                                    containers
                                        .iter()
                                        .map(|c| format!("\n    {} ({})", c.name, c.state))
                                        .collect::<String>()
                                ),
                                Err(error) => format!("reachable, cannot list containers: {error}"),
                            }
                        }
                        Err(error) => format!("unreachable: {error}"),
                    }
                });
                println!(
                    "{}\t{}\tDocker {}\t{state}",
                    server.name, server.docker_url, server.engine_version
                );
            }
        }
    }
    Ok(())
}

pub fn service(store: &Store, command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Add(args) => {
            let app = app(store, &args.app)?;
            let known: Vec<String> = store.db.servers()?.into_iter().map(|s| s.name).collect();
            for server in &args.servers {
                if !known.contains(server) {
                    bail!(
                        "no server {server}: add it with `buildgrid server add {server} --docker <url>`"
                    );
                }
            }
            let source = match &args.git_url {
                None => None,
                Some(git_url) => {
                    let new = NewSource {
                        image_repo: app.app.image_repo(git_url)?,
                        git_url: git_url.clone(),
                        branch: args.git_branch.clone(),
                        dockerfile: args.dockerfile.clone(),
                        context: args.context.clone(),
                    };
                    store.db.add_source(&app, &new)?
                }
            };
            let spec = ServiceSpec {
                command: args.command,
                ports: args
                    .ports
                    .iter()
                    .map(|p| spec::parse_port(p))
                    .collect::<Result<_, _>>()?,
                env: args
                    .env
                    .iter()
                    .map(|e| spec::parse_env(e))
                    .collect::<Result<_, _>>()?,
                secret_env: args
                    .secret_env
                    .iter()
                    .map(|e| spec::parse_env(e))
                    .collect::<Result<_, _>>()?,
                replicas: args.replicas,
                health: match (args.health_http, args.health_cmd, args.health_running) {
                    (Some(path), _, _) => Health::Http { path },
                    (None, Some(command), _) => Health::Command { command },
                    (None, None, seconds) => Health::Running {
                        seconds: seconds.unwrap_or(2),
                    },
                },
                health_timeout: args.health_timeout,
                stop_grace: args.stop_grace,
                servers: args.servers,
                network_host: args.network_host,
                source: source.as_ref().map(|s| s.image_repo.to_string()),
                publish: args.publish.map(|port| spec::Publish {
                    port,
                    host: args.host.as_deref().map(str::to_ascii_lowercase),
                }),
            };
            spec.validate()?;
            let mine = spec.host_ports();
            for other in store.db.services(app.id)? {
                if let Ok(other) = serde_json::from_str::<ServiceSpec>(&other.spec)
                    && other.host_ports().iter().any(|p| mine.contains(p))
                    && other.servers.iter().any(|s| spec.servers.contains(s))
                {
                    bail!(spec::SpecError::PortsOverlap);
                }
                if let Ok(other_spec) = serde_json::from_str::<ServiceSpec>(&other.spec)
                    && let (Some(theirs), Some(ours)) = (&other_spec.publish, &spec.publish)
                    && theirs == ours
                    && other_spec.servers.iter().any(|s| spec.servers.contains(s))
                {
                    bail!(
                        "service {} already publishes port {}{} on a server of this one",
                        other.name,
                        ours.port,
                        ours.host
                            .as_deref()
                            .map(|h| format!(" for {h}"))
                            .unwrap_or_default()
                    );
                }
            }
            store
                .db
                .add_service(app.id, &args.name, &serde_json::to_string(&spec)?)?;
            let image = source.as_ref().map_or(&app.image_repo, |s| &s.image_repo);
            println!(
                "service {} of {} added: {} replicas of {image}:<commit> on {}",
                args.name,
                app.app,
                spec.replicas,
                spec.servers.join(", ")
            );
            if let Some(source) = &source {
                println!(
                    "it runs {} ({}); build it with `buildgrid build {} --service {}`",
                    buildgrid_core::app::redact_url(&source.git_url),
                    source.branch,
                    app.app,
                    args.name
                );
            }
        }
        ServiceCommand::List { app: name } => {
            let app = app(store, &name)?;
            for service in store.db.services(app.id)? {
                let spec: ServiceSpec = serde_json::from_str(&service.spec)?;
                let env: Vec<String> = spec
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .chain(spec.secret_env.iter().map(|(k, _)| format!("{k}=***")))
                    .collect();
                println!(
                    "{}\timage {}\treplicas {}\tcommand {}\tports {}\tenv {}\tservers {}",
                    service.name,
                    spec.source.as_deref().unwrap_or(app.image_repo.as_str()),
                    spec.replicas,
                    spec.command.as_deref().unwrap_or("(image's)"),
                    spec.ports
                        .iter()
                        .map(|p| format!("{}:{}", p.host, p.container))
                        .collect::<Vec<_>>()
                        .join(","),
                    env.join(" "),
                    spec.servers.join(",")
                );
            }
        }
    }
    Ok(())
}

fn print_line(line: &DeployLine) {
    let place = [&line.server, &line.service, &line.container]
        .iter()
        .filter_map(|p| p.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    println!("{:>5} {} [{place}] {}", line.seq, line.stream, line.line);
}

pub fn deploy(store: &Store, args: DeployArgs) -> anyhow::Result<()> {
    let app = app(store, &args.app)?;
    let public_url = store
        .db
        .setting("public_url")?
        .context("buildgrid serve has not run on this data directory: engines pull from its registry, so start it first")?;
    let host = public_url
        .split_once("://")
        .map_or(public_url.as_str(), |(_, rest)| rest)
        .trim_end_matches('/')
        .to_owned();
    let trigger = if args.build.is_some() {
        "cli (chosen build)"
    } else {
        "cli"
    };
    let deploy = runtime()?.block_on(buildgrid_deploy::deploy(
        store,
        &app,
        args.build,
        &host,
        trigger,
        None,
        &print_line,
    ))?;
    if deploy.state != "succeeded" {
        bail!(
            "deploy {} failed: {}",
            deploy.id,
            deploy.reason.unwrap_or_default()
        );
    }
    Ok(())
}

pub fn logs(store: &Store, args: LogsArgs) -> anyhow::Result<()> {
    let app = app(store, &args.app)?;
    if args.follow {
        let filter = DeployLogFilter {
            server: args.server,
            service: args.service,
            container: args.container,
        };
        return runtime()?.block_on(follow(store, &app, &filter));
    }
    let deploy = match args.deploy {
        Some(id) => store
            .db
            .deploy(id)?
            .filter(|d| d.app_id == app.id)
            .with_context(|| format!("app {} has no deploy {id}", app.app))?,
        None => store
            .db
            .deploys_of_app(app.id, 1)?
            .into_iter()
            .next()
            .with_context(|| format!("app {} has not been deployed", app.app))?,
    };
    let filter = DeployLogFilter {
        server: args.server,
        service: args.service,
        container: args.container,
    };
    let mut after = 0;
    loop {
        let lines = store.db.deploy_log(deploy.id, after, &filter, 1000)?;
        let Some(last) = lines.last() else { break };
        after = last.seq;
        for line in &lines {
            print_line(line);
        }
    }
    Ok(())
}

/// Prints what the app's containers print, as it comes, with their server, service and name;
/// looks for new containers (of later deploys) every two seconds.
async fn follow(store: &Store, app: &App, filter: &DeployLogFilter) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let mut services = buildgrid_deploy::app_services(store, app.id)?;
    services.retain(|(name, _)| filter.service.as_ref().is_none_or(|f| f == name));
    if services.is_empty() {
        bail!("app {} has no such service", app.app);
    }
    let mut servers = buildgrid_deploy::servers_of(store, &services)?;
    servers.retain(|s| filter.server.as_ref().is_none_or(|f| *f == s.name));
    if servers.is_empty() {
        bail!("no server of app {} matches", app.app);
    }
    let (lines, mut printed) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut followed = std::collections::HashSet::new();
    let mut first = true;
    let name = app.app.to_string();
    let install = buildgrid_deploy::install(store)?;
    // One client per server, made again only after it failed.
    let mut engines = std::collections::HashMap::new();
    loop {
        for server in &servers {
            let docker = match engines.get(&server.name) {
                Some(docker) => docker,
                None => match buildgrid_deploy::engine(store, server).await {
                    Ok(docker) => engines.entry(server.name.clone()).or_insert(docker),
                    Err(error) => {
                        eprintln!("[{}] {error}", server.name);
                        continue;
                    }
                },
            };
            let containers =
                match buildgrid_deploy::labelled_containers(docker, &install, Some(&name)).await {
                    Ok(containers) => containers,
                    Err(error) => {
                        eprintln!("[{}] {error}", server.name);
                        engines.remove(&server.name);
                        continue;
                    }
                };
            for container in containers {
                let wanted = services.iter().any(|(s, _)| *s == container.service)
                    && filter
                        .container
                        .as_ref()
                        .is_none_or(|f| *f == container.name)
                    && container.state == "running";
                if !wanted || !followed.insert((server.name.clone(), container.name.clone())) {
                    continue;
                }
                let place = format!("{} {} {}", server.name, container.service, container.name);
                let secrets: Vec<String> = services
                    .iter()
                    .filter(|(s, _)| *s == container.service)
                    .flat_map(|(_, spec)| spec.secret_env.iter().map(|(_, v)| v.clone()))
                    .collect();
                // Containers of later deploys are followed from their start.
                let tail = first.then_some(10);
                let mut output =
                    buildgrid_deploy::container_output(docker, &container.name, tail, secrets);
                let lines = lines.clone();
                tokio::spawn(async move {
                    while let Some(text) = output.next().await {
                        let _ = lines.send(format!("[{place}] {text}"));
                    }
                });
            }
        }
        first = false;
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while let Ok(Some(line)) = tokio::time::timeout_at(until, printed.recv()).await {
            println!("{line}");
        }
    }
}

/// The source `service` of `app` builds from: `None` for the app's own repository.
pub fn service_source(store: &Store, app: &App, service: &str) -> anyhow::Result<Option<Source>> {
    let row = store
        .db
        .services(app.id)?
        .into_iter()
        .find(|s| s.name == service)
        .with_context(|| format!("app {} has no service {service}", app.app))?;
    let spec: ServiceSpec = serde_json::from_str(&row.spec)?;
    Ok(buildgrid_deploy::service_source(
        store, app, service, &spec,
    )?)
}
