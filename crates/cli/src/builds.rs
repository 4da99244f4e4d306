//! Apps and builds from the command line. These work on the data directory; a running
//! `buildgrid serve` picks queued builds up.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use buildgrid_core::AppRef;
use buildgrid_store::{BuildState, NewApp, NewBuild, Queued, Store};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register an app: where its code is and how to build it.
    Create {
        /// `<namespace>/<app>`, e.g. `acme/shop`.
        app: String,
        /// The git URL to fetch (its host and path name the images).
        #[arg(long)]
        git: String,
        /// The branch whose pushes build.
        #[arg(long, default_value = "main")]
        branch: String,
        /// The Dockerfile, relative to the repository root.
        #[arg(long, default_value = "Dockerfile")]
        dockerfile: String,
        /// The build context directory, relative to the repository root.
        #[arg(long, default_value = ".")]
        context: String,
        /// A build argument, `KEY=VALUE`; repeat for more.
        #[arg(long = "build-arg", value_name = "KEY=VALUE")]
        build_args: Vec<String>,
        /// The secret webhooks are signed with, at least 16 bytes (default: a new random one,
        /// printed once).
        #[arg(long, env = "BUILDGRID_WEBHOOK_SECRET")]
        webhook_secret: Option<String>,
    },
    /// List the apps.
    List,
    /// Turn deploys after each successful build of the app's branch on (the default) or off.
    AutoDeploy {
        /// `<namespace>/<app>`.
        app: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Args)]
pub struct BuildArgs {
    /// `<namespace>/<app>`.
    app: String,
    /// A branch, tag or commit id (default: the app's branch).
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// Build the repository this service runs from (when it has its own) instead of the app's.
    #[arg(long)]
    service: Option<String>,
    /// Build even if this commit was built before.
    #[arg(long)]
    force: bool,
    /// Follow the log and wait for the end: exits non-zero unless the build succeeds.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
pub struct BuildLogArgs {
    /// The build's number.
    id: i64,
    /// Keep printing until the build ends; exits non-zero unless it succeeds.
    #[arg(long)]
    follow: bool,
}

#[derive(Subcommand)]
pub enum HookCommand {
    /// Reads `<old> <new> <ref>` lines from git and queues builds.
    PostReceive {
        #[arg(long)]
        app: String,
    },
}

pub fn app(store: &Store, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Create {
            app,
            git,
            branch,
            dockerfile,
            context,
            build_args,
            webhook_secret,
        } => {
            let app = AppRef::parse(&app)?;
            let image_repo = app.image_repo(&git)?;
            let mut args = BTreeMap::new();
            for pair in build_args {
                let Some((key, value)) = pair.split_once('=') else {
                    bail!("--build-arg {pair:?} must be KEY=VALUE");
                };
                args.insert(key.to_owned(), value.to_owned());
            }
            if !buildgrid_builder::fetch::is_valid_branch(&branch) {
                bail!("--branch {branch:?} is not a valid branch name");
            }
            if let Some(secret) = &webhook_secret {
                buildgrid_core::app::check_webhook_secret(secret)?;
            }
            let generated = webhook_secret.is_none();
            let secret = webhook_secret.unwrap_or_else(buildgrid_access::secret::random_hex::<32>);
            let created = store.db.create_app(&NewApp {
                app: app.clone(),
                git_url: git,
                branch,
                dockerfile,
                context,
                build_args: args,
                image_repo,
                webhook_secret: secret.clone(),
            })?;
            println!("app {} created", created.app);
            println!("images: {}:<commit>", created.image_repo);
            println!(
                "git push to: <buildgrid URL>/git/{}.git (branch {})",
                created.app, created.branch
            );
            println!(
                "webhooks: <buildgrid URL>/hooks/github|gitea|gitlab/{}",
                created.app
            );
            if generated {
                println!("webhook secret (shown once): {secret}");
            }
            Ok(())
        }
        AppCommand::AutoDeploy { app, state } => {
            let app = AppRef::parse(&app)?;
            if store.db.app(&app)?.is_none() {
                bail!("no app {app}");
            }
            store
                .db
                .set_setting(&crate::auto_deploy::setting_key(&app.to_string()), &state)?;
            println!("deploys after builds of {app}: {state}");
            Ok(())
        }
        AppCommand::List => {
            for app in store.db.apps()? {
                println!(
                    "{}\t{}\t{}\t{}",
                    app.app,
                    app.branch,
                    app.image_repo,
                    buildgrid_core::app::redact_url(&app.git_url)
                );
            }
            Ok(())
        }
    }
}

pub fn build(store: &Store, args: BuildArgs) -> anyhow::Result<()> {
    let app_ref = AppRef::parse(&args.app)?;
    let Some(app) = store.db.app(&app_ref)? else {
        bail!("no app {app_ref}: create it with `buildgrid app create {app_ref} --git <url>`");
    };
    let source = match &args.service {
        None => None,
        Some(service) => crate::deploys::service_source(store, &app, service)?,
    };
    let branch = source.as_ref().map_or(&app.branch, |s| &s.branch);
    let git_ref = args.git_ref.unwrap_or_else(|| branch.clone());
    let is_commit = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
    let new = NewBuild {
        app_id: app.id,
        commit_id: is_commit.then(|| git_ref.to_ascii_lowercase()),
        git_ref,
        trigger: "cli".into(),
        force: args.force,
    };
    let queued = store
        .db
        .enqueue_source_build(&new, source.as_ref().map(|s| s.id))?;
    match queued {
        Queued::New(id) => eprintln!("build {id} queued"),
        Queued::Existing(id) => eprintln!("that commit is built by build {id} already"),
    }
    if args.wait {
        follow(store, queued.id())
    } else {
        println!("{}", queued.id());
        Ok(())
    }
}

pub fn build_log(store: &Store, args: BuildLogArgs) -> anyhow::Result<()> {
    if args.follow {
        return follow(store, args.id);
    }
    if store.db.build(args.id)?.is_none() {
        bail!("no build {}", args.id);
    }
    let mut out = std::io::stdout().lock();
    let mut after = 0;
    loop {
        let lines = store.db.log_lines(args.id, after, 10_000)?;
        let Some(last) = lines.last() else { break };
        after = last.seq;
        for line in lines {
            writeln!(out, "{}", line.line)?;
        }
    }
    Ok(())
}

/// Prints the log as it grows until the build ends; fails unless it succeeded. A build skipped
/// because another build does its work (the same commit, or a newer build of the same branch)
/// hands over to that build, which is followed in its place.
fn follow(store: &Store, id: i64) -> anyhow::Result<()> {
    use buildgrid_builder::follow::{Follow, HandOver, Seen};
    let how = Follow {
        quiet: Duration::from_secs(10),
        hand_over: HandOver::SameCommitOrNewer,
    };
    let mut hinted = false;
    let mut out = std::io::stdout().lock();
    let build = buildgrid_builder::follow::follow(store, id, how, |seen| {
        match seen {
            Seen::Line(line) => writeln!(out, "{}", line.line)?,
            Seen::HandedOver { skipped, to } => {
                out.flush()?;
                eprintln!(
                    "build {} skipped ({}): following build {to}",
                    skipped.id,
                    skipped.reason.as_deref().unwrap_or_default()
                );
            }
            Seen::Quiet { build, .. } => {
                if build.state == BuildState::Queued && !hinted {
                    hinted = true;
                    eprintln!(
                        "build {} is still queued: is `buildgrid serve` running on this data directory?",
                        build.id
                    );
                }
            }
        }
        // Line by line, as the build writes them.
        out.flush()
    })?;
    match build.state {
        BuildState::Succeeded => {
            writeln!(out, "{}", build.image_ref.unwrap_or_default())?;
            Ok(())
        }
        state => bail!(
            "build {} {state}: {}",
            build.id,
            build.reason.unwrap_or_default()
        ),
    }
}

pub fn cancel(store: &Store, id: i64) -> anyhow::Result<()> {
    if let Some(build) = store.db.build(id)?
        && build.state.is_finished()
    {
        bail!("build {id} has ended already ({})", build.state);
    }
    match store.db.request_cancel(id)? {
        None => bail!("no build {id}"),
        Some(BuildState::Cancelled) => println!("build {id} cancelled"),
        Some(BuildState::Storing) => {
            bail!("build {id} is storing its image and can no longer be cancelled")
        }
        Some(state) if state.is_finished() => bail!("build {id} has ended already ({state})"),
        Some(_) => println!("build {id} is being stopped"),
    }
    Ok(())
}

pub fn hook(store: &Store, command: HookCommand) -> anyhow::Result<()> {
    match command {
        HookCommand::PostReceive { app } => {
            let app = AppRef::parse(&app)?;
            let public_url =
                std::env::var("BUILDGRID_PUBLIC_URL").unwrap_or_else(|_| "<buildgrid URL>".into());
            // The push's HTTP request, as the server handed it to git.
            let request = std::env::var("BUILDGRID_REQUEST_ID")
                .ok()
                .and_then(|id| buildgrid_core::RequestId::parse(&id));
            let options = buildgrid_builder::hooks::PushOptions::from_env();
            let printed = buildgrid_builder::hooks::post_receive(
                store,
                &app,
                &public_url,
                request.as_ref(),
                &options,
                std::io::stdin().lock(),
                std::io::stdout().lock(),
            );
            match printed {
                // The pusher stopped waiting (an interrupted `git push`): the build goes on.
                Err(buildgrid_builder::follow::FollowError::Write(_)) => Ok(()),
                result => result.map(drop).map_err(Into::into),
            }
        }
    }
}
