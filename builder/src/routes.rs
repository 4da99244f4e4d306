//! HTTP entry points of the builder: git smart HTTP, webhooks and the build API.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use buildgrid_core::AppRef;
use buildgrid_store::{Build, BuildState, NewBuild, Queued, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::webhook::{self, Provider, Verdict};
use crate::{Builder, auth, git_http};

/// Webhook bodies above this size are refused.
const WEBHOOK_LIMIT: usize = 25 << 20;

/// Mounts `/git`, `/hooks` and `/api` routes.
pub fn configure(cfg: &mut web::ServiceConfig, builder: Arc<Builder>) {
    cfg.app_data(web::Data::new(builder))
        .route(
            "/git/{namespace}/{repo}/{tail:.*}",
            web::route().to(git_http::handle),
        )
        .service(
            web::resource("/hooks/{provider}/{namespace}/{app}")
                .app_data(web::PayloadConfig::new(WEBHOOK_LIMIT))
                .route(web::post().to(webhook_delivery)),
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

/// The app a build belongs to.
async fn build_app(builder: &Builder, id: i64) -> Result<(Build, AppRef), ApiError> {
    let store = builder.store.clone();
    blocking(move || -> Result<_, ApiError> {
        let build = store
            .db
            .build(id)?
            .ok_or_else(|| ApiError::not_found(format!("no build {id}")))?;
        let app = store
            .db
            .app_by_id(build.app_id)?
            .ok_or_else(|| ApiError::not_found(format!("no build {id}")))?;
        Ok((build, app.app))
    })
    .await
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

async fn webhook_delivery(
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let (provider, namespace, app_name) = path.into_inner();
    let provider = Provider::parse(&provider).ok_or_else(|| {
        ApiError::not_found("webhooks are /hooks/github|gitea|gitlab/<namespace>/<app>")
    })?;
    let app = AppRef::parse(&format!("{namespace}/{app_name}"))
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    let store = builder.store.clone();
    let app = {
        let store = store.clone();
        blocking(move || store.db.app(&app)).await?
    }
    .ok_or_else(|| ApiError::not_found("no such app"))?;
    let verdict = webhook::verify(provider, request.headers(), &body, &app.webhook_secret)
        .map_err(|e| match e {
            webhook::WebhookError::Payload(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            _ => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
        })?;
    let (git_ref, commit, delivery, repository) = match verdict {
        Verdict::Ignore(why) => {
            return Ok(HttpResponse::Ok().json(json!({ "ignored": why })));
        }
        Verdict::Push {
            git_ref,
            commit,
            delivery,
            repository,
        } => (git_ref, commit, delivery, repository),
    };
    // A push to the repository of one of the app's services builds that repository.
    let source = {
        let store = store.clone();
        let slugs: Vec<String> = repository
            .iter()
            .filter_map(|url| app.app.image_repo(url).ok())
            .map(|repo| repo.to_string())
            .collect();
        let app_id = app.id;
        blocking(
            move || -> Result<Option<buildgrid_store::Source>, StoreError> {
                for repo in &slugs {
                    if let Some(source) = store.db.source_by_repo(app_id, repo)? {
                        return Ok(Some(source));
                    }
                }
                Ok(None)
            },
        )
        .await?
    };
    let branch = source.as_ref().map_or(&app.branch, |s| &s.branch).clone();
    let branch_ref = format!("refs/heads/{branch}");
    if git_ref != branch_ref {
        return Ok(HttpResponse::Ok().json(json!({
            "ignored": format!("{git_ref} is not {branch_ref}, the branch this app builds")
        })));
    }
    let queued = {
        let store = store.clone();
        let source = source.map(|s| s.id);
        let trigger = provider.as_str().to_owned();
        blocking(move || -> Result<Option<Queued>, StoreError> {
            store.db.enqueue_delivered_build(
                delivery.as_deref(),
                &NewBuild {
                    app_id: app.id,
                    git_ref: branch,
                    commit_id: Some(commit),
                    trigger,
                    force: false,
                },
                source,
            )
        })
        .await?
    };
    let Some(queued) = queued else {
        return Ok(HttpResponse::Ok().json(json!({ "ignored": "this delivery was seen before" })));
    };
    builder.wake();
    Ok(HttpResponse::Accepted().json(json!({
        "build": queued.id(),
        "new": matches!(queued, Queued::New(_)),
        "url": format!("{}/builds/{}", builder.settings.public_url, queued.id()),
    })))
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
    let (queued, build) = blocking(move || -> Result<_, ApiError> {
        let app = store
            .db
            .app(&app)?
            .ok_or_else(|| ApiError::not_found(format!("no app {app}")))?;
        let git_ref = body.git_ref.unwrap_or_else(|| app.branch.clone());
        let is_commit = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
        let queued = store.db.enqueue_build(&NewBuild {
            app_id: app.id,
            commit_id: is_commit.then(|| git_ref.to_ascii_lowercase()),
            git_ref,
            trigger: "api".into(),
            force: body.force,
        })?;
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
    let (build, app) = build_app(&builder, path.into_inner()).await?;
    auth::require_read(&builder, &request, app.namespace()).await?;
    Ok(HttpResponse::Ok().json(build_json(&build, &builder)))
}

async fn cancel_build(
    request: HttpRequest,
    path: web::Path<i64>,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (_, app) = build_app(&builder, id).await?;
    auth::require_build(&builder, &request, &app).await?;
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

async fn build_log(
    request: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<LogQuery>,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (_, app) = build_app(&builder, id).await?;
    auth::require_read(&builder, &request, app.namespace()).await?;
    let after = query.after.unwrap_or(0);
    let store = builder.store.clone();
    let lines = blocking(move || store.db.log_lines(id, after, 5000)).await?;
    let lines: Vec<_> = lines
        .into_iter()
        .map(|l| json!({ "seq": l.seq, "at_ms": l.at_ms, "step": l.step, "line": l.line }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "lines": lines })))
}
