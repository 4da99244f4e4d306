//! The `buildgrid` command. It parses arguments and wires the library crates together.

mod access;
mod auto_deploy;
mod backup;
mod builds;
mod config;
mod deploys;
mod gc;
mod metrics;
mod proxy;
mod request_log;
mod serve;
mod store;
mod telemetry;

use std::path::{Path, PathBuf};

use anyhow::Context;
use buildgrid_core::{RepoName, Tag};
use buildgrid_store::Store;
use clap::{Parser, Subcommand};

/// A self-hosted build-output registry with an integrated builder.
#[derive(Parser)]
#[command(name = "buildgrid", version)]
struct Cli {
    /// The settings file (TOML): every setting of `serve`, and `data`; a variable or flag
    /// overrides it. `buildgrid config check` prints the effective settings.
    #[arg(long, global = true, env = "BUILDGRID_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory: blobs, git repositories and the metadata database [default:
    /// buildgrid-data; env: BUILDGRID_DATA; config: data].
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Keep blobs in an S3-compatible object store, `s3://<bucket>[/<prefix>]`, rather than in
    /// the data directory; endpoint, region and credentials come from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY [env: BUILDGRID_BLOB_STORE;
    /// config: blob_store].
    #[arg(long, global = true)]
    blob_store: Option<String>,
    /// Log as JSON lines instead of text [env: BUILDGRID_LOG_JSON; config: log.json].
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry, the web pages, git pushes, webhooks and builds on one address.
    Serve(serve::ServeArgs),
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
    /// Register and list apps.
    #[command(subcommand)]
    App(builds::AppCommand),
    /// Queue a build of an app (by default its branch's newest commit).
    Build(builds::BuildArgs),
    /// Print a build's log; `--follow` waits for the build to end.
    BuildLog(builds::BuildLogArgs),
    /// Stop a queued or running build.
    Cancel {
        /// The build's number.
        id: i64,
    },
    /// Manage users, their web passwords and registry credentials.
    #[command(subcommand)]
    User(access::UserCommand),
    /// Make namespaces public or private and manage their members.
    #[command(subcommand)]
    Namespace(access::NamespaceCommand),
    /// Manage API tokens (for `docker login`, `git push` to buildgrid and the build API).
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Print the newest audit log entries: pulls of private images, sign-ins, changes of access.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Register Docker engines to deploy to, and list them.
    #[command(subcommand)]
    Server(deploys::ServerCommand),
    /// Add and list the services of an app.
    #[command(subcommand)]
    Service(deploys::ServiceCommand),
    /// Deploy an app's build to its services' servers and follow it (an earlier build rolls back).
    Deploy(deploys::DeployArgs),
    /// Print a deploy's log, filtered by server, service and container.
    Logs(deploys::LogsArgs),
    /// Copy the data directory consistently while it serves: the database (an online
    /// snapshot), the blobs it lists, git repositories, servers' keys and the key of secrets.
    Backup(backup::BackupArgs),
    /// Bring a backup back into a new or empty data directory (`--data`).
    Restore(backup::RestoreArgs),
    /// Check the store both ways: every blob row's file is there with its size and digest,
    /// every blob file has a row, every manifest's blobs are stored; exits 1 on any problem.
    Fsck,
    /// Delete the images retention does not keep, with their tags and the blobs no kept image
    /// uses; `--dry-run` lists what would go and storage per app and namespace.
    Gc(gc::GcArgs),
    /// Show and set how long builds' images stay (per app, namespace, server-wide).
    #[command(subcommand)]
    Retention(gc::RetentionCommand),
    /// Pin images so that retention never removes them.
    #[command(subcommand)]
    Image(gc::ImageCommand),
    /// Check the settings file and print the effective settings (secrets masked).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Move the blobs between the data directory and an object store.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// The proxy that gives a service a fixed address on a server, and changes of its routes.
    #[command(subcommand)]
    Proxy(proxy::ProxyCommand),
    /// Called by git hooks of the apps' repositories.
    #[command(subcommand, hide = true)]
    Hook(builds::HookCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print `serve`'s effective settings and where each comes from; fails on an unknown key.
    Check(serve::ServeArgs),
}

/// Opens the data directory, with its blobs in the object store at `blob_store` when given
/// (checked first: a store that does not answer, refuses the credentials or lacks the bucket
/// is one line, before anything else happens).
pub(crate) fn open_store(data: &Path, blob_store: Option<&str>) -> anyhow::Result<Store> {
    let backend = match blob_store {
        None => None,
        Some(url) => Some(store::connect(url)?),
    };
    let key = std::env::var(buildgrid_store::secrets::KEY_ENV).ok();
    Store::open_with(data, key, backend)
        .with_context(|| format!("cannot open the data directory {}", data.display()))
}

fn main() -> anyhow::Result<()> {
    // Everything this process and its subprocesses (git) create is private to its user.
    buildgrid_store::keep_new_files_private();
    let cli = Cli::parse();
    let config = config::Config::load(cli.config.as_deref())?;
    let mut shown = Vec::new();
    let data = config.data(cli.data, &mut shown)?;
    let blob_store = config.blob_store(cli.blob_store, &mut shown)?;
    telemetry::init(config.log_json(cli.log_json, &mut shown)?);
    let open = || open_store(&data, blob_store.as_deref());
    match cli.command {
        Command::Serve(args) => serve::run(
            &data,
            blob_store.as_deref(),
            config.serve(args, &mut shown)?,
        ),
        Command::Store(command) => store::run(&open()?, command),
        Command::Proxy(command) => proxy::run(command),
        Command::Config(ConfigCommand::Check(args)) => {
            config.serve(args, &mut shown)?;
            print!("{}", config::render(&config, &shown));
            Ok(())
        }
        Command::Import { archive, repo, tag } => {
            let repo = RepoName::parse(&repo)?;
            let tag = Tag::parse(&tag)?;
            let store = open()?;
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
        Command::App(command) => builds::app(&open()?, command),
        Command::Build(args) => builds::build(&open()?, args),
        Command::BuildLog(args) => builds::build_log(&open()?, args),
        Command::Cancel { id } => builds::cancel(&open()?, id),
        Command::User(command) => access::user(&open()?, command),
        Command::Namespace(command) => access::namespace(&open()?, command),
        Command::Token(command) => access::token(&open()?, command),
        Command::Audit { limit } => access::audit(&open()?, limit),
        Command::Server(command) => deploys::server(&open()?, command),
        Command::Service(command) => deploys::service(&open()?, command),
        Command::Deploy(args) => deploys::deploy(&open()?, args),
        Command::Logs(args) => deploys::logs(&open()?, args),
        Command::Hook(command) => builds::hook(&open()?, command),
        Command::Backup(args) => backup::backup(&open()?, args),
        Command::Restore(args) => backup::restore(&data, args),
        Command::Fsck => backup::fsck(&data, open),
        Command::Gc(args) => gc::gc(&open()?, args, config.engine_cache_budget_in_file()),
        Command::Retention(command) => gc::retention(&open()?, command),
        Command::Image(command) => gc::image(&open()?, command),
    }
}
