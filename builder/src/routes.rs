//! HTTP entry points of the builder: git smart HTTP, webhooks and the build API.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use buildgrid_access::Principal;
use buildgrid_core::{AppRef, RequestId};
use buildgrid_store::{Build, BuildState, NewBuild, Queued, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::{Builder, auth, delivery, git_http};

/// Mounts `/git`, `/hooks` and `/api` routes.
pub fn configure(cfg: &mut web::ServiceConfig, builder: Arc<Builder>) {
    cfg.app_data(web::Data::new(builder))
        .route(
            "/git/{namespace}/{repo}/{tail:.*}",
            web::route().to(git_http::handle),
        )
        .route(
            "/hooks/{provider}/{namespace}/{app}",
            web::post().to(delivery::webhook_delivery),
        )
        .route(
            "/api/apps/{namespace}/{app}/builds",
            web::post().to(trigger_build),
        )
        .route("/api/builds/{id}", web::get().to(build_status))
        .route("/api/builds/{id}/cancel", web::post().to(cancel_build))
        .route("/api/builds/{id}/log", web::get().to(build_log));
}

/// An API error: a status and a JSON `{"error": message}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(error: &dyn std::error::Error) -> ApiError {
        tracing::error!(%error, "builder request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has the details",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            response.insert_header((*name, value.as_str()));
        }
        response.json(json!({ "error": self.message }))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::internal(&error)
    }
}

/// Runs store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(Into::into)
}

/// What of a build a request reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Its state, commit and image: pull on its namespace.
    Build,
    /// Its log: membership too, unless the namespace publishes its logs.
    Log,
}

/// The build `id` and its app, when the request may read what `reading` names. A build that
/// does not exist and one the request may not read get the same answer (401 with a challenge
/// without credentials, 404 with them), so that the answer never tells which builds, apps or
/// private namespaces exist.
async fn readable_build(
    builder: &Builder,
    principal: &Principal,
    id: i64,
    reading: Reading,
) -> Result<(Build, AppRef), ApiError> {
    let store = builder.store.clone();
    let found = blocking(move || -> Result<_, StoreError> {
        let Some(build) = store.db.build(id)? else {
            return Ok(None);
        };
        Ok(store
            .db
            .app_by_id(build.app_id)?
            .map(|app| (build, app.app)))
    })
    .await?;
    if let Some((build, app)) = found {
        let allowed = match reading {
            Reading::Build => auth::may_read(builder, principal, app.namespace()).await?,
            Reading::Log => auth::may_read_logs(builder, principal, app.namespace()).await?,
        };
        if allowed {
            return Ok((build, app));
        }
    }
    if principal.is_anonymous() {
        return Err(auth::unauthorized(format!(
            "no build {id}, or it is private: send credentials"
        )));
    }
    Err(ApiError::not_found(match reading {
        Reading::Build => format!("no build {id}"),
        Reading::Log => format!(
            "no build {id}, or its log is for members of its namespace (unless the namespace publishes its logs)"
        ),
    }))
}

fn build_json(build: &Build, builder: &Builder) -> serde_json::Value {
    json!({
        "id": build.id,
        "state": build.state.as_str(),
        "ref": build.git_ref,
        "commit": build.commit_id,
        "trigger": build.trigger,
        "reason": build.reason,
        "image": build.image_ref,
        "digest": build.image_digest,
        "queued_at": build.queued_at,
        "started_at": build.started_at,
        "finished_at": build.finished_at,
        "url": format!("{}/builds/{}", builder.settings.public_url, build.id),
    })
}

#[derive(Deserialize, Default)]
struct TriggerRequest {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    force: bool,
}

async fn trigger_build(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    body: Option<web::Json<TriggerRequest>>,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let (namespace, app_name) = path.into_inner();
    let app = AppRef::parse(&format!("{namespace}/{app_name}"))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    auth::require_build(&builder, &request, &app).await?;
    let body = body.map(web::Json::into_inner).unwrap_or_default();
    let store = builder.store.clone();
    let requested = request.extensions().get::<RequestId>().cloned();
    let (queued, build) = blocking(move || -> Result<_, ApiError> {
        let app = store
            .db
            .app(&app)?
            .ok_or_else(|| ApiError::not_found(format!("no app {app}")))?;
        let git_ref = body.git_ref.unwrap_or_else(|| app.branch.clone());
        let is_commit = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
        let new = NewBuild {
            app_id: app.id,
            commit_id: is_commit.then(|| git_ref.to_ascii_lowercase()),
            git_ref,
            trigger: "api".into(),
            force: body.force,
        };
        let queued = store
            .db
            .enqueue_requested_build(&new, None, requested.as_ref())?;
        let build = store.db.build(queued.id())?;
        Ok((queued, build))
    })
    .await?;
    builder.wake();
    let build = build.ok_or_else(|| ApiError::not_found("the build vanished"))?;
    let mut body = build_json(&build, &builder);
    body["new"] = json!(matches!(queued, Queued::New(_)));
    Ok(HttpResponse::Accepted().json(body))
}

async fn build_status(
    request: HttpRequest,
    path: web::Path<i64>,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth::principal(&builder, &request).await?;
    let (build, _) =
        readable_build(&builder, &principal, path.into_inner(), Reading::Build).await?;
    Ok(HttpResponse::Ok().json(build_json(&build, &builder)))
}

async fn cancel_build(
    request: HttpRequest,
    path: web::Path<i64>,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let principal = auth::principal(&builder, &request).await?;
    if principal.is_anonymous() {
        return Err(auth::unauthorized(format!(
            "cancelling build {id} needs credentials: a token with build on its app, or your user name and registry password"
        )));
    }
    let (_, app) = readable_build(&builder, &principal, id, Reading::Build).await?;
    auth::check_build(&builder, &principal, &app).await?;
    let store = builder.store.clone();
    let state = blocking(move || -> Result<_, StoreError> {
        match store.db.build(id)? {
            Some(build) if build.state.is_finished() => Ok(Some((true, build.state))),
            Some(_) => Ok(store.db.request_cancel(id)?.map(|state| (false, state))),
            None => Ok(None),
        }
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no build {id}")))?;
    match state {
        (true, state) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("build {id} has ended already ({state})"),
        )),
        (false, BuildState::Storing) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("build {id} is storing its image and can no longer be cancelled"),
        )),
        (false, BuildState::Cancelled) => {
            Ok(HttpResponse::Ok().json(json!({ "state": "cancelled" })))
        }
        (false, _) => Ok(HttpResponse::Accepted().json(json!({ "state": "cancelling" }))),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    after: Option<i64>,
}

/// A log page ends after this many lines,
const LOG_PAGE_LINES: usize = 5000;
/// or before the line that would take its text past this many bytes (a page has at least one
/// line). Lines are up to 32 KiB, so a page by lines alone could be 160 MB of JSON, built in
/// memory for each reader.
const LOG_PAGE_BYTES: usize = 1 << 20;
/// Lines read from the store at a time while filling a page: at most 2 MiB of text.
const LOG_BATCH_LINES: usize = 64;

/// One page of a build's log: the lines after `after`, and in `next` the `after` of the page
/// that follows; `more` says the page stopped at its size and more lines are stored already.
async fn build_log(
    request: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<LogQuery>,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let principal = auth::principal(&builder, &request).await?;
    readable_build(&builder, &principal, id, Reading::Log).await?;
    let after = query.after.unwrap_or(0);
    let store = builder.store.clone();
    let (lines, more) = blocking(move || -> Result<_, StoreError> {
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut cursor = after;
        loop {
            let wanted = LOG_BATCH_LINES.min(LOG_PAGE_LINES - page.len());
            let batch = store.db.log_lines(id, cursor, wanted)?;
            let complete = batch.len() < wanted;
            for line in batch {
                if !page.is_empty() && bytes + line.line.len() > LOG_PAGE_BYTES {
                    return Ok((page, true));
                }
                bytes += line.line.len();
                cursor = line.seq;
                page.push(line);
            }
            if complete {
                return Ok((page, false));
            }
            if page.len() == LOG_PAGE_LINES {
                let more = !store.db.log_lines(id, cursor, 1)?.is_empty();
                return Ok((page, more));
            }
        }
    })
    .await?;
    let next = lines.last().map_or(after, |l| l.seq);
    let lines: Vec<_> = lines
        .into_iter()
        .map(|l| json!({ "seq": l.seq, "at_ms": l.at_ms, "step": l.step, "line": l.line }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "lines": lines, "next": next, "more": more })))
}
