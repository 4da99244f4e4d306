//! Server-rendered web pages of buildgrid.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_core::RepoName;
use buildgrid_store::Store;

/// Mounts the web pages.
pub fn configure(cfg: &mut web::ServiceConfig, store: Arc<Store>) {
    cfg.app_data(web::Data::from(store))
        .route("/", web::get().to(index));
}

/// The images this buildgrid serves, each with its pull command.
async fn index(request: HttpRequest, store: web::Data<Store>) -> HttpResponse {
    let host = request.connection_info().host().to_owned();
    let listing = web::block(move || -> Result<Vec<(String, Vec<String>)>, String> {
        let names = store
            .db
            .repositories(None, 1000)
            .map_err(|e| e.to_string())?;
        let mut listing = Vec::new();
        for name in names {
            let repo = RepoName::parse(&name).map_err(|e| e.to_string())?;
            let tags = store.db.tags(&repo, None, 50).map_err(|e| e.to_string())?;
            listing.push((name, tags));
        }
        Ok(listing)
    })
    .await;
    let listing = match listing {
        Ok(Ok(listing)) => listing,
        Ok(Err(error)) => return internal_error(&error),
        Err(error) => return internal_error(&error.to_string()),
    };
    let mut html = String::from(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>buildgrid</title>\
         <style>body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}li{margin:.3rem 0}</style>\
         <h1>buildgrid</h1>",
    );
    if listing.is_empty() {
        html.push_str("<p>No images yet.</p>");
    }
    for (name, tags) in listing {
        html.push_str(&format!("<h2>{}</h2><ul>", escape(&name)));
        for tag in tags {
            html.push_str(&format!(
                "<li><code>docker pull {}/{}:{}</code></li>",
                escape(&host),
                escape(&name),
                escape(&tag)
            ));
        }
        html.push_str("</ul>");
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html)
}

fn internal_error(error: &str) -> HttpResponse {
    tracing::error!(%error, "rendering a page failed");
    HttpResponse::InternalServerError().body("internal error; the server log has the details")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
