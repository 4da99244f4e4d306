//! Server-sent event streams fed by polling the store. The builder writes every state change and
//! log line to the store as it happens, so a stream only has to look for rows past the last one
//! it sent: one indexed range read per tick, however long the log.
//!
//! The wire format (`id:`, `event:`, `data:` lines and a blank line) is small enough that a
//! crate would add more than it saves; every `data` is one line of JSON.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::Bytes;
use serde_json::Value;

use crate::Web;
use crate::error::PageError;
use crate::shared::StreamPermit;

/// A quiet stream sends a comment this often, so proxies keep it open and a closed browser tab
/// is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One event: its name, its data and, when it has one, the id a reconnect resumes from.
pub struct Event {
    pub id: Option<i64>,
    pub name: &'static str,
    pub data: Value,
}

/// What one look at the store found.
pub enum Poll<S> {
    /// Events to send (maybe none) and the state of the next look; `again` looks once more at
    /// once (a full batch came) instead of after the interval.
    Continue {
        events: Vec<Event>,
        state: S,
        again: bool,
    },
    /// The last events: the stream ends.
    End(Vec<Event>),
}

pub fn encode(events: &[Event]) -> Bytes {
    let mut out = String::new();
    for event in events {
        if let Some(id) = event.id {
            out.push_str(&format!("id: {id}\n"));
        }
        out.push_str(&format!("event: {}\ndata: {}\n\n", event.name, event.data));
    }
    Bytes::from(out)
}

/// The event id a reconnecting browser sends (`Last-Event-ID`).
pub fn last_event_id(request: &HttpRequest) -> Option<i64> {
    request
        .headers()
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A place for one more stream of the request's client (by its address), or 429 when the
/// client holds as many as one may, or 503 when the server does. Taken before anything is read,
/// so a refused stream costs no store work.
pub fn open(web: &Web, request: &HttpRequest) -> Result<Opened, PageError> {
    let shared = &web.settings.shared;
    Ok(Opened {
        permit: shared.open_stream(request.peer_addr().map(|a| a.ip()))?,
        idle: shared.limits().stream_idle,
        counted: Counted::new(),
        closing: shared.closing(),
    })
}

/// A stream's place, held until the stream ends or its client goes away.
pub struct Opened {
    permit: StreamPermit,
    idle: Duration,
    counted: Counted,
    closing: tokio::sync::watch::Receiver<bool>,
}

/// Counts an open stream in `buildgrid_web_event_streams_open` while it lives.
struct Counted;

impl Counted {
    fn new() -> Counted {
        metrics::gauge!("buildgrid_web_event_streams_open").increment(1.0);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!("buildgrid_web_event_streams_open").decrement(1.0);
    }
}

/// An event stream that calls `poll` every `interval` until it ends, the client goes away, or
/// it had nothing to send for the idle time of its place (the browser then reconnects and
/// resumes at `Last-Event-ID`).
pub fn stream<S, F, Fut>(opened: Opened, state: S, interval: Duration, poll: F) -> HttpResponse
where
    S: 'static,
    F: FnMut(S) -> Fut + 'static,
    Fut: Future<Output = Result<Poll<S>, PageError>> + 'static,
{
    struct Looking<S, F> {
        state: Option<S>,
        poll: F,
        wait: bool,
        last_event: Instant,
        _permit: StreamPermit,
        _counted: Counted,
        closing: tokio::sync::watch::Receiver<bool>,
    }
    let Opened {
        permit,
        idle,
        counted,
        closing,
    } = opened;
    let start = Looking {
        state: Some(state),
        poll,
        wait: false,
        last_event: Instant::now(),
        _permit: permit,
        _counted: counted,
        closing,
    };
    let body = futures_util::stream::unfold(start, move |mut looking| async move {
        let mut quiet = Duration::ZERO;
        loop {
            if looking.last_event.elapsed() >= idle || *looking.closing.borrow() {
                return None;
            }
            let state = looking.state.take()?;
            if looking.wait {
                tokio::select! {
                    _ = tokio::time::sleep(interval.min(idle)) => {}
                    _ = looking.closing.changed() => return None,
                }
                quiet += interval;
            }
            match (looking.poll)(state).await {
                Ok(Poll::Continue {
                    events,
                    state,
                    again,
                }) => {
                    looking.state = Some(state);
                    looking.wait = !again;
                    if !events.is_empty() {
                        looking.last_event = Instant::now();
                        return Some((Ok::<_, PageError>(encode(&events)), looking));
                    }
                    if quiet >= KEEPALIVE {
                        return Some((Ok(Bytes::from_static(b": keepalive\n\n")), looking));
                    }
                }
                Ok(Poll::End(events)) => return Some((Ok(encode(&events)), looking)),
                Err(error) => {
                    tracing::error!(%error, "an event stream failed");
                    return None;
                }
            }
        }
    });
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
