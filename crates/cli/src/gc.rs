//! `buildgrid gc`, `retention` and `image pin|unpin`.

use anyhow::{Context, bail};
use buildgrid_builder::prune::{
    ByteSize, DEFAULT_ENGINE_CACHE_BUDGET, EnginePrune, PruneError, prune_engine,
};
use buildgrid_core::{AppRef, RepoName, Tag};
use buildgrid_store::gc::{Collection, GcOptions};
use buildgrid_store::{App, Retention, RetentionRule, Store};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct GcArgs {
    /// Print what a collection would delete, and storage per app and namespace; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Prune the Docker engine's build cache down to this size (bytes, or with K, M, G, KiB,
    /// MiB, GiB) [default: 20GiB; config: builds.engine_cache_budget].
    #[arg(long, env = "BUILDGRID_ENGINE_CACHE_BUDGET")]
    engine_cache_budget: Option<ByteSize>,
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Print the rules set per scope, and those in force for an app or namespace.
    Show {
        /// `<ns>/<app>` or `<ns>`; without it, every scope that has rules.
        scope: Option<String>,
    },
    /// Set rules of an app (`<ns>/<app>`), a namespace's default (`<ns>`) or, with
    /// `--server-wide`, the default of every namespace; values not given stay as they were.
    Set {
        /// `<ns>/<app>` or `<ns>`.
        scope: Option<String>,
        /// Set the server-wide default instead of an app's or namespace's.
        #[arg(long, conflicts_with = "scope")]
        server_wide: bool,
        /// Keep the newest N successful builds of each branch (default 20).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Keep builds that finished less than D days ago (default 0: off).
        #[arg(long)]
        keep_days: Option<u32>,
        /// Keep the K images each service ran before its current one, to roll back to
        /// (default 3).
        #[arg(long)]
        keep_deployed: Option<u32>,
        /// Stop keeping the builds of a branch deleted upstream (a push that deleted it) D days
        /// after its deletion; pinned and deployed ones stay (default 7; 0: at once).
        #[arg(long)]
        drop_deleted_after: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Keep the image `<ns>/<app>.<repo>:<tag>` names now, whatever retention says.
    Pin { image: String },
    /// Let retention decide about a pinned image again.
    Unpin { image: String },
    /// List pinned images.
    Pins,
}

pub fn gc(store: &Store, args: GcArgs, in_file: Option<ByteSize>) -> anyhow::Result<()> {
    let collection = store
        .gc(GcOptions {
            dry_run: args.dry_run,
            stop: None,
        })
        .context("garbage collection failed")?;
    print_collection(&collection, args.dry_run);
    let budget = args
        .engine_cache_budget
        .or(in_file)
        .unwrap_or(DEFAULT_ENGINE_CACHE_BUDGET);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(prune_engine(
        store,
        budget,
        args.dry_run,
        &collection.builds,
    )) {
        Ok(pruned) => print_engine_prune(&pruned, budget, args.dry_run),
        Err(PruneError::NoEngine(reason)) => {
            println!("engine: skipped, no Docker engine answers ({reason})");
        }
        Err(error) => return Err(error).context("cannot clean up the Docker engine"),
    }
    Ok(())
}

fn print_engine_prune(pruned: &EnginePrune, budget: ByteSize, dry_run: bool) {
    let verb = if dry_run { "would remove" } else { "removed" };
    for (build, name) in &pruned.tags {
        println!("engine tag {name} (build {build})");
    }
    for (name, reason) in &pruned.tags_left {
        println!("engine tag {name} kept for now: {reason}");
    }
    for id in &pruned.dangling {
        println!("engine untagged image {id}");
    }
    let used = match pruned.cache_used {
        Some(bytes) => format!("{bytes} bytes"),
        None => "size not reported".to_owned(),
    };
    println!(
        "engine: {verb} {} tags of collected builds and {} untagged images ({} images \
         deleted); build cache {used}, budget {budget}, {} bytes reclaimed",
        pruned.tags.len(),
        pruned.dangling.len(),
        pruned.images_deleted,
        pruned.cache_reclaimed
    );
}

fn print_collection(collection: &Collection, dry_run: bool) {
    let verb = if dry_run { "would delete" } else { "deleted" };
    if collection.pending_finished > 0 {
        println!(
            "finished an earlier collection: {} files",
            collection.pending_finished
        );
    }
    for tag in &collection.tags {
        println!("tag {tag}");
    }
    for manifest in &collection.manifests {
        println!("manifest {manifest}");
    }
    println!(
        "{verb} {} tags, {} manifests, {} blobs ({} bytes); {} builds' images removed",
        collection.tags.len(),
        collection.manifests.len(),
        collection.blobs,
        collection.bytes,
        collection.builds.len()
    );
    println!("storage (bytes)\tstored\tshared\treclaimable");
    for usage in &collection.usage {
        println!(
            "{}\t{}\t{}\t{}",
            buildgrid_core::escape_control(&usage.name),
            usage.stored,
            usage.shared,
            usage.reclaimable
        );
    }
}

/// A scope as stored: `<ns>/<app>` or `<ns>`, checked as names.
fn scope(text: &str) -> anyhow::Result<String> {
    if text.contains('/') {
        return Ok(AppRef::parse(text)?.to_string());
    }
    let app = AppRef::parse(&format!("{text}/x"))
        .with_context(|| format!("{text:?} is neither <ns>/<app> nor a namespace"))?;
    Ok(app.namespace().to_owned())
}

pub fn retention(store: &Store, command: RetentionCommand) -> anyhow::Result<()> {
    match command {
        RetentionCommand::Show { scope: None } => {
            let rules = store.db.retention_rules()?;
            let default = store.db.effective_retention("", None)?;
            println!("server-wide: {}", in_force(&default));
            for (scope, rule) in rules.iter().filter(|(s, _)| !s.is_empty()) {
                println!("{scope}: {}", describe(rule));
            }
        }
        RetentionCommand::Show { scope: Some(text) } => {
            let scope = scope(&text)?;
            let (namespace, app) = match scope.split_once('/') {
                Some((ns, app)) => (ns, Some(app)),
                None => (scope.as_str(), None),
            };
            let rule = store.db.retention_rule(&scope)?;
            let effective = store.db.effective_retention(namespace, app)?;
            println!("{scope}: {}", describe(&rule));
            println!("in force: {}", in_force(&effective));
            if app.is_some()
                && let Some(app) = store.db.app(&AppRef::parse(&scope)?)?
            {
                print_deleted_branches(store, &app, effective.drop_deleted_after)?;
            }
        }
        RetentionCommand::Set {
            scope: text,
            server_wide,
            keep_last,
            keep_days,
            keep_deployed,
            drop_deleted_after,
        } => {
            let scope = match (text, server_wide) {
                (Some(text), false) => scope(&text)?,
                (None, true) => String::new(),
                _ => bail!("give <ns>/<app>, <ns>, or --server-wide"),
            };
            let rule = RetentionRule {
                keep_last,
                keep_days,
                keep_deployed,
                drop_deleted_after,
            };
            if rule == RetentionRule::default() {
                bail!(
                    "give at least one of --keep-last, --keep-days, --keep-deployed and \
                     --drop-deleted-after"
                );
            }
            store.db.set_retention_rule(&scope, rule)?;
            let rule = store.db.retention_rule(&scope)?;
            let name = if scope.is_empty() {
                "server-wide"
            } else {
                &scope
            };
            println!("{name}: {}", describe(&rule));
        }
    }
    Ok(())
}

fn describe(rule: &RetentionRule) -> String {
    let value = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or("inherited".into());
    format!(
        "keep-last {}, keep-days {}, keep-deployed {}, drop-deleted-after {}",
        value(rule.keep_last),
        value(rule.keep_days),
        value(rule.keep_deployed),
        value(rule.drop_deleted_after)
    )
}

fn in_force(rule: &Retention) -> String {
    format!(
        "keep-last {}, keep-days {}, keep-deployed {}, drop-deleted-after {} days",
        rule.keep_last, rule.keep_days, rule.keep_deployed, rule.drop_deleted_after
    )
}

/// The app's branches deleted upstream and what retention does with their builds now.
fn print_deleted_branches(store: &Store, app: &App, drop_after_days: u32) -> anyhow::Result<()> {
    let now = buildgrid_store::now();
    for deleted in store.db.deleted_branches(app.id)? {
        let of = match deleted.source_id {
            Some(id) => match store.db.source(id)? {
                Some(source) => format!(" of {}", source.image_repo),
                None => format!(" of source {id}"),
            },
            None => String::new(),
        };
        let elapsed = now - deleted.deleted_at;
        let left = i64::from(drop_after_days) * 86_400 - elapsed;
        let fate = match left {
            ..=0 => "retention keeps only its pinned and deployed builds".to_owned(),
            left => format!(
                "retention keeps its builds {} more days",
                (left + 86_399) / 86_400
            ),
        };
        println!(
            "deleted branch {}{of}: deleted {} days ago; {fate}",
            buildgrid_core::escape_control(&deleted.branch),
            elapsed / 86_400
        );
    }
    Ok(())
}

/// `<ns>/<app>.<repo>:<tag>`.
fn image_ref(text: &str) -> anyhow::Result<(RepoName, Tag)> {
    let Some((repo, tag)) = text.rsplit_once(':') else {
        bail!("{text:?} names no tag: give <ns>/<app>.<repo>:<tag>");
    };
    Ok((RepoName::parse(repo)?, Tag::parse(tag)?))
}

pub fn image(store: &Store, command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Pin { image } => {
            let (repo, tag) = image_ref(&image)?;
            let Some(pin) = store.db.pin_image(&repo, &tag)? else {
                bail!("{repo}:{tag} names no stored image: check the name with the image page");
            };
            println!("pinned {}:{} ({})", pin.repo, pin.tag, pin.digest);
        }
        ImageCommand::Unpin { image } => {
            let (repo, tag) = image_ref(&image)?;
            if !store.db.unpin_image(&repo, &tag)? {
                bail!("{repo}:{tag} is not pinned: `buildgrid image pins` lists the pins");
            }
            println!("unpinned {repo}:{tag}");
        }
        ImageCommand::Pins => {
            for pin in store.db.pins()? {
                println!("{}:{}\t{}", pin.repo, pin.tag, pin.digest);
            }
        }
    }
    Ok(())
}

/// What `serve` does for collection: finishes a collection an earlier process left halfway
/// (tombstoned files), then, with `interval` (minutes), collects on a thread of its own, each
/// collection followed by the Docker engine's clean-up (`engine_cache_budget`: its build
/// cache's budget).
pub fn start(
    store: &std::sync::Arc<Store>,
    interval: Option<u64>,
    engine_cache_budget: ByteSize,
) -> anyhow::Result<()> {
    let finished = store
        .finish_pending_collection()
        .context("cannot finish the garbage collection the last process left")?;
    if finished > 0 {
        tracing::info!(files = finished, "finished an earlier garbage collection");
    }
    let Some(minutes) = interval else {
        return Ok(());
    };
    let store = store.clone();
    // The series exist from the start, so a scrape before the first run reads 0.
    for outcome in ["done", "failed"] {
        metrics::counter!("buildgrid_gc_runs_total", "outcome" => outcome).absolute(0);
    }
    for kind in ["manifests", "blobs", "bytes"] {
        metrics::counter!("buildgrid_gc_deleted_total", "kind" => kind).absolute(0);
    }
    std::thread::Builder::new()
        .name("gc".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => Some(runtime),
                Err(error) => {
                    tracing::error!(%error, "cannot start the runtime of the engine's clean-up");
                    None
                }
            };
            loop {
                std::thread::sleep(std::time::Duration::from_secs(minutes * 60));
                match store.gc(GcOptions::default()) {
                    Ok(collection) => {
                        metrics::counter!("buildgrid_gc_runs_total", "outcome" => "done")
                            .increment(1);
                        for (kind, count) in [
                            ("manifests", collection.manifests.len() as u64),
                            ("blobs", collection.blobs),
                            ("bytes", collection.bytes),
                        ] {
                            metrics::counter!("buildgrid_gc_deleted_total", "kind" => kind)
                                .increment(count);
                        }
                        tracing::info!(
                            manifests = collection.manifests.len(),
                            blobs = collection.blobs,
                            bytes = collection.bytes,
                            "garbage collection done"
                        );
                        if let Some(runtime) = &runtime {
                            let pruned = runtime.block_on(prune_engine(
                                &store,
                                engine_cache_budget,
                                false,
                                &[],
                            ));
                            log_engine_prune(pruned);
                        }
                    }
                    Err(error) => {
                        metrics::counter!("buildgrid_gc_runs_total", "outcome" => "failed")
                            .increment(1);
                        tracing::error!(error = %anyhow::Error::from(error), "garbage collection failed");
                    }
                }
            }
        })
        .context("cannot start the garbage collection thread")?;
    Ok(())
}

fn log_engine_prune(pruned: Result<EnginePrune, PruneError>) {
    match pruned {
        Ok(pruned) => tracing::info!(
            tags = pruned.tags.len(),
            tags_left = pruned.tags_left.len(),
            untagged_images = pruned.dangling.len(),
            images_deleted = pruned.images_deleted,
            cache_reclaimed = pruned.cache_reclaimed,
            "the Docker engine cleaned up after garbage collection"
        ),
        Err(PruneError::NoEngine(reason)) => {
            tracing::info!(%reason, "no Docker engine answers: its clean-up is skipped");
        }
        Err(error) => {
            tracing::error!(error = %anyhow::Error::from(error), "cannot clean up the Docker engine");
        }
    }
}
