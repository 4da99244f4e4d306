//! What every HTTP worker of one process shares: the caps on what clients hold open (event
//! streams per client and in all, archive writers) and the servers' recent answers about what
//! runs. Each worker builds its own [`crate::Web`], so these live behind one `Arc` that the
//! settings carry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use buildgrid_store::Store;
use buildgrid_store::gc::Outlook;

use crate::deploy_actions::ServerRunning;
use crate::error::{PageError, blocking};

/// The caps; [`Limits::default`] is what `serve` uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Event streams one client address holds open at once.
    pub streams_per_client: usize,
    /// Event streams open at once in all.
    pub streams: usize,
    /// A stream that had nothing to send for this long ends (a browser reconnects).
    pub stream_idle: Duration,
    /// Archive downloads written at once (each takes a blocking thread while it writes).
    pub archive_writers: usize,
    /// An archive download whose client reads nothing for this long ends.
    pub archive_write_timeout: Duration,
    /// How long the servers' answer about what runs of an app is reused.
    pub running_ttl: Duration,
    /// How long the next collection's outlook (why images stay, what apps would get back) is
    /// reused: computing it reads every manifest, about 60 ms for 300 builds.
    pub outlook_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            streams_per_client: 20,
            streams: 1000,
            stream_idle: Duration::from_secs(5 * 60),
            archive_writers: 8,
            archive_write_timeout: Duration::from_secs(30),
            running_ttl: Duration::from_secs(5),
            outlook_ttl: Duration::from_secs(60),
        }
    }
}

/// What the workers share; clones share the same counts.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

struct Inner {
    limits: Limits,
    streams: Mutex<Streams>,
    archives: Arc<Semaphore>,
    /// Per app id: the last answer of its servers and when it came.
    running: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Option<Answer>>>>>,
    /// The next collection's outlook and when it was computed.
    outlook: tokio::sync::Mutex<Option<(Instant, Arc<Outlook>)>>,
    /// Set when the process stops: open event streams end (browsers reconnect elsewhere or
    /// later) rather than hold the stop for its whole grace period.
    closing: tokio::sync::watch::Sender<bool>,
}

/// What an app's servers said runs there, and when.
type Answer = (Instant, Vec<ServerRunning>);

#[derive(Default)]
struct Streams {
    total: usize,
    per_client: HashMap<Option<IpAddr>, usize>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new(Limits::default())
    }
}

/// Seconds a refused client is told to wait.
pub const RETRY_AFTER: u64 = 10;

impl Shared {
    pub fn new(limits: Limits) -> Shared {
        let archives = Arc::new(Semaphore::new(limits.archive_writers));
        Shared(Arc::new(Inner {
            limits,
            streams: Mutex::default(),
            archives,
            running: Mutex::default(),
            outlook: tokio::sync::Mutex::default(),
            closing: tokio::sync::watch::Sender::new(false),
        }))
    }

    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// Ends every open event stream now and every one opened later (the process is stopping).
    pub fn close_streams(&self) {
        self.0.closing.send_replace(true);
    }

    /// Changes to true when the streams close.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.closing.subscribe()
    }

    /// A place for one more event stream of `client`, or why there is none.
    pub fn open_stream(&self, client: Option<IpAddr>) -> Result<StreamPermit, PageError> {
        let limits = &self.0.limits;
        let mut streams = self.0.streams.lock().unwrap();
        let mine = streams.per_client.get(&client).copied().unwrap_or(0);
        if mine >= limits.streams_per_client {
            return Err(PageError::TooMany(format!(
                "This address has {mine} live updates open, the most one client may: close some pages and try again"
            )));
        }
        if streams.total >= limits.streams {
            return Err(PageError::Busy(
                "The server has as many live updates open as it serves: try again later".into(),
            ));
        }
        streams.total += 1;
        *streams.per_client.entry(client).or_default() += 1;
        Ok(StreamPermit {
            shared: self.clone(),
            client,
        })
    }

    /// A place for one more archive writer, or 503.
    pub fn start_archive(&self) -> Result<OwnedSemaphorePermit, PageError> {
        self.0.archives.clone().try_acquire_owned().map_err(|_| {
            PageError::Busy(
                "The server is writing as many image archives as it may at once: try again shortly, or pull the image with docker".into(),
            )
        })
    }

    /// What runs of app `app_id`, asked of its servers at most once per `running_ttl`: viewers
    /// that come meanwhile get the same answer, and those that come while it is being asked
    /// wait for it instead of asking again.
    pub async fn running<F>(&self, app_id: i64, ask: F) -> Vec<ServerRunning>
    where
        F: std::future::Future<Output = Vec<ServerRunning>>,
    {
        let slot = self
            .0
            .running
            .lock()
            .unwrap()
            .entry(app_id)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((at, answer)) = &*slot
            && at.elapsed() < self.0.limits.running_ttl
        {
            return answer.clone();
        }
        let answer = ask.await;
        *slot = Some((Instant::now(), answer.clone()));
        answer
    }
}

impl Shared {
    /// The next collection's outlook, computed at most once per `outlook_ttl` unless `usable`
    /// refuses the one kept (an image newer than it); viewers that come while it is computed
    /// wait for it instead of computing it again.
    pub(crate) async fn outlook(
        &self,
        store: &Arc<Store>,
        usable: impl Fn(&Outlook) -> bool,
    ) -> Result<Arc<Outlook>, PageError> {
        let mut slot = self.0.outlook.lock().await;
        if let Some((at, outlook)) = &*slot
            && at.elapsed() < self.0.limits.outlook_ttl
            && usable(outlook)
        {
            return Ok(outlook.clone());
        }
        let store = store.clone();
        let outlook = Arc::new(blocking(move || Ok(store.collection_outlook()?)).await?);
        *slot = Some((Instant::now(), outlook.clone()));
        Ok(outlook)
    }
}

/// One open event stream; dropping it frees its place.
pub struct StreamPermit {
    shared: Shared,
    client: Option<IpAddr>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut streams = self.shared.0.streams.lock().unwrap();
        streams.total -= 1;
        if let Some(count) = streams.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                streams.per_client.remove(&self.client);
            }
        }
    }
}
