//! Settings: a TOML file (`--config`, or `BUILDGRID_CONFIG`), `BUILDGRID_*` variables and
//! flags. A flag wins over a variable, a variable over the file, the file over the default.
//!
//! ```toml
//! data = "/var/lib/buildgrid"       # relative paths are relative to the file's directory
//! blob_store = "s3://registry/bg"   # blobs in an object store (unset: <data>/blobs)
//!
//! [log]
//! json = false
//!
//! [server]
//! listen = "127.0.0.1:5000"
//! public_url = "https://buildgrid.example.com"
//! workers = 4
//! max_push_size = 2147483648
//! metrics_listen = "127.0.0.1:9090" # /metrics, /healthz and /readyz without credentials
//! shutdown_grace = 10               # seconds for requests in flight after SIGTERM
//! gc_interval = 60                  # minutes between garbage collections (unset: none)
//! blob_redirect = 300               # blob GETs answer 307 to presigned URLs (unset: streamed)
//!
//! [builds]
//! concurrency = 2
//! timeout_minutes = 30
//! engine_cache_budget = "20GiB"     # the engine's build cache after each collection
//! ```
//!
//! The key `section.key` is also read from `BUILDGRID_SECTION__KEY` (`BUILDGRID_SERVER__LISTEN`),
//! and the flat names of earlier versions still work (`BUILDGRID_LISTEN`). An unknown key in the
//! file is an error naming the key and its line: a misspelt setting never passes silently.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use buildgrid_builder::prune::{ByteSize, DEFAULT_ENGINE_CACHE_BUDGET};
use serde::Deserialize;

use crate::serve::ServeArgs;

const DEFAULT_DATA: &str = "buildgrid-data";
const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
const DEFAULT_BUILD_CONCURRENCY: usize = 2;
const DEFAULT_BUILD_TIMEOUT_MINUTES: u64 = 30;
const DEFAULT_MAX_PUSH_SIZE: u64 = 2 << 30;
const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 10;

/// The settings file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: Option<PathBuf>,
    blob_store: Option<String>,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    builds: BuildsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    json: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    workers: Option<usize>,
    max_push_size: Option<u64>,
    metrics_listen: Option<SocketAddr>,
    shutdown_grace: Option<u64>,
    gc_interval: Option<u64>,
    blob_redirect: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildsSection {
    concurrency: Option<usize>,
    timeout_minutes: Option<u64>,
    engine_cache_budget: Option<ByteSize>,
}

/// The settings file as read (or none).
pub struct Config {
    path: Option<PathBuf>,
    file: File,
}

/// `serve`'s settings, each from its flag, variable, file or default.
pub struct Serve {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub workers: Option<usize>,
    pub build_concurrency: usize,
    /// Minutes.
    pub build_timeout: u64,
    pub max_push_size: u64,
    /// The address of `/metrics` without credentials, when not the main one.
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds.
    pub shutdown_grace: u64,
    /// Minutes between garbage collections; `None`: never.
    pub gc_interval: Option<u64>,
    /// The Docker engine's build cache is pruned down to this after each collection.
    pub engine_cache_budget: ByteSize,
    /// Blob GETs answer 307 to a presigned URL valid this long; `None`: blobs are streamed.
    pub blob_redirect: Option<std::time::Duration>,
}

/// Where a setting's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(String),
    File,
    Default,
}

/// One effective setting, for `buildgrid config check`.
pub struct Shown {
    key: &'static str,
    /// `None`: unset, and nothing takes its place but what `note` says.
    value: Option<String>,
    source: Source,
    note: &'static str,
}

impl Config {
    /// Reads the settings file at `path`; `None` means no file (every setting from variables,
    /// flags and defaults).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config {
                path: None,
                file: File::default(),
            });
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut file: File = toml::from_str(&text)
            .map_err(|e| anyhow!("config file {}: {}", path.display(), e.to_string().trim()))?;
        if let Some(data) = &file.data
            && data.is_relative()
        {
            let dir = path.parent().unwrap_or(Path::new("."));
            file.data = Some(dir.join(data));
        }
        Ok(Config {
            path: Some(path.to_owned()),
            file,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The data directory: `--data`, `BUILDGRID_DATA`, the file's `data`, or `buildgrid-data`.
    pub fn data(&self, flag: Option<PathBuf>, shown: &mut Vec<Shown>) -> anyhow::Result<PathBuf> {
        let value = pick(
            shown,
            "data",
            None,
            flag.map(|v| (v, "--data")),
            self.file.data.clone(),
            Some(PathBuf::from(DEFAULT_DATA)),
            "",
        )?;
        Ok(value.expect("the data directory has a default"))
    }

    /// The settings file's `builds.engine_cache_budget` (`buildgrid gc` takes its flag or
    /// variable first).
    pub fn engine_cache_budget_in_file(&self) -> Option<ByteSize> {
        self.file.builds.engine_cache_budget
    }

    /// Where blobs live: `--blob-store`, `BUILDGRID_BLOB_STORE`, the file's `blob_store`;
    /// `None`: in the data directory.
    pub fn blob_store(
        &self,
        flag: Option<String>,
        shown: &mut Vec<Shown>,
    ) -> anyhow::Result<Option<String>> {
        pick(
            shown,
            "blob_store",
            None,
            flag.map(|v| (v, "--blob-store")),
            self.file.blob_store.clone(),
            None,
            "unset: <data>/blobs",
        )
    }

    /// Whether logs are JSON lines: `--log-json`, `BUILDGRID_LOG_JSON`, the file's `log.json`.
    pub fn log_json(&self, flag: bool, shown: &mut Vec<Shown>) -> anyhow::Result<bool> {
        let value = pick(
            shown,
            "log.json",
            Some("BUILDGRID_LOG_JSON"),
            flag.then_some((Switch(true), "--log-json")),
            self.file.log.json.map(Switch),
            Some(Switch(false)),
            "",
        )?;
        Ok(value.is_some_and(|v| v.0))
    }

    /// `serve`'s settings.
    pub fn serve(&self, args: ServeArgs, shown: &mut Vec<Shown>) -> anyhow::Result<Serve> {
        let server = &self.file.server;
        let builds = &self.file.builds;
        let listen = pick(
            shown,
            "server.listen",
            Some("BUILDGRID_LISTEN"),
            args.listen.map(|v| (v, "--listen")),
            server.listen,
            Some(DEFAULT_LISTEN.parse().expect("the default address parses")),
            "",
        )?
        .expect("the address has a default");
        let public_url = pick(
            shown,
            "server.public_url",
            Some("BUILDGRID_PUBLIC_URL"),
            args.public_url.map(|v| (v, "--public-url")),
            server.public_url.clone(),
            None,
            "unset: http://<the address it listens on>",
        )?;
        let workers = pick(
            shown,
            "server.workers",
            Some("BUILDGRID_WORKERS"),
            args.workers.map(|v| (v, "--workers")),
            server.workers,
            None,
            "unset: one per core",
        )?;
        let max_push_size = pick(
            shown,
            "server.max_push_size",
            Some("BUILDGRID_MAX_PUSH_SIZE"),
            args.max_push_size.map(|v| (v, "--max-push-size")),
            server.max_push_size,
            Some(DEFAULT_MAX_PUSH_SIZE),
            "bytes",
        )?
        .expect("the push size has a default");
        let build_concurrency = pick(
            shown,
            "builds.concurrency",
            Some("BUILDGRID_BUILD_CONCURRENCY"),
            args.build_concurrency.map(|v| (v, "--build-concurrency")),
            builds.concurrency,
            Some(DEFAULT_BUILD_CONCURRENCY),
            "",
        )?
        .expect("the concurrency has a default");
        let build_timeout = pick(
            shown,
            "builds.timeout_minutes",
            Some("BUILDGRID_BUILD_TIMEOUT"),
            args.build_timeout.map(|v| (v, "--build-timeout")),
            builds.timeout_minutes,
            Some(DEFAULT_BUILD_TIMEOUT_MINUTES),
            "",
        )?
        .expect("the timeout has a default");
        let metrics_listen = pick(
            shown,
            "server.metrics_listen",
            Some("BUILDGRID_METRICS_LISTEN"),
            args.metrics_listen.map(|v| (v, "--metrics-listen")),
            server.metrics_listen,
            None,
            "unset: /metrics on the main address, for admins",
        )?;
        let shutdown_grace = pick(
            shown,
            "server.shutdown_grace",
            Some("BUILDGRID_SHUTDOWN_GRACE"),
            args.shutdown_grace.map(|v| (v, "--shutdown-grace")),
            server.shutdown_grace,
            Some(DEFAULT_SHUTDOWN_GRACE_SECONDS),
            "seconds",
        )?
        .expect("the grace has a default");
        let gc_interval = pick(
            shown,
            "server.gc_interval",
            Some("BUILDGRID_GC_INTERVAL"),
            args.gc_interval.map(|v| (v, "--gc-interval")),
            server.gc_interval,
            None,
            "unset: no scheduled garbage collection",
        )?;
        let engine_cache_budget = pick(
            shown,
            "builds.engine_cache_budget",
            Some("BUILDGRID_ENGINE_CACHE_BUDGET"),
            args.engine_cache_budget
                .map(|v| (v, "--engine-cache-budget")),
            builds.engine_cache_budget,
            Some(DEFAULT_ENGINE_CACHE_BUDGET),
            "bytes, or with K, M, G, KiB, MiB, GiB",
        )?
        .expect("the engine cache budget has a default");
        let blob_redirect = pick(
            shown,
            "server.blob_redirect",
            Some("BUILDGRID_BLOB_REDIRECT"),
            args.blob_redirect.map(|v| (v, "--blob-redirect")),
            server.blob_redirect,
            None,
            "unset: blobs are streamed through buildgrid",
        )?;
        if blob_redirect == Some(0) {
            bail!(
                "server.blob_redirect is 0: give the seconds a redirect URL stays valid, or leave it unset"
            );
        }
        if gc_interval == Some(0) {
            bail!("server.gc_interval is 0: give minutes between collections, or leave it unset");
        }
        if build_concurrency == 0 {
            bail!("builds.concurrency is 0: at least one build must be able to run");
        }
        if workers == Some(0) {
            bail!("server.workers is 0: give at least 1, or leave it unset for one per core");
        }
        Ok(Serve {
            listen,
            public_url,
            workers,
            build_concurrency,
            build_timeout,
            max_push_size,
            metrics_listen,
            shutdown_grace,
            gc_interval,
            engine_cache_budget,
            blob_redirect: blob_redirect.map(std::time::Duration::from_secs),
        })
    }
}

/// The effective settings as TOML, each with where it came from; secrets masked.
pub fn render(config: &Config, shown: &[Shown]) -> String {
    let mut out = String::new();
    match config.path() {
        Some(path) => writeln!(out, "# config file: {}", path.display()),
        None => writeln!(out, "# config file: none (--config or BUILDGRID_CONFIG)"),
    }
    .expect("writing to a string");
    let mut section = "";
    let mut lines: Vec<&Shown> = shown.iter().collect();
    // Top-level keys first, then each section's keys together.
    lines.sort_by_key(|s| s.key.split_once('.').map_or("", |(section, _)| section));
    for line in lines {
        let (this, key) = line.key.split_once('.').unwrap_or(("", line.key));
        if this != section {
            section = this;
            let _ = writeln!(out, "\n[{section}]");
        }
        let source = match &line.source {
            Source::Flag(flag) => format!("flag {flag}"),
            Source::Env(name) => format!("env {name}"),
            Source::File => "file".to_owned(),
            Source::Default => "default".to_owned(),
        };
        // "unset: …" says what stands in for a missing value; other notes give units.
        let note =
            if line.note.is_empty() || (line.value.is_some() && line.note.starts_with("unset:")) {
                String::new()
            } else {
                format!("; {}", line.note)
            };
        let _ = match &line.value {
            Some(value) => writeln!(out, "{key} = {value}  # {source}{note}"),
            None => writeln!(out, "# {key}{note}"),
        };
    }
    let key = match std::env::var(buildgrid_store::secrets::KEY_ENV) {
        Ok(value) if !value.trim().is_empty() => {
            format!("*** (env {})", buildgrid_store::secrets::KEY_ENV)
        }
        _ => format!(
            "the file {} in the data directory",
            buildgrid_store::secrets::KEY_FILE
        ),
    };
    let _ = writeln!(out, "\n# key of sealed secrets: {key}");
    out
}

/// The effective value of one setting: the flag, else a variable, else the file, else the
/// default. Records it in `shown`.
fn pick<T: Setting>(
    shown: &mut Vec<Shown>,
    key: &'static str,
    flat_env: Option<&'static str>,
    flag: Option<(T, &'static str)>,
    file: Option<T>,
    default: Option<T>,
    note: &'static str,
) -> anyhow::Result<Option<T>> {
    let (value, source) = if let Some((value, flag)) = flag {
        (Some(value), Source::Flag(flag))
    } else if let Some((value, name)) = from_env::<T>(key, flat_env)? {
        (Some(value), Source::Env(name))
    } else if let Some(value) = file {
        (Some(value), Source::File)
    } else {
        (default, Source::Default)
    };
    shown.push(Shown {
        key,
        value: value.as_ref().map(Setting::show),
        source,
        note,
    });
    Ok(value)
}

/// `server.listen` → `BUILDGRID_SERVER__LISTEN`; `data` → `BUILDGRID_DATA`.
pub fn env_name(key: &str) -> String {
    format!("BUILDGRID_{}", key.replace('.', "__").to_uppercase())
}

/// The setting from its variable: the flat name or the sectioned one (both set must agree).
/// An empty variable counts as unset.
fn from_env<T: Setting>(
    key: &str,
    flat: Option<&'static str>,
) -> anyhow::Result<Option<(T, String)>> {
    let sectioned = env_name(key);
    let mut names = vec![sectioned.clone()];
    if let Some(flat) = flat
        && flat != sectioned
    {
        names.insert(0, flat.to_owned());
    }
    let set: Vec<(String, String)> = names
        .into_iter()
        .filter_map(|name| {
            let value = std::env::var(&name).ok()?;
            (!value.is_empty()).then_some((name, value))
        })
        .collect();
    if let [(a, first), (b, second)] = &set[..]
        && first != second
    {
        bail!("{a} and {b} are both set, to different values: set only one");
    }
    let Some((name, text)) = set.into_iter().next() else {
        return Ok(None);
    };
    let value = T::from_str(&text).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(Some((value, name)))
}

/// A value a setting may take: parsed from a variable, shown as TOML.
trait Setting: FromStr<Err: std::fmt::Display> {
    fn show(&self) -> String;
}

impl Setting for ByteSize {
    fn show(&self) -> String {
        format!("\"{self}\"")
    }
}

impl Setting for SocketAddr {
    fn show(&self) -> String {
        format!("\"{self}\"")
    }
}

impl Setting for PathBuf {
    fn show(&self) -> String {
        format!("{:?}", self.display().to_string())
    }
}

impl Setting for String {
    /// Credentials in a URL (`https://user:password@host`) are masked.
    fn show(&self) -> String {
        format!("{:?}", mask_userinfo(self))
    }
}

impl Setting for usize {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Setting for u64 {
    fn show(&self) -> String {
        self.to_string()
    }
}

/// A boolean as variables give it: `0`, `false`, `no`, `off`, `n`, `f` (any case) are false,
/// anything else true.
struct Switch(bool);

impl FromStr for Switch {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Switch, Self::Err> {
        let falsey = ["0", "false", "no", "off", "n", "f"];
        Ok(Switch(
            !falsey.iter().any(|f| text.trim().eq_ignore_ascii_case(f)),
        ))
    }
}

impl Setting for Switch {
    fn show(&self) -> String {
        self.0.to_string()
    }
}

/// `scheme://user:password@host/…` → `scheme://***@host/…`.
fn mask_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectioned_variable_names() {
        assert_eq!(env_name("server.listen"), "BUILDGRID_SERVER__LISTEN");
        assert_eq!(
            env_name("builds.timeout_minutes"),
            "BUILDGRID_BUILDS__TIMEOUT_MINUTES"
        );
        assert_eq!(env_name("data"), "BUILDGRID_DATA");
    }

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(
            mask_userinfo("https://bob:hunter2@example.com/x@y"),
            "https://***@example.com/x@y"
        );
        assert_eq!(
            mask_userinfo("https://example.com/a@b"),
            "https://example.com/a@b"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let error =
            toml::from_str::<File>("data = \"x\"\n[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("line 4"), "{error}");
        assert!(error.contains("unknown field `lisen`"), "{error}");
    }

    #[test]
    fn switches_read_like_flags() {
        for (text, value) in [
            ("1", true),
            ("true", true),
            ("FALSE", false),
            ("off", false),
        ] {
            assert_eq!(Switch::from_str(text).unwrap().0, value, "{text}");
        }
    }
}
