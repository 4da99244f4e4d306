//! The `buildgrid` command. It parses arguments and wires the library crates together.

mod serve;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use buildgrid_core::{RepoName, Tag};
use buildgrid_store::Store;
use clap::{Parser, Subcommand};

/// A self-hosted build-output registry with an integrated builder.
#[derive(Parser)]
#[command(name = "buildgrid", version)]
struct Cli {
    /// The data directory: blobs and the metadata database.
    #[arg(
        long,
        global = true,
        env = "BUILDGRID_DATA",
        default_value = "buildgrid-data"
    )]
    data: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "BUILDGRID_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry and the web pages on one address.
    Serve {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, env = "BUILDGRID_LISTEN", default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// HTTP worker threads (default: one per core).
        #[arg(long, env = "BUILDGRID_WORKERS")]
        workers: Option<usize>,
    },
    /// Store an image from an archive written by `docker save` or an OCI archive. This is an
    /// administrator's seeding tool that needs the data directory, not a push.
    Import {
        /// The archive (`docker save -o x.tar`, or `skopeo copy … oci-archive:x.tar`).
        archive: PathBuf,
        /// Repository name, e.g. `acme/shop.github-com-acme-shop`.
        #[arg(long)]
        repo: String,
        /// Tag to give the image.
        #[arg(long)]
        tag: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_json);
    match cli.command {
        Command::Serve { listen, workers } => serve::run(&cli.data, listen, workers),
        Command::Import { archive, repo, tag } => {
            let repo = RepoName::parse(&repo)?;
            let tag = Tag::parse(&tag)?;
            let store = Store::open(&cli.data).with_context(|| {
                format!("cannot open the data directory {}", cli.data.display())
            })?;
            let report = buildgrid_store::ingest::import_archive(&store, &archive, &repo, &tag)
                .with_context(|| format!("import of {} failed", archive.display()))?;
            println!("{}:{} {}", report.repo, report.tag, report.digest);
            println!(
                "platforms: {}; layers: {} compressed, {} reused, {} copied",
                report.platforms.join(", "),
                report.layers_compressed,
                report.layers_reused,
                report.layers_copied
            );
            Ok(())
        }
    }
}
