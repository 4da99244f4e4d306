//! `git push` and `git fetch` over smart HTTP, served by git's own `http-backend` (libgit2 has
//! no server side) against the app's bare repository.

use std::process::Stdio;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use buildgrid_core::{AppRef, RequestId};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::routes::{ApiError, blocking};
use crate::{Builder, auth, fetch, hooks};

const SMART_PATHS: [&str; 3] = ["info/refs", "git-upload-pack", "git-receive-pack"];

pub(crate) async fn handle(
    request: HttpRequest,
    mut payload: web::Payload,
    path: web::Path<(String, String, String)>,
    builder: web::Data<Arc<Builder>>,
) -> Result<HttpResponse, ApiError> {
    let (namespace, repo, tail) = path.into_inner();
    // Only the smart protocol's three paths: git's backend answers anything else it refuses
    // (`..`, `//`, a NUL) with 500, and the dumb protocol's files are not served.
    if !SMART_PATHS.contains(&tail.as_str()) {
        return Err(ApiError::not_found(
            "git repositories serve git's smart HTTP protocol only: <repo>.git/info/refs, git-upload-pack and git-receive-pack",
        ));
    }
    let Some(app_name) = repo.strip_suffix(".git") else {
        return Err(ApiError::not_found("git repositories end in .git"));
    };
    let app = AppRef::parse(&format!("{namespace}/{app_name}"))
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    let store = builder.store.clone();
    auth::require_build(&builder, &request, &app).await?;
    let known = {
        let store = store.clone();
        let app = app.clone();
        blocking(move || store.db.app(&app)).await?
    };
    if known.is_none() {
        return Err(ApiError::not_found(format!(
            "app {app} is not registered: create it with `buildgrid app create {app} --git <url>`"
        )));
    }
    let git_dir = store.git_dir(&app);
    {
        let git_dir = git_dir.clone();
        let exe = builder.settings.exe.clone();
        let data = store.root().to_owned();
        let app = app.clone();
        let lock = builder.git_lock(&git_dir);
        blocking(move || {
            let _turn = lock.lock().unwrap_or_else(|p| p.into_inner());
            fetch::open_or_init(&git_dir).map_err(|e| ApiError::internal(&e))?;
            hooks::install(&git_dir, &exe, &data, &app).map_err(|e| ApiError::internal(&e))
        })
        .await?;
    }

    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned());
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", store.git_root())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{namespace}/{repo}/{tail}"))
        .env("REQUEST_METHOD", request.method().as_str())
        .env("QUERY_STRING", request.query_string())
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "buildgrid")
        .env(
            "REMOTE_ADDR",
            request
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        )
        .env("BUILDGRID_PUBLIC_URL", &builder.settings.public_url)
        // The hook names the push's request in the build it queues.
        .env("BUILDGRID_REQUEST_ID", request_id.as_deref().unwrap_or(""))
        // A push larger than this is refused by git ("pack exceeds maximum allowed size"),
        // every object pushed is checked before it is stored, and `git push -o nowait`
        // reaches the hook.
        .env("GIT_CONFIG_COUNT", "3")
        .env("GIT_CONFIG_KEY_0", "receive.maxInputSize")
        .env(
            "GIT_CONFIG_VALUE_0",
            builder.settings.max_push_size.to_string(),
        )
        .env("GIT_CONFIG_KEY_1", "receive.fsckObjects")
        .env("GIT_CONFIG_VALUE_1", "true")
        .env("GIT_CONFIG_KEY_2", "receive.advertisePushOptions")
        .env("GIT_CONFIG_VALUE_2", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ApiError::internal(&e))?;

    let mut stdin = child.stdin.take().expect("stdin is piped");
    tokio::task::spawn_local(async move {
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else { break };
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut stderr = child.stderr.take().expect("stderr is piped");

    // CGI headers, then the body.
    let mut response = HttpResponse::Ok();
    loop {
        let mut line = String::new();
        let n = stdout
            .read_line(&mut line)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let line = line.trim_end();
        if n == 0 || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.status(code);
        } else {
            response.insert_header((name.to_owned(), value.to_owned()));
        }
    }
    let is_push = tail == "git-receive-pack";
    let waker = builder.get_ref().clone();
    tokio::task::spawn_local(async move {
        let mut errors = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut errors).await;
        let status = child.wait().await;
        if !errors.trim().is_empty() {
            tracing::warn!(errors = errors.trim(), "git http-backend");
        }
        if let Ok(status) = status
            && !status.success()
        {
            tracing::warn!(%status, "git http-backend failed");
        }
        if is_push {
            waker.wake();
        }
    });
    Ok(response.streaming(tokio_util::io::ReaderStream::new(stdout)))
}
