//! The stylesheet and the script, embedded in the binary. Pages link them with a version taken
//! from their content, so browsers may keep them for good.

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

const CSS: &str = include_str!("../static/buildgrid.css");
const JS: &str = include_str!("../static/buildgrid.js");

fn versioned(name: &str, content: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut hasher);
    format!("/static/{name}?v={:016x}", hasher.finish())
}

static CSS_URL: LazyLock<String> = LazyLock::new(|| versioned("buildgrid.css", CSS));
static JS_URL: LazyLock<String> = LazyLock::new(|| versioned("buildgrid.js", JS));

pub fn css_url() -> &'static str {
    &CSS_URL
}

pub fn js_url() -> &'static str {
    &JS_URL
}

pub async fn file(name: web::Path<String>) -> HttpResponse {
    let (content_type, body) = match name.as_str() {
        "buildgrid.css" => ("text/css; charset=utf-8", CSS),
        "buildgrid.js" => ("text/javascript; charset=utf-8", JS),
        _ => return HttpResponse::NotFound().body("no such file"),
    };
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(body)
}
