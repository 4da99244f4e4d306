//! Operators' endpoints: Prometheus `/metrics`, and the probes `/healthz` (the process answers)
//! and `/readyz` (the database and the blob directory answer).
//!
//! The libraries record their series through the `metrics` facade; this module installs the
//! Prometheus recorder and renders it on request (no listener of its own). Labels are kinds,
//! states, methods and statuses, never a repository or user name.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use anyhow::Context;
use buildgrid_access::Access;
use buildgrid_store::Store;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A probe whose store does not answer within this is not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Buckets of request latencies, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of builds, their stages and deploys, in seconds.
const LONG_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// The build states a build waits or runs in, each a `buildgrid_builds_unfinished` series.
const UNFINISHED_STATES: [&str; 4] = ["queued", "fetching", "building", "storing"];

/// Installs the process's Prometheus recorder and describes the series.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("buildgrid_registry_request_duration_seconds".into()),
            REQUEST_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Prefix("buildgrid_build".into()), LONG_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Prefix("buildgrid_deploy".into()), LONG_BUCKETS)
        })
        .context("cannot set up the metrics' buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("cannot install the metrics recorder")?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "buildgrid_registry_requests_total",
        "Registry requests by route kind, method and status"
    );
    describe_histogram!(
        "buildgrid_registry_request_duration_seconds",
        Unit::Seconds,
        "Time of registry requests to their answer's head, by route kind and method"
    );
    describe_counter!(
        "buildgrid_registry_bytes_served_total",
        Unit::Bytes,
        "Body bytes of registry GET answers, by route kind"
    );
    describe_counter!(
        "buildgrid_registry_auth_failures_total",
        "Registry credentials that did not verify"
    );
    describe_counter!(
        "buildgrid_registry_rate_limited_total",
        "Registry sign-ins refused by the limits on attempts"
    );
    describe_counter!("buildgrid_builds_total", "Builds ended, by outcome");
    describe_histogram!(
        "buildgrid_build_duration_seconds",
        Unit::Seconds,
        "Time from a build's claim to its end, by outcome"
    );
    describe_histogram!(
        "buildgrid_build_stage_duration_seconds",
        Unit::Seconds,
        "Time of build stages (fetch, context, build, store)"
    );
    describe_gauge!(
        "buildgrid_builds_unfinished",
        "Builds waiting or running, by state (queued is the queue's depth)"
    );
    describe_counter!("buildgrid_deploys_total", "Deploys ended, by outcome");
    describe_histogram!(
        "buildgrid_deploy_duration_seconds",
        Unit::Seconds,
        "Time of deploys, by outcome"
    );
    describe_gauge!(
        "buildgrid_web_event_streams_open",
        "Server-sent event streams open"
    );
    describe_counter!(
        "buildgrid_gc_runs_total",
        "Scheduled garbage collections (--gc-interval), by outcome"
    );
    describe_counter!(
        "buildgrid_gc_deleted_total",
        "What scheduled garbage collections deleted: manifests, blobs and bytes"
    );
    describe_gauge!("buildgrid_store_blobs", "Blobs stored");
    describe_gauge!(
        "buildgrid_store_blob_bytes",
        Unit::Bytes,
        "Total size of the stored blobs"
    );
}

/// What the operators' endpoints need.
pub struct Operations {
    pub handle: PrometheusHandle,
    pub store: Arc<Store>,
    pub access: Arc<Access>,
}

/// Mounts `/healthz`, `/readyz` and `/metrics`. With `open_metrics` (the separate metrics
/// address) `/metrics` needs no credentials; otherwise only an admin's (registry password or
/// an admin token, as Basic or Bearer).
pub fn configure(
    cfg: &mut web::ServiceConfig,
    operations: web::Data<Operations>,
    open_metrics: bool,
) {
    let metrics = if open_metrics {
        web::get().to(open_metrics_endpoint)
    } else {
        web::get().to(admin_metrics_endpoint)
    };
    cfg.app_data(operations)
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", metrics);
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(operations: web::Data<Operations>) -> HttpResponse {
    let store = operations.store.clone();
    let check = web::block(move || -> Result<(), String> {
        store
            .db
            .ping()
            .map_err(|e| format!("the database does not answer: {e}"))?;
        store
            .blobs
            .answering()
            .map_err(|e| format!("the blob store does not answer: {e}"))
    });
    let failure = match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(Ok(()))) => {
            return HttpResponse::Ok()
                .content_type("text/plain")
                .body("ready\n");
        }
        Ok(Ok(Err(reason))) => reason,
        Ok(Err(error)) => format!("the check failed: {error}"),
        Err(_) => format!(
            "the store did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        ),
    };
    tracing::warn!(%failure, "not ready");
    HttpResponse::ServiceUnavailable()
        .content_type("text/plain")
        .body(format!("not ready: {failure}\n"))
}

async fn open_metrics_endpoint(operations: web::Data<Operations>) -> HttpResponse {
    render(&operations).await
}

async fn admin_metrics_endpoint(
    request: HttpRequest,
    operations: web::Data<Operations>,
) -> HttpResponse {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = request
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    let access = operations.access.clone();
    // A password not seen lately runs argon2: not on the async threads.
    let checked = web::block(move || {
        access
            .authenticate(authorization.as_deref(), &client)
            .map(|principal| (access.is_admin(&principal), principal.is_anonymous()))
    })
    .await;
    match checked {
        Ok(Ok((true, _))) => render(&operations).await,
        Ok(Ok((false, false))) => HttpResponse::Forbidden()
            .content_type("text/plain")
            .body("only admins read /metrics here; use --metrics-listen for an open address\n"),
        Ok(Ok((false, true)) | Err(_)) => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"buildgrid\""))
            .content_type("text/plain")
            .body("sign in as an admin (registry password or admin token) to read /metrics\n"),
        Err(error) => {
            tracing::error!(%error, "cannot check the credentials of a /metrics request");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Reads the store's gauges (two aggregate queries) and renders every series.
async fn render(operations: &Operations) -> HttpResponse {
    let store = operations.store.clone();
    let read = web::block(move || {
        Ok::<_, buildgrid_store::StoreError>((
            store.db.blob_totals()?,
            store.db.unfinished_build_counts()?,
        ))
    })
    .await;
    match read {
        Ok(Ok((blobs, unfinished))) => {
            metrics::gauge!("buildgrid_store_blobs").set(blobs.count as f64);
            metrics::gauge!("buildgrid_store_blob_bytes").set(blobs.bytes as f64);
            for state in UNFINISHED_STATES {
                let count = unfinished
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("buildgrid_builds_unfinished", "state" => state).set(count as f64);
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "cannot read the store's totals for /metrics"),
        Err(error) => tracing::warn!(%error, "cannot read the store's totals for /metrics"),
    }
    operations.handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(operations.handle.render())
}
