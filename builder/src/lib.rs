//! buildgrid's builder: triggers (git push over smart HTTP, webhooks, CLI and HTTP), the build
//! queue in the store, and builds through the Docker engine whose images are ingested into the
//! store.

mod auth;
mod build_log;
pub mod context;
mod delivery;
pub mod dockerfile;
mod export;
pub mod fetch;
pub mod follow;
mod git_http;
pub mod hooks;
pub mod isolation;
pub mod prune;
mod pull_token;
mod routes;
pub mod webhook;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildgrid_access::Access;
use buildgrid_store::Store;
use tokio::sync::Notify;

pub use routes::configure;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Builds running at once.
    pub concurrency: usize,
    /// A build still running after this fails.
    pub timeout: Duration,
    /// `host:port` clients pull from, for image references.
    pub registry_host: String,
    /// Base URL of the web pages, for links.
    pub public_url: String,
    /// The `buildgrid` executable, which git hooks call.
    pub exe: PathBuf,
    /// A `git push` whose pack is larger than this many bytes is refused (git's
    /// `receive.maxInputSize`).
    pub max_push_size: u64,
}

/// Called with each build that succeeded (the CLI wires deploys to it).
pub type AfterSuccess = dyn Fn(i64) + Send + Sync;

pub struct Builder {
    pub store: Arc<Store>,
    pub access: Arc<Access>,
    pub settings: Settings,
    wake: Notify,
    after_success: std::sync::OnceLock<Arc<AfterSuccess>>,
    /// One lock per git repository of the data directory: creating, fetching into and setting
    /// up a repository take turns (libgit2 refuses a second writer with a lock-file error).
    git_locks: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
    /// Set to the reason when the process stops: workers claim nothing more and end the build
    /// they run with it.
    stopping: tokio::sync::watch::Sender<Option<String>>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Builder {
    pub fn new(store: Arc<Store>, access: Arc<Access>, settings: Settings) -> Arc<Builder> {
        Arc::new(Builder {
            store,
            access,
            settings,
            wake: Notify::new(),
            after_success: std::sync::OnceLock::new(),
            git_locks: Mutex::new(HashMap::new()),
            stopping: tokio::sync::watch::Sender::new(None),
            workers: Mutex::new(Vec::new()),
        })
    }

    /// Sets what happens after a build succeeds (once).
    pub fn on_success(&self, hook: Arc<AfterSuccess>) {
        let _ = self.after_success.set(hook);
    }

    pub(crate) fn succeeded(&self, build: i64) {
        if let Some(hook) = self.after_success.get() {
            hook(build);
        }
    }

    /// The lock of the git repository at `dir`, to hold (on a blocking thread) while writing
    /// to it.
    pub(crate) fn git_lock(&self, dir: &Path) -> Arc<Mutex<()>> {
        let mut locks = self.git_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(dir.to_owned()).or_default().clone()
    }

    /// Wakes idle workers: a build was queued.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Marks builds whose lease lapsed (the process running them stopped) as failed.
    pub fn recover(&self) -> Result<Vec<i64>, buildgrid_store::StoreError> {
        self.store
            .db
            .interrupt_lapsed_builds("interrupted: buildgrid stopped while the build ran")
    }

    /// Starts the workers on the current tokio runtime.
    pub fn start(self: &Arc<Self>) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..self.settings.concurrency.max(1) {
            workers.push(tokio::spawn(worker::worker(self.clone())));
        }
    }

    /// Stops the workers and waits for them: a running build ends failed, `build failed:
    /// <reason>` its last log line, and its engine build is stopped; queued builds stay queued
    /// for the next start.
    pub async fn stop(&self, reason: &str) {
        self.stopping.send_replace(Some(reason.to_owned()));
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for worker in workers {
            let _ = worker.await;
        }
    }

    /// Resolves with the reason once the process is stopping.
    pub(crate) async fn stopped(&self) -> String {
        let mut stopping = self.stopping.subscribe();
        let reason = match stopping.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The sender lives as long as `self`: this is never reached.
            None => std::future::pending().await,
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.borrow().is_some()
    }
}
