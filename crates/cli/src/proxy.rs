//! `buildgrid proxy`: the proxy that gives each service a fixed address on a server, and the
//! commands a deploy runs against it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use buildgrid_proxy::control::{self, Command, HealthCheck, Reply};
use buildgrid_proxy::table::Route;
use buildgrid_proxy::{Proxy, Settings};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ProxyCommand {
    /// Run the proxy: listen on the ports of its routes and take changes on its control socket.
    Run {
        #[command(flatten)]
        state: StateArg,
        /// The address the published ports listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: IpAddr,
        /// Seconds open requests get to finish when the proxy is asked to stop.
        #[arg(long, default_value_t = 30)]
        grace: u64,
    },
    /// Switch a route to new replicas once every one of them answers its health check, then
    /// wait until the replicas it replaced have answered their last request.
    Deploy {
        #[command(flatten)]
        state: StateArg,
        /// The published port.
        #[arg(long)]
        port: u16,
        /// Route only requests for this host name (any host name when not given).
        #[arg(long, default_value = "")]
        host: String,
        /// The service's name, shown in the proxy's answers.
        #[arg(long)]
        service: String,
        /// A replica's address, `IP:PORT`; repeat for each replica.
        #[arg(long = "target", required = true)]
        targets: Vec<SocketAddr>,
        /// `GET <path>` must answer 2xx or 3xx on every replica before the switch.
        #[arg(long)]
        health_path: Option<String>,
        /// Seconds each replica has to pass its health check.
        #[arg(long, default_value_t = 30)]
        health_timeout: u64,
        /// Seconds the replaced replicas' open requests get before the command returns.
        #[arg(long, default_value_t = 30)]
        drain_timeout: u64,
    },
    /// Stop routing a port (and host name), once its open requests have ended.
    Remove {
        #[command(flatten)]
        state: StateArg,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "")]
        host: String,
        #[arg(long, default_value_t = 30)]
        drain_timeout: u64,
    },
    /// Print the routes in force.
    Routes {
        #[command(flatten)]
        state: StateArg,
    },
}

#[derive(clap::Args)]
pub struct StateArg {
    /// The proxy's state directory: its routes and its control socket.
    #[arg(long = "state", default_value = "/var/lib/buildgrid-proxy")]
    dir: PathBuf,
}

pub fn run(command: ProxyCommand) -> anyhow::Result<()> {
    // Requests are served on the proxy's own threads; this runtime has the control socket,
    // health checks and signals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            ProxyCommand::Run { state, bind, grace } => serve(state.dir, bind, grace).await,
            ProxyCommand::Deploy {
                state,
                port,
                host,
                service,
                targets,
                health_path,
                health_timeout,
                drain_timeout,
            } => {
                let health = health_path.map(|path| HealthCheck {
                    path,
                    timeout_ms: health_timeout * 1000,
                });
                let command = Command::Deploy {
                    route: Route {
                        port,
                        host,
                        service: service.clone(),
                        targets: targets.clone(),
                    },
                    health,
                    drain_ms: drain_timeout * 1000,
                };
                let Reply::Done(report) = control::send(&state.dir, &command).await? else {
                    anyhow::bail!("the proxy answered something else than a deploy's report");
                };
                println!(
                    "{service} on port {port}: switched to {} after {} ms of health checks",
                    list(&targets),
                    report.healthy_ms
                );
                print_drain(&report, drain_timeout);
                Ok(())
            }
            ProxyCommand::Remove {
                state,
                port,
                host,
                drain_timeout,
            } => {
                let command = Command::Remove {
                    port,
                    host,
                    drain_ms: drain_timeout * 1000,
                };
                let Reply::Done(report) = control::send(&state.dir, &command).await? else {
                    anyhow::bail!("the proxy answered something else than a removal's report");
                };
                println!("route on port {port} removed");
                print_drain(&report, drain_timeout);
                Ok(())
            }
            ProxyCommand::Routes { state } => {
                let Reply::Routes { routes } = control::send(&state.dir, &Command::Routes).await?
                else {
                    anyhow::bail!("the proxy answered something else than its routes");
                };
                for route in routes {
                    let host = if route.host.is_empty() {
                        "*"
                    } else {
                        &route.host
                    };
                    println!(
                        "{}\t{host}\t{}\t{}",
                        route.port,
                        route.service,
                        list(&route.targets)
                    );
                }
                Ok(())
            }
        }
    })
}

async fn serve(state: PathBuf, bind: IpAddr, grace: u64) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxy = Proxy::start(Settings {
        state: state.clone(),
        bind,
        workers,
    })
    .await?;
    proxy.serve_control()?;
    println!(
        "buildgrid proxy: {} route(s) on port(s) {:?}; control socket {}",
        proxy.routes().len(),
        proxy.ports(),
        buildgrid_proxy::control_socket(&state).display()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: open requests get {grace} s");
    proxy.stop(Duration::from_secs(grace)).await;
    Ok(())
}

fn print_drain(report: &control::DeployReport, timeout: u64) {
    if report.previous.is_empty() {
        return;
    }
    if report.drained {
        println!(
            "the replaced replicas {} answered their last request {} ms after the switch",
            list(&report.previous),
            report.drained_ms
        );
    } else {
        println!(
            "the replaced replicas {} still had open requests after {timeout} s",
            list(&report.previous)
        );
    }
}

fn list(targets: &[SocketAddr]) -> String {
    targets
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
