//! Build workers: claim a queued build, fetch, build through the Docker engine, store the
//! image. Every state change and log line goes to the store as it happens.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use buildgrid_core::app::{commit_tag, redact_url};
use buildgrid_store::{App, Build, BuildState, LEASE_RENEW_EVERY, Lease, Store};
use futures_util::StreamExt;

use crate::Builder;
use crate::build_log::Log;
use crate::context::write_context;
use crate::dockerfile;
use crate::export;
use crate::fetch;
use crate::isolation;
use crate::pull_token::PullToken;

/// How a build ended, short of failing.
enum Outcome {
    Succeeded {
        image_ref: String,
        digest: buildgrid_core::Digest,
    },
    Skipped(String),
}

/// Why a build did not succeed.
pub(crate) enum Stop {
    Failed(String),
    Cancelled,
}

impl<E: std::fmt::Display> From<E> for Stop {
    fn from(error: E) -> Stop {
        Stop::Failed(error.to_string())
    }
}

pub(crate) async fn worker(builder: Arc<Builder>) {
    loop {
        if builder.is_stopping() {
            return;
        }
        // Registered before looking at the queue, so a build queued meanwhile wakes us.
        let notified = builder.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let store = builder.store.clone();
        let claimed = tokio::task::spawn_blocking(move || store.db.claim_next_build()).await;
        match claimed {
            Ok(Ok(Some(build))) => run(&builder, build).await,
            Ok(Ok(None)) => {
                // Builds queued by another process (the CLI) wake nobody: look again soon.
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_millis(500), notified) => {}
                    _ = builder.stopped() => return,
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the build queue");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(error) => {
                tracing::error!(%error, "the build queue task failed");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[tracing::instrument(skip_all, fields(build = build.id))]
async fn run(builder: &Builder, build: Build) {
    let store = builder.store.clone();
    let last_seq = store.db.last_log_seq(build.id).unwrap_or(0);
    let mut log = Log::start(store.clone(), build.id, last_seq);
    let started = std::time::Instant::now();
    // The build's lease (taken with the claim) is renewed until it is recorded as ended, by a
    // task of its own.
    let _renewal = RenewLease(tokio::spawn(renew_lease(store.clone(), build.id)));
    // A stopping process ends the build here: dropping the pipeline drops the engine's build
    // stream, which stops the engine's build.
    let result = tokio::select! {
        result = pipeline(builder, &build, &mut log) => result,
        reason = builder.stopped() => Err(Stop::Failed(reason)),
    };
    let result = match result {
        Err(Stop::Failed(reason)) => Err(Stop::Failed(with_disk_hint(reason, store.root()))),
        other => other,
    };
    let outcome = match &result {
        Ok(Outcome::Succeeded { .. }) => "succeeded",
        Ok(Outcome::Skipped(_)) => "skipped",
        Err(Stop::Cancelled) => "cancelled",
        Err(Stop::Failed(_)) => "failed",
    };
    metrics::counter!("buildgrid_builds_total", "outcome" => outcome).increment(1);
    metrics::histogram!("buildgrid_build_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    let ending = match &result {
        Ok(Outcome::Succeeded { image_ref, digest }) => {
            vec![format!("image: {image_ref}"), format!("digest: {digest}")]
        }
        Ok(Outcome::Skipped(reason)) => vec![format!("skipped: {reason}")],
        Err(Stop::Cancelled) => vec!["build cancelled".to_owned()],
        Err(Stop::Failed(reason)) => vec![format!("build failed: {reason}")],
    };
    for line in &ending {
        log.line(None, line);
    }
    // Every line is stored before the build is seen to end.
    log.close().await;
    let finished = match result {
        Ok(Outcome::Succeeded { image_ref, digest }) => store
            .db
            .finish_build(
                build.id,
                BuildState::Succeeded,
                None,
                Some((&image_ref, &digest)),
            )
            .map(|()| builder.succeeded(build.id)),
        Ok(Outcome::Skipped(reason)) => {
            store
                .db
                .finish_build(build.id, BuildState::Skipped, Some(&reason), None)
        }
        Err(Stop::Cancelled) => {
            store
                .db
                .finish_build(build.id, BuildState::Cancelled, Some("cancelled"), None)
        }
        Err(Stop::Failed(reason)) => {
            store
                .db
                .finish_build(build.id, BuildState::Failed, Some(&reason), None)
        }
    };
    if let Err(error) = finished {
        tracing::error!(%error, "cannot record the end of a build");
    }
}

/// Renews build `id`'s lease every [`LEASE_RENEW_EVERY`] until aborted.
async fn renew_lease(store: Arc<Store>, id: i64) {
    let lease = Lease::this_process();
    let mut ticks = tokio::time::interval(LEASE_RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match store.db.renew_build_lease(id, &lease) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    build = id,
                    "the build's lease was lost: it no longer runs here"
                );
                return;
            }
            Err(error) => tracing::error!(%error, build = id, "cannot renew the build's lease"),
        }
    }
}

/// Stops renewing a build's lease when dropped.
struct RenewLease(tokio::task::JoinHandle<()>);

impl Drop for RenewLease {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A failure that came from a full disk under the data directory (an I/O error of buildgrid's
/// own, or SQLite's), with what to do about it. The engine's own errors say "no space left on
/// device" without the OS error number, and are left as they are: its disk is its own.
fn with_disk_hint(reason: String, data_dir: &std::path::Path) -> String {
    if !(reason.contains("(os error 28)") || reason.contains("database or disk is full")) {
        return reason;
    }
    format!(
        "{reason}; the disk of buildgrid's data directory {} is full: free space there, then \
         build again",
        data_dir.display()
    )
}

fn check_cancel(store: &Store, build: i64) -> Result<(), Stop> {
    match store.db.cancel_requested(build) {
        Ok(true) => Err(Stop::Cancelled),
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Stop> + Send + 'static,
) -> Result<T, Stop> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Stop::Failed(format!("internal error: {e}")))?
}

/// Runs `step` unless the build's time is up first. Storing the image is not timed: once the
/// engine's export has arrived, the image is stored whole or not at all.
async fn timed<T>(
    deadline: tokio::time::Instant,
    limit: Duration,
    step: impl std::future::Future<Output = Result<T, Stop>>,
) -> Result<T, Stop> {
    tokio::time::timeout_at(deadline, step)
        .await
        .map_err(|_| Stop::Failed(timed_out(limit)))?
}

pub(crate) fn timed_out(limit: Duration) -> String {
    format!("timed out after {} minutes", limit.as_secs() / 60)
}

async fn pipeline(builder: &Builder, build: &Build, log: &mut Log) -> Result<Outcome, Stop> {
    let limit = builder.settings.timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let store = builder.store.clone();
    let app: App = store
        .db
        .app_by_id(build.app_id)?
        .ok_or_else(|| Stop::Failed("the build's app no longer exists".into()))?;
    // A build of one of the app's sources builds that repository, its way, into its image.
    let app = match build.source_id {
        None => app,
        Some(id) => store
            .db
            .source(id)?
            .ok_or_else(|| Stop::Failed("the build's source no longer exists".into()))?
            .app_view(&app),
    };
    log.line(
        None,
        &format!(
            "build {} of {} ({}{}), triggered by {}",
            build.id,
            app.app,
            build.git_ref,
            build
                .commit_id
                .as_deref()
                .map(|commit| format!(" {commit}"))
                .unwrap_or_default(),
            build.trigger
        ),
    );

    // Fetch and resolve the commit.
    let git_dir = store.build_git_dir(&app.app, build.source_id);
    let url = app.git_url.clone();
    let wanted = build
        .commit_id
        .clone()
        .unwrap_or_else(|| build.git_ref.clone());
    let stage = std::time::Instant::now();
    let (commit, fetch_note) = {
        let wanted = wanted.clone();
        let known = build.commit_id.clone();
        // Builds of one repository fetch into it one at a time.
        let lock = builder.git_lock(&git_dir);
        timed(
            deadline,
            limit,
            blocking(move || {
                let _turn = lock.lock().unwrap_or_else(|p| p.into_inner());
                let repo = fetch::open_or_init(&git_dir)?;
                let present = known
                    .as_deref()
                    .is_some_and(|c| fetch::has_commit(&repo, c));
                let note = if present {
                    "the commit is in buildgrid's repository (pushed); nothing to fetch".to_owned()
                } else {
                    match fetch::fetch(&repo, &url) {
                        Ok(()) => format!("fetched {}", redact_url(&url)),
                        // A push to buildgrid may have brought the commit without the URL answering.
                        Err(error) if fetch::resolve(&repo, &wanted).is_ok() => {
                            format!("{error}; building what buildgrid's repository has")
                        }
                        Err(error) => return Err(Stop::Failed(error.to_string())),
                    }
                };
                Ok((fetch::resolve(&repo, &wanted)?, note))
            }),
        )
        .await?
    };
    stage_done("fetch", stage);
    log.line(None, &fetch_note);
    let commit_id = commit.id.to_string();
    store
        .db
        .set_build_commit(build.id, &commit_id, &commit.message, &commit.author)?;
    log.line(None, &format!("commit {commit_id}: {}", commit.message));
    if !build.force
        && let Some(other) = store
            .db
            .other_build_of_commit(app.id, &commit_id, build.id)?
    {
        return Ok(Outcome::Skipped(format!(
            "commit {commit_id} is built by build {other}"
        )));
    }
    check_cancel(&store, build.id)?;

    // The build context, from git objects into a temporary file.
    let staging = store.blobs.scratch()?;
    let context_path = staging.path().join("context.tar");
    let stage = std::time::Instant::now();
    let context = {
        let git_dir = store.build_git_dir(&app.app, build.source_id);
        let context_path = context_path.clone();
        let (dir, dockerfile) = (app.context.clone(), app.dockerfile.clone());
        let oid = commit.id;
        timed(
            deadline,
            limit,
            blocking(move || {
                let repo = fetch::open_or_init(&git_dir)?;
                let file = std::io::BufWriter::new(std::fs::File::create(&context_path)?);
                Ok(write_context(&repo, oid, &dir, &dockerfile, file)?)
            }),
        )
        .await?
    };
    stage_done("context", stage);
    for submodule in &context.skipped_submodules {
        log.line(
            None,
            &format!("note: submodule {submodule} is not part of the context"),
        );
    }
    log.line(None, &format!("build context: {} files", context.files));

    // Build.
    let stage = std::time::Instant::now();
    store.db.set_build_state(build.id, BuildState::Building)?;
    let docker = connect().await?;
    // Only images the build's namespace may use reach the engine.
    let mut own_hosts = vec![builder.settings.registry_host.clone()];
    own_hosts.extend(url_host(&builder.settings.public_url));
    let tenancy = isolation::tenancy(&store, app.app.namespace(), own_hosts.clone())?;
    let refused = isolation::check(
        &docker,
        &store,
        &tenancy,
        &context.dockerfile_text,
        &app.build_args,
    )
    .await?;
    if !refused.is_empty() {
        return Err(Stop::Failed(refused.join("; ")));
    }
    let public_name = format!("{}:{}", app.image_repo, commit_tag(&commit_id)?);
    // Never the public name: the engine is shared, and its names are everyone's.
    let tag = isolation::build_name(&store, app.image_repo.as_str(), &commit_id)?;
    let build_args: HashMap<&str, &str> = app
        .build_args
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // One label, the install's id, marks the engine's images as this install's, so garbage
    // collection can remove those left untagged and nobody else's (`prune`). The classic
    // builder adds it as a last step, cached like any other.
    let install = store.db.install_id()?;
    let engine_labels = HashMap::from([(crate::prune::BUILD_LABEL, install.as_str())]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&context.dockerfile)
        .t(&tag)
        .labels(&engine_labels)
        .rm(true)
        .forcerm(true)
        .buildargs(&build_args)
        .build();
    let file = tokio::fs::File::open(&context_path).await?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
    let token = PullToken::create(&store, app.app.namespace(), build.id, limit)?;
    let credentials = token.credentials(&own_hosts);
    let mut stream = docker.build_image(options, Some(credentials), Some(body));
    let mut step: Option<String> = None;
    let mut cancel_check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { break };
                let info = item.map_err(|e| Stop::Failed(engine_error(&e)))?;
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(Stop::Failed(detail));
                }
                if let Some(text) = info.stream.or(info.status) {
                    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                        if let Some(rest) = line.strip_prefix("Step ") {
                            step = rest.split_whitespace().next().map(str::to_owned);
                        }
                        log.line(step.as_deref(), line);
                    }
                }
            }
            _ = cancel_check.tick() => check_cancel(&store, build.id)?,
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Stop::Failed(timed_out(limit)));
            }
        }
    }
    // Dropping the stream above closes the connection, which stops the engine's build.
    drop(stream);
    drop(token);
    stage_done("build", stage);
    check_cancel(&store, build.id)?;

    // Store a copy of the image.
    let stage = std::time::Instant::now();
    store.db.set_build_state(build.id, BuildState::Storing)?;
    log.line(None, &format!("storing {public_name}"));
    let archive_path = staging.path().join("image.tar");
    let started = std::time::Instant::now();
    let spooled =
        export::spool_export(&docker, &store, &tag, &archive_path, deadline, limit).await?;
    let prepared = spooled.prepared;
    log.line(
        None,
        &format!(
            "exported {:.1} MB from the engine in {:.2} s (its first byte after {:.2} s), \
             compressing {} on the way",
            spooled.bytes as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            spooled.first_byte.unwrap_or_default().as_secs_f64(),
            match prepared.len() {
                1 => "1 new layer".to_owned(),
                n => format!("{n} new layers"),
            }
        ),
    );
    let started = std::time::Instant::now();
    let repo = app.image_repo.clone();
    let commit_tag = commit_tag(&commit_id)?;
    let report = {
        let store = store.clone();
        let repo = repo.clone();
        let commit = commit_id.clone();
        let source = buildgrid_core::app::public_url(&app.git_url);
        blocking(move || {
            // Added at ingest, not as build labels: the engine's classic builder turns each
            // label into an extra step that runs a container, on every build.
            let labels = BTreeMap::from([
                ("org.opencontainers.image.revision".to_owned(), commit),
                ("org.opencontainers.image.source".to_owned(), source),
            ]);
            Ok(buildgrid_store::ingest::import_archive_with(
                &store,
                &archive_path,
                &repo,
                &commit_tag,
                &labels,
                prepared,
            )?)
        })
        .await?
    };
    log.line(
        None,
        &format!(
            "stored: {} layers compressed, {} reused, in {:.2} s",
            report.layers_compressed,
            report.layers_reused,
            started.elapsed().as_secs_f64()
        ),
    );
    stage_done("store", stage);
    let bases = dockerfile::base_images(&context.dockerfile_text, &app.build_args);
    store.db.add_image_bases(&repo, &report.digest, &bases)?;
    move_branch_tag(&store, build, &app, &repo, &report.digest, log).await?;
    // Removing hundreds of megabytes of spooled files can take a while: not on the build's time.
    tokio::task::spawn_blocking(move || drop(staging));
    let image_ref = format!("{}/{}:{}", builder.settings.registry_host, repo, report.tag);
    // The image page shows the archive's checksums: compute them now, after the build, rather
    // than on the first visit.
    {
        let (store, repo, digest, name) = (
            store.clone(),
            repo.clone(),
            report.digest.clone(),
            image_ref.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Err(error) =
                buildgrid_store::image::archive_checksums(&store, &repo, &digest, Some(&name))
            {
                tracing::warn!(%error, "cannot compute the image archive's checksums");
            }
        });
    }
    Ok(Outcome::Succeeded {
        image_ref,
        digest: report.digest,
    })
}

/// Moves the branch's tag (`:main`, `:feature-login` for `feature/login`) to the image this
/// build stored, when the build built a branch and no newer build of it holds the tag already.
/// A branch whose name makes no valid tag (see `branch_tag`) gets none, with a log line; a tag an
/// import made, or another branch's, is left where it is.
async fn move_branch_tag(
    store: &Arc<Store>,
    build: &Build,
    app: &App,
    repo: &buildgrid_core::RepoName,
    digest: &buildgrid_core::Digest,
    log: &mut Log,
) -> Result<(), Stop> {
    let branch = build
        .git_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&build.git_ref)
        .to_owned();
    let is_commit_id = branch.len() == 40 && branch.bytes().all(|b| b.is_ascii_hexdigit());
    if is_commit_id {
        return Ok(());
    }
    // The ref is a branch when the repository has it as one (fetched or pushed); a git tag or
    // other revision the build was asked for gets no moving tag.
    let git_dir = store.build_git_dir(&app.app, build.source_id);
    let name = branch.clone();
    let is_branch = blocking(move || {
        let repo = fetch::open_or_init(&git_dir)?;
        Ok([
            format!("refs/remotes/origin/{name}"),
            format!("refs/heads/{name}"),
        ]
        .iter()
        .any(|r| repo.find_reference(r).is_ok()))
    })
    .await?;
    if !is_branch {
        return Ok(());
    }
    let tag = match buildgrid_core::app::branch_tag(&branch) {
        Ok(tag) => tag,
        Err(error) => {
            tracing::info!(%error, "no moving branch tag");
            log.line(None, &error.to_string());
            return Ok(());
        }
    };
    let moved = {
        let (store, repo, digest, tag, branch, id) = (
            store.clone(),
            repo.clone(),
            digest.clone(),
            tag.clone(),
            branch.clone(),
            build.id,
        );
        blocking(move || {
            Ok(store
                .db
                .move_branch_tag(&repo, &tag, &branch, id, &digest)?)
        })
        .await?
    };
    let line = match moved {
        buildgrid_store::TagMove::Moved => {
            format!("tagged {repo}:{tag}, the newest successful build of branch {branch}")
        }
        buildgrid_store::TagMove::Newer(newer) => {
            format!("{repo}:{tag} stays on build {newer}, a newer build of branch {branch}")
        }
        buildgrid_store::TagMove::Taken {
            branch: Some(other),
        } => {
            tracing::warn!(%repo, %tag, %branch, %other, "a branch tag is another branch's");
            format!(
                "{repo}:{tag} is the moving tag of branch {other}: branch {branch} gets none \
                 (`/` becomes `-` in tags, so both map to {tag}); rename one of them"
            )
        }
        buildgrid_store::TagMove::Taken { branch: None } => {
            tracing::warn!(%repo, %tag, %branch, "a branch tag is an imported tag");
            format!("{repo}:{tag} is an imported tag: branch {branch} does not move it")
        }
    };
    log.line(None, &line);
    Ok(())
}

/// Records how long a stage of a build took (fetch, context, build, store).
fn stage_done(stage: &'static str, started: std::time::Instant) {
    metrics::histogram!("buildgrid_build_stage_duration_seconds", "stage" => stage)
        .record(started.elapsed().as_secs_f64());
}

/// `host[:port]` of a URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    (!host.is_empty()).then(|| host.to_owned())
}

async fn connect() -> Result<Docker, Stop> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| Stop::Failed(format!("cannot reach the Docker engine: {e}")))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| Stop::Failed(format!("cannot reach the Docker engine: {e}")))
}

pub(crate) fn engine_error(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => format!("Docker engine: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::with_disk_hint;

    #[track_caller]
    fn check(reason: &str, expected: &str) {
        assert_eq!(
            with_disk_hint(reason.to_owned(), Path::new("/srv/bg")),
            expected
        );
    }

    #[test]
    fn full_disks_of_the_data_directory_get_a_hint() {
        let hint = "; the disk of buildgrid's data directory /srv/bg is full: free space there, \
                    then build again";
        let ours = "writing the build context: No space left on device (os error 28)";
        check(ours, &format!("{ours}{hint}"));
        let sqlite = "database or disk is full";
        check(sqlite, &format!("{sqlite}{hint}"));
        // The engine's disk, or any other failure: as it is.
        let engine = "failed to copy files: write /big: no space left on device";
        check(engine, engine);
        check("a RUN step failed", "a RUN step failed");
    }
}
