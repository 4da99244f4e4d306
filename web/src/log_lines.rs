//! A build's log lines outside the page itself: the markup of one line, windows of earlier lines
//! for lazy loading, the live stream of a running build, and the raw download.

use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_store::{Build, BuildState, LogFilter, LogLine};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use crate::build_page::{self, load_build_log};
use crate::error::{PageError, blocking};
use crate::events::{self, Event, Poll};
use crate::{Viewer, Web, format};

/// Lines on a page of a log, and in each window loaded later.
pub const WINDOW: usize = 1000;
/// Lines read per look while a build runs, and per chunk of the raw download.
const BATCH: usize = 2000;
const POLL: Duration = Duration::from_millis(400);

/// Lines that look like errors (SQL `LIKE` patterns, ASCII case ignored), for "first error".
pub const ERROR_PATTERNS: &[&str] = &[
    "%error%",
    "build failed:%",
    "%returned a non-zero code%",
    "%fatal:%",
];

pub fn is_error(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.contains("error")
        || lower.starts_with("build failed:")
        || lower.contains("returned a non-zero code")
        || lower.contains("fatal:")
}

#[derive(Deserialize, Default)]
pub struct LogQuery {
    pub q: Option<String>,
    pub step: Option<String>,
    pub before: Option<i64>,
    pub after: Option<i64>,
}

impl LogQuery {
    pub fn filter(&self) -> LogFilter {
        let given = |text: &Option<String>| {
            text.as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(str::to_owned)
        };
        LogFilter {
            text: given(&self.q),
            step: given(&self.step),
        }
    }

    /// `?q=…&step=…&` (or `?`): the filter's query string, ready for one more pair.
    pub fn base(&self) -> String {
        let filter = self.filter();
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(text) = &filter.text {
            query.append_pair("q", text);
        }
        if let Some(step) = &filter.step {
            query.append_pair("step", step);
        }
        let query = query.finish();
        if query.is_empty() {
            "?".to_owned()
        } else {
            format!("?{query}&")
        }
    }
}

/// One line: number (a link to itself), time of day, step and text.
pub fn line(line: &LogLine, needle: Option<&str>) -> Markup {
    html! {
        div.ln.err[is_error(&line.line)] #{ "L" (line.seq) } {
            a.no href={ "#L" (line.seq) } { (line.seq) }
            time { (format::clock(line.at_ms)) }
            span.st { (line.step.as_deref().unwrap_or("")) }
            span.tx { (crate::layout::highlighted(&line.line, needle)) }
        }
    }
}

pub fn lines(lines: &[LogLine], filter: &LogFilter) -> Markup {
    let needle = filter.text.as_deref();
    html! { @for l in lines { (line(l, needle)) } }
}

/// The window of lines before `before`, as JSON for the page's script: the markup, and where
/// the next earlier window is (none at the start).
pub async fn fragment(
    viewer: Viewer,
    path: web::Path<i64>,
    query: web::Query<LogQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let (build, _) = load_build_log(&state, &viewer, id).await?;
    let before = query.before.unwrap_or(i64::MAX);
    let filter = query.filter();
    let store = state.store.clone();
    let window =
        blocking(move || Ok(store.db.log_before(build.id, before, &filter, WINDOW)?)).await?;
    let more = window.len() == WINDOW;
    let base = query.base();
    let next = window.first().filter(|_| more).map(|first| first.seq);
    Ok(HttpResponse::Ok().json(json!({
        "html": lines(&window, &query.filter()).0,
        "fragment": next.map(|seq| format!("/builds/{id}/lines{base}before={seq}")),
        "href": next.map(|seq| format!("/builds/{id}{base}before={seq}")),
    })))
}

struct Following {
    after: i64,
    state: Option<BuildState>,
}

/// A running build's new lines (`lines`), its state changes (`state`) and its end (`end`).
/// Resumes after the line `Last-Event-ID` or `after` names.
pub async fn events(
    viewer: Viewer,
    request: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<LogQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let opened = events::open(&state, &request)?;
    let (build, app) = load_build_log(&state, &viewer, path.into_inner()).await?;
    let after = events::last_event_id(&request).or(query.after).unwrap_or(0);
    let filter = query.filter();
    // No state is known yet: the first look sends the build as it is now, so a page that
    // connects after the build moved on is brought up to date.
    let following = Following { after, state: None };
    Ok(events::stream(opened, following, POLL, move |following| {
        let state = state.clone();
        let filter = filter.clone();
        let app = app.clone();
        async move {
            let store = state.store.clone();
            let id = build.id;
            let after = following.after;
            let wanted = filter.clone();
            let first_look = following.state.is_none();
            let (build, new, scanned, steps) = blocking(move || {
                // The state first: a build is seen ended only after all its lines are stored.
                let build = store.db.build(id)?;
                // With a filter, every line up to here is looked at, matching or not.
                let scanned = store.db.last_log_seq(id)?;
                let new = store.db.log_after(id, after, &wanted, BATCH)?;
                // Steps start with new lines (of any step, so not only the filtered ones).
                let steps = if first_look || scanned > after {
                    Some(store.db.log_steps(id)?)
                } else {
                    None
                };
                Ok((build, new, scanned, steps))
            })
            .await?;
            let build: Build =
                build.ok_or_else(|| PageError::NotFound(format!("There is no build {id}")))?;
            let mut events = Vec::new();
            let full = new.len() == BATCH;
            let matched = new.last().map_or(following.after, |l| l.seq);
            let after = if full { matched } else { matched.max(scanned) };
            if !new.is_empty() {
                events.push(Event {
                    id: Some(after),
                    name: "lines",
                    data: json!({ "html": lines(&new, &filter).0 }),
                });
            }
            if build.state.is_finished() && !full {
                let host = state.settings.registry_host();
                events.push(Event {
                    id: Some(after),
                    name: "end",
                    data: json!({
                        "state": build.state.as_str(),
                        "status": build_page::status(&build).0,
                        "end": build_page::end_note(&build, &app, host).0,
                        "facts": build_page::facts(&build, &app, host, format::now()).0,
                        "steps": steps.map(|steps| build_page::steps(id, &steps).0),
                        "total": scanned,
                    }),
                });
                return Ok(Poll::End(events));
            }
            // The page's header follows: state, duration, steps and the number of lines.
            if following.state != Some(build.state) || steps.is_some() {
                let host = state.settings.registry_host();
                events.push(Event {
                    id: Some(after),
                    name: "state",
                    data: json!({
                        "state": build.state.as_str(),
                        "status": build_page::status(&build).0,
                        "facts": build_page::facts(&build, &app, host, format::now()).0,
                        "steps": steps.map(|steps| build_page::steps(id, &steps).0),
                        "total": scanned,
                    }),
                });
            }
            Ok(Poll::Continue {
                events,
                state: Following {
                    after,
                    state: Some(build.state),
                },
                again: full,
            })
        }
    }))
}

/// The whole log as plain text, read and sent a batch at a time.
pub async fn raw(
    viewer: Viewer,
    path: web::Path<i64>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (build, _) = load_build_log(&state, &viewer, path.into_inner()).await?;
    let id = build.id;
    let body = futures_util::stream::unfold(Some(0i64), move |after| {
        let store = state.store.clone();
        async move {
            let after = after?;
            let batch = blocking(move || {
                Ok(store
                    .db
                    .log_after(id, after, &LogFilter::default(), BATCH)?)
            })
            .await;
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => return Some((Err(error), None)),
            };
            if batch.is_empty() {
                return None;
            }
            let next = (batch.len() == BATCH).then(|| batch.last().map_or(after, |l| l.seq));
            let mut text = String::new();
            for line in &batch {
                text.push_str(&line.line);
                text.push('\n');
            }
            Some((Ok(Bytes::from(text)), next))
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"build-{id}.log\""),
        ))
        .streaming(body))
}
