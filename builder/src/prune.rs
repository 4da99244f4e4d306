//! What builds leave in the Docker engine, removed after garbage collection: the engine names
//! (`buildgrid/builds/<hex>:<commit>`) of builds whose image collection removed, untagged images
//! buildgrid's builds made, and the engine's build cache beyond a budget.
//!
//! Removing a name the way `docker rmi` does (`noprune=false`) only untags an image another
//! name still holds, and deletes untagged parent images only while no other image descends from
//! them: the classic builder's cached steps of a kept build are the parents of its image, so
//! they stay and its rebuilds stay warm.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use bollard::Docker;
use bollard::query_parameters::{
    DataUsageOptions, ListImagesOptionsBuilder, PruneBuildOptions, RemoveImageOptionsBuilder,
};
use buildgrid_store::{CollectedEngineTag, Store, StoreError};

use crate::isolation;
use crate::worker::{Stop, engine_error};

/// The label every build's image carries in the engine, with the install's id (`Db::install_id`)
/// as its value, so untagged images this install made can be told from everyone else's, another
/// install's on the same engine included.
pub const BUILD_LABEL: &str = "io.buildgrid.build";

/// How old an untagged image must be before collection removes it. The engine writes a build's
/// final image untagged and names it a moment later; a collection between the two must not
/// take it from the build.
pub const UNTAGGED_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The engine's build cache kept by default: 20 GiB.
pub const DEFAULT_ENGINE_CACHE_BUDGET: ByteSize = ByteSize(20 << 30);

/// A number of bytes, written plainly or with a suffix: `K`, `M`, `G`, `T` (powers of 1000),
/// `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), `B` optional after either (`20GiB`, `512M`,
/// `1.5G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is no size: give bytes, or a number with K, M, G, T, KiB, MiB, GiB or TiB")]
pub struct ByteSizeError(String);

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<ByteSize, ByteSizeError> {
        let invalid = || ByteSizeError(text.to_owned());
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let unit = unit.trim();
        let unit = unit
            .strip_suffix(['B', 'b'])
            .filter(|rest| !rest.is_empty())
            .unwrap_or(unit);
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" => 1_000,
            "m" => 1_000_000,
            "g" => 1_000_000_000,
            "t" => 1_000_000_000_000,
            "ki" => 1 << 10,
            "mi" => 1 << 20,
            "gi" => 1 << 30,
            "ti" => 1 << 40,
            _ => return Err(invalid()),
        };
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(factor).map(ByteSize).ok_or_else(invalid);
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let bytes = value * factor as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(invalid());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

/// The largest binary unit that divides the size, as it parses back (`20GiB`, `1536`).
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        match units
            .iter()
            .find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size))
        {
            Some((unit, size)) => write!(f, "{}{unit}", self.0 / size),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A size in a settings file: a number of bytes, or a string as [`ByteSize::from_str`] reads.
impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(ByteSize(bytes)),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Nothing to do without an engine; the caller says so and goes on.
    #[error("no Docker engine answers ({0})")]
    NoEngine(String),
    #[error("the Docker engine refused to {what}: {reason}")]
    Engine { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What was removed from the engine (in a dry run, what would be).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnginePrune {
    /// Engine names of collected builds, with the build each was left by.
    pub tags: Vec<(i64, String)>,
    /// Names the engine would not remove yet (a container uses the image), with why; the next
    /// collection tries again.
    pub tags_left: Vec<(String, String)>,
    /// Untagged images buildgrid's builds made (ids).
    pub dangling: Vec<String>,
    /// Image ids the engine deleted (with the names' images and the parents only they had).
    pub images_deleted: usize,
    /// The engine's build cache: bytes used before (when the engine reports it), and bytes
    /// reclaimed (in a dry run, what exceeds the budget).
    pub cache_used: Option<u64>,
    pub cache_reclaimed: u64,
}

/// Removes what builds left in the engine once collection removed their images, and prunes
/// the engine's build cache down to `cache_budget` bytes; with `dry_run`, only finds out what
/// it would remove, counting `collecting` (the builds the dry run's collection would take) as
/// collected.
pub async fn prune_engine(
    store: &Store,
    cache_budget: ByteSize,
    dry_run: bool,
    collecting: &[i64],
) -> Result<EnginePrune, PruneError> {
    let docker = connect().await?;
    let mut report = EnginePrune::default();
    let collecting = if dry_run { collecting } else { &[] };
    remove_collected_tags(&docker, store, dry_run, collecting, &mut report).await?;
    let install = store.db.install_id()?;
    remove_dangling(&docker, &install, dry_run, &mut report).await?;
    prune_cache(&docker, cache_budget, dry_run, &mut report).await?;
    Ok(report)
}

async fn connect() -> Result<Docker, PruneError> {
    let docker =
        Docker::connect_with_local_defaults().map_err(|e| PruneError::NoEngine(e.to_string()))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| PruneError::NoEngine(e.to_string()))
}

fn refused(what: impl Into<String>, error: &bollard::errors::Error) -> PruneError {
    PruneError::Engine {
        what: what.into(),
        reason: engine_error(error),
    }
}

fn is_status(error: &bollard::errors::Error, status: u16) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == status
    )
}

/// The engine name a collected build left, as the worker named it: `None` when its app (or
/// source) is gone and the name cannot be known any more.
fn engine_name(
    store: &Store,
    build: &CollectedEngineTag,
    repos: &mut HashMap<(i64, Option<i64>), Option<String>>,
) -> Result<Option<String>, PruneError> {
    let key = (build.app_id, build.source_id);
    if let std::collections::hash_map::Entry::Vacant(entry) = repos.entry(key) {
        let app = store.db.app_by_id(build.app_id)?;
        let repo = match (app, build.source_id) {
            (None, _) => None,
            (Some(app), None) => Some(app.image_repo.to_string()),
            (Some(app), Some(id)) => store
                .db
                .source(id)?
                .map(|source| source.app_view(&app).image_repo.to_string()),
        };
        entry.insert(repo);
    }
    let Some(repo) = &repos[&key] else {
        return Ok(None);
    };
    match isolation::build_name(store, repo, &build.commit_id) {
        Ok(name) => Ok(Some(name)),
        Err(Stop::Failed(reason)) => Err(PruneError::Engine {
            what: "name a build's image".into(),
            reason,
        }),
        Err(Stop::Cancelled) => Ok(None),
    }
}

async fn remove_collected_tags(
    docker: &Docker,
    store: &Store,
    dry_run: bool,
    collecting: &[i64],
    report: &mut EnginePrune,
) -> Result<(), PruneError> {
    let mut repos = HashMap::new();
    for build in store.db.collected_engine_tags(collecting)? {
        let name = match engine_name(store, &build, &mut repos)? {
            Some(name) if !build.still_used => name,
            // Another build of the commit holds the name, or nobody can name it any more.
            _ => {
                if !dry_run {
                    store.db.engine_tag_removed(build.build_id)?;
                }
                continue;
            }
        };
        if dry_run {
            match docker.inspect_image(&name).await {
                Ok(_) => report.tags.push((build.build_id, name)),
                Err(error) if is_status(&error, 404) => {}
                Err(error) => return Err(refused(format!("inspect {name}"), &error)),
            }
            continue;
        }
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        match docker.remove_image(&name, Some(options), None).await {
            Ok(items) => {
                report.images_deleted += items.iter().filter(|i| i.deleted.is_some()).count();
                report.tags.push((build.build_id, name));
            }
            Err(error) if is_status(&error, 404) => {}
            // A container (a deploy's, someone's `docker run`) uses the image: later.
            Err(error) if is_status(&error, 409) => {
                report.tags_left.push((name, engine_error(&error)));
                continue;
            }
            Err(error) => return Err(refused(format!("remove {name}"), &error)),
        }
        store.db.engine_tag_removed(build.build_id)?;
    }
    Ok(())
}

/// Untagged images with this install's build label, no image descending from them and older
/// than [`UNTAGGED_GRACE`]: final images a newer build of the same commit took the name from.
/// Images without the label, or with another install's, are never touched.
async fn remove_dangling(
    docker: &Docker,
    install: &str,
    dry_run: bool,
    report: &mut EnginePrune,
) -> Result<(), PruneError> {
    let filters = HashMap::from([
        ("dangling", vec!["true".to_owned()]),
        ("label", vec![format!("{BUILD_LABEL}={install}")]),
    ]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let newest = now - UNTAGGED_GRACE.as_secs() as i64;
    let options = ListImagesOptionsBuilder::new().filters(&filters).build();
    let images = docker
        .list_images(Some(options))
        .await
        .map_err(|e| refused("list untagged images", &e))?;
    for image in images {
        // The filter is the engine's; the label is checked here too, in case an engine
        // ignores a filter it does not know.
        let labelled = image.labels.get(BUILD_LABEL).map(String::as_str) == Some(install);
        let untagged = image.repo_tags.iter().all(|t| t == "<none>:<none>");
        // A fresh one may be a build's image the engine has yet to name.
        if !(labelled && untagged) || image.created > newest {
            continue;
        }
        if dry_run {
            report.dangling.push(image.id);
            continue;
        }
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        match docker.remove_image(&image.id, Some(options), None).await {
            Ok(items) => {
                report.images_deleted += items.iter().filter(|i| i.deleted.is_some()).count();
                report.dangling.push(image.id);
            }
            // Gone meanwhile, or in use by a container: left alone.
            Err(error) if is_status(&error, 404) || is_status(&error, 409) => {}
            Err(error) => return Err(refused(format!("remove image {}", image.id), &error)),
        }
    }
    Ok(())
}

/// The engine's build cache beyond `budget`: `POST /build/prune` with `keep-storage` (engines
/// before API 1.48) or `reserved-space` and `max-used-space` (its names since). The classic
/// builder buildgrid uses keeps its cache as the parents of its images (see the module's
/// comment); this cache is BuildKit's.
async fn prune_cache(
    docker: &Docker,
    budget: ByteSize,
    dry_run: bool,
    report: &mut EnginePrune,
) -> Result<(), PruneError> {
    // Engines before API 1.48 report the cache in a shape bollard does not read: unknown there.
    if api_at_least(docker, 1, 48) {
        let usage = docker
            .df(None::<DataUsageOptions>)
            .await
            .map_err(|e| refused("report its build cache", &e))?;
        report.cache_used = usage
            .build_cache_usage
            .and_then(|cache| cache.total_size)
            .map(|size| size.max(0) as u64);
    }
    if dry_run {
        report.cache_reclaimed = report.cache_used.unwrap_or(0).saturating_sub(budget.0);
        return Ok(());
    }
    let budget_bytes = i64::try_from(budget.0).unwrap_or(i64::MAX);
    let reclaimed = if api_at_least(docker, 1, 48) {
        let options = PruneBuildOptions {
            reserved_space: Some(budget_bytes),
            max_used_space: Some(budget_bytes),
            ..PruneBuildOptions::default()
        };
        docker
            .prune_build(Some(options))
            .await
            .map_err(|e| refused("prune its build cache", &e))?
            .space_reclaimed
    } else {
        keep_storage_prune(budget_bytes).await?.space_reclaimed
    };
    report.cache_reclaimed = reclaimed.unwrap_or(0).max(0) as u64;
    Ok(())
}

/// Whether the negotiated API version is `major.minor` or newer.
fn api_at_least(docker: &Docker, major: usize, minor: usize) -> bool {
    let version = docker.client_version();
    (version.major_version, version.minor_version) >= (major, minor)
}

/// `POST /build/prune?keep-storage=` for engines before API 1.48, which know the budget only by
/// that name: bollard sends the newer names, which such an engine ignores, pruning the whole
/// cache. Spoken over the engine's Unix socket (`DOCKER_HOST=unix://…`, or the default one).
async fn keep_storage_prune(
    budget_bytes: i64,
) -> Result<bollard::models::BuildPruneResponse, PruneError> {
    use hyper::body::Body as _;

    let failed = |reason: String| PruneError::Engine {
        what: "prune its build cache".into(),
        reason,
    };
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let Some(socket) = host.strip_prefix("unix://") else {
        return Err(failed(format!(
            "an engine older than API 1.48 at {host} is pruned only over a Unix socket"
        )));
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| failed(format!("{socket}: {e}")))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(connection);
    let request = hyper::Request::post(format!("/build/prune?keep-storage={budget_bytes}"))
        .header(hyper::header::HOST, "docker")
        .body(String::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| failed(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    if !status.is_success() {
        return Err(failed(format!(
            "{status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| failed(format!("its answer is not the expected JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Option<u64>) {
        assert_eq!(text.parse::<ByteSize>().ok().map(|size| size.0), expected);
    }

    #[test]
    fn sizes_with_and_without_units() {
        check("0", Some(0));
        check("1536", Some(1536));
        check("20GiB", Some(20 << 30));
        check("20 GiB", Some(20 << 30));
        check("20gi", Some(20 << 30));
        check("512M", Some(512_000_000));
        check("512MB", Some(512_000_000));
        check("64KiB", Some(64 << 10));
        check("1.5G", Some(1_500_000_000));
        check("2T", Some(2_000_000_000_000));
        check("100B", Some(100));
        check("", None);
        check("GiB", None);
        check("-1", None);
        check("20 GB of cache", None);
        check("99999999999999999999", None);
        check("20000000000T", None);
    }

    #[test]
    fn sizes_print_as_they_parse() {
        for size in [0, 1, 1536, 1 << 20, 20 << 30, 3 << 40, 1_500_000_000] {
            let shown = ByteSize(size).to_string();
            assert_eq!(shown.parse::<ByteSize>(), Ok(ByteSize(size)), "{shown}");
        }
        assert_eq!(DEFAULT_ENGINE_CACHE_BUDGET.to_string(), "20GiB");
        assert_eq!(ByteSize(1536).to_string(), "1536");
    }
}
