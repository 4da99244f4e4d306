//! The webhook endpoint, `POST /hooks/<provider>/<namespace>/<app>`: what a delivery must show
//! before its body is read, and the build it queues.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use buildgrid_core::{AppRef, RequestId};
use buildgrid_store::{App, NewBuild, Queued, Source, StoreError};
use futures_util::StreamExt;
use serde_json::json;

use crate::Builder;
use crate::routes::{ApiError, blocking};
use crate::webhook::{self, Provider, Verdict};

/// Webhook bodies above this size are refused with 413. GitHub sends up to 25 MB, but a push
/// event is far smaller: GitHub lists at most 2,048 commits in one (about 1 KiB each), GitLab
/// at most 20. 4 MiB holds any push event; a larger body is buffered for nothing.
const WEBHOOK_LIMIT: usize = 4 << 20;

/// The whole webhook body must arrive within this, or the request ends with 408: the forges
/// send a few KiB at once, and a slow body would hold its buffer (and connection) for nothing.
const WEBHOOK_READ_TIME: Duration = Duration::from_secs(10);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "webhook bodies are limited to {} MiB: build this push with `buildgrid build` or the build API",
            WEBHOOK_LIMIT >> 20
        ),
    )
}

/// The answer to a delivery that does not prove it knows the app's secret, and (so that the
/// answers do not tell apps apart) to a delivery for an app that does not exist.
fn refused(error: &webhook::WebhookError) -> ApiError {
    match error {
        webhook::WebhookError::Payload(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, error.to_string())
        }
        webhook::WebhookError::MissingSignature(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, error.to_string())
        }
        webhook::WebhookError::BadSignature | webhook::WebhookError::WeakSecret(_) => {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                webhook::WebhookError::BadSignature.to_string(),
            )
        }
    }
}

/// Reads a webhook body of at most [`WEBHOOK_LIMIT`] bytes within [`WEBHOOK_READ_TIME`];
/// with `keep` false, only counts it.
async fn read_webhook_body(payload: &mut web::Payload, keep: bool) -> Result<web::Bytes, ApiError> {
    let read = async {
        let mut body = web::BytesMut::new();
        let mut read = 0;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the webhook body: {e}"),
                )
            })?;
            read += chunk.len();
            if read > WEBHOOK_LIMIT {
                return Err(too_large());
            }
            if keep {
                body.extend_from_slice(&chunk);
            }
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(WEBHOOK_READ_TIME, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the webhook body did not arrive within {} seconds",
                    WEBHOOK_READ_TIME.as_secs()
                ),
            )
        })?
}

/// A delivery is checked in the order that costs least to refuse: the provider and app name
/// from the path, the signature header and the declared length, the app and its secret, and
/// only then is the body read (capped and timed; dropped unread for a missing app), its
/// signature checked and its push queued.
pub(crate) async fn webhook_delivery(
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
    mut payload: web::Payload,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let (provider, namespace, app_name) = path.into_inner();
    let provider = Provider::parse(&provider).ok_or_else(|| {
        ApiError::not_found("webhooks are /hooks/github|gitea|gitlab/<namespace>/<app>")
    })?;
    let app = AppRef::parse(&format!("{namespace}/{app_name}"))
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    webhook::require_signature(provider, request.headers()).map_err(|e| refused(&e))?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > WEBHOOK_LIMIT as u64) {
        return Err(too_large());
    }
    let store = builder.store.clone();
    let app = {
        let store = store.clone();
        blocking(move || store.db.app(&app)).await?
    };
    // A delivery for a missing app (or one whose secret is too short to check) has its body
    // read and dropped under the same cap and time as a real one, then gets the answer a wrong
    // signature gets: nothing in the answer or its timing tells whether the app exists, and
    // no body is kept for it.
    let app = app.filter(|app| {
        let weak = buildgrid_core::app::check_webhook_secret(&app.webhook_secret).err();
        if let Some(error) = &weak {
            tracing::warn!(
                app = %app.app,
                %error,
                "webhook delivery refused: the app's webhook secret is too short to check a signature"
            );
        }
        weak.is_none()
    });
    let Some(app) = app else {
        read_webhook_body(&mut payload, false).await?;
        return Err(refused(&webhook::WebhookError::BadSignature));
    };
    let body = read_webhook_body(&mut payload, true).await?;
    let verdict = webhook::verify(provider, request.headers(), &body, &app.webhook_secret)
        .map_err(|e| refused(&e))?;
    let (git_ref, commit, delivery, repository) = match verdict {
        Verdict::Ignore(why) => {
            return Ok(HttpResponse::Ok().json(json!({ "ignored": why })));
        }
        Verdict::Deleted {
            branch,
            delivery,
            repository,
        } => return branch_deleted(&builder, &app, branch, delivery, &repository).await,
        Verdict::Push {
            git_ref,
            commit,
            delivery,
            repository,
        } => (git_ref, commit, delivery, repository),
    };
    let source = source_of(&builder, &app, &repository).await?;
    // A push of a branch brings it back if a push had deleted it, whether it builds or not.
    if let Some(pushed) = git_ref.strip_prefix("refs/heads/") {
        let (store, app_id, source_id) = (store.clone(), app.id, source.as_ref().map(|s| s.id));
        let pushed = pushed.to_owned();
        blocking(move || store.db.branch_pushed(app_id, source_id, &pushed)).await?;
    }
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
        let requested = request.extensions().get::<RequestId>().cloned();
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
                requested.as_ref(),
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

/// The source a push to one of `repository`'s URLs builds: one of the app's sources, matched
/// by repository slug, or `None` for the app's own repository.
async fn source_of(
    builder: &Builder,
    app: &App,
    repository: &[String],
) -> Result<Option<Source>, ApiError> {
    let store = builder.store.clone();
    let slugs: Vec<String> = repository
        .iter()
        .filter_map(|url| app.app.image_repo(url).ok())
        .map(|repo| repo.to_string())
        .collect();
    let app_id = app.id;
    blocking(move || -> Result<Option<Source>, StoreError> {
        for repo in &slugs {
            if let Some(source) = store.db.source_by_repo(app_id, repo)? {
                return Ok(Some(source));
            }
        }
        Ok(None)
    })
    .await
}

/// Records that a push deleted `branch` of the app's repository or of one of its sources:
/// retention lets the branch's builds go `drop_deleted_after` days later.
async fn branch_deleted(
    builder: &Builder,
    app: &App,
    branch: String,
    delivery: Option<String>,
    repository: &[String],
) -> Result<HttpResponse, ApiError> {
    let source = source_of(builder, app, repository).await?;
    let store = builder.store.clone();
    let (app_id, source_id, app_ref) = (app.id, source.map(|s| s.id), app.app.clone());
    let recorded = {
        let branch = branch.clone();
        blocking(move || -> Result<Option<u32>, StoreError> {
            let at = buildgrid_store::now();
            if !store
                .db
                .branch_deleted(app_id, source_id, &branch, at, delivery.as_deref())?
            {
                return Ok(None);
            }
            let rule = store
                .db
                .effective_retention(app_ref.namespace(), Some(app_ref.app()))?;
            Ok(Some(rule.drop_deleted_after))
        })
        .await?
    };
    let Some(days) = recorded else {
        return Ok(HttpResponse::Ok().json(json!({ "ignored": "this delivery was seen before" })));
    };
    tracing::info!(app = %app.app, %branch, source = ?source_id, "branch deleted upstream");
    Ok(HttpResponse::Ok().json(json!({
        "deleted": branch,
        "drop_deleted_after_days": days,
    })))
}
