//! Servers, services, deploys and deploy logs from the command line. `buildgrid deploy` runs the
//! deploy in this process and follows it; the engines pull from the registry of the running
//! `buildgrid serve` (whose address it records in the data directory).

use anyhow::{Context, bail};
use buildgrid_core::AppRef;
use buildgrid_deploy::spec::{self, Health, ServiceSpec};
use buildgrid_store::{App, DeployLine, DeployLogFilter, Store};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Register a Docker engine; it must answer.
    Add {
        name: String,
        /// `unix:///var/run/docker.sock` or `tcp://host:2375`.
        #[arg(long)]
        docker: String,
    },
    /// List servers, whether they answer, and the containers buildgrid runs there.
    List,
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Add a service to an app: what runs of the app's image, where and how many.
    Add(ServiceArgs),
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
    /// `KEY=VALUE`; repeat for more.
    #[arg(long = "env")]
    env: Vec<String>,
    /// `KEY=VALUE` kept secret: shown masked, never written to a log.
    #[arg(long = "secret-env")]
    secret_env: Vec<String>,
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Healthy when `GET <path>` on the first published port answers 2xx or 3xx.
    #[arg(long, conflicts_with = "health_running")]
    health_http: Option<String>,
    /// Healthy when still running this many seconds after start (the default, 2 s).
    #[arg(long)]
    health_running: Option<u64>,
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
        ServerCommand::Add { name, docker } => {
            let server = runtime.block_on(buildgrid_deploy::add_server(store, &name, &docker))?;
            println!(
                "server {} added: Docker {} (API {})",
                server.name, server.engine_version, server.api_version
            );
        }
        ServerCommand::List => {
            for server in store.db.servers()? {
                let state = runtime.block_on(async {
                    match buildgrid_deploy::engine(&server.docker_url).await {
                        Ok(docker) => {
                            match buildgrid_deploy::labelled_containers(&docker, None).await {
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
                health: match (args.health_http, args.health_running) {
                    (Some(path), _) => Health::Http { path },
                    (None, seconds) => Health::Running {
                        seconds: seconds.unwrap_or(2),
                    },
                },
                stop_grace: args.stop_grace,
                servers: args.servers,
                network_host: args.network_host,
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
            }
            store
                .db
                .add_service(app.id, &args.name, &serde_json::to_string(&spec)?)?;
            println!(
                "service {} of {} added: {} replicas of {}:<commit> on {}",
                args.name,
                app.app,
                spec.replicas,
                app.image_repo,
                spec.servers.join(", ")
            );
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
                    "{}\treplicas {}\tcommand {}\tports {}\tenv {}\tservers {}",
                    service.name,
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
