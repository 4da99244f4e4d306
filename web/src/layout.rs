//! The page shell and the small pieces every page uses: status badges, copy buttons, times.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use buildgrid_store::BuildState;
use maud::{DOCTYPE, Markup, html};

use crate::{Viewer, assets, format};

/// A page: `title` in the tab and as the heading, `crumbs` (label, link) leading to it.
pub fn page(title: &str, crumbs: &[(&str, &str)], content: Markup) -> Markup {
    shell(None, title, crumbs, content)
}

/// A page with the viewer's sign-in state in its header.
pub fn page_for(viewer: &Viewer, title: &str, crumbs: &[(&str, &str)], content: Markup) -> Markup {
    shell(Some(viewer), title, crumbs, content)
}

fn shell(viewer: Option<&Viewer>, title: &str, crumbs: &[(&str, &str)], content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · buildgrid" }
                link rel="stylesheet" href=(assets::css_url());
                script src=(assets::js_url()) defer {}
            }
            body data-rendered=(format::now()) {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    nav aria-label="Breadcrumbs" {
                        a.brand href="/" { "buildgrid" }
                        @for (label, link) in crumbs {
                            span.sep aria-hidden="true" { "/" }
                            a href=(link) { (label) }
                        }
                        @if let Some(viewer) = viewer {
                            span.account {
                                @if let Some(user) = viewer.user() {
                                    a href="/settings" { (user.name) }
                                    form.inline method="post" action="/logout" {
                                        input type="hidden" name="csrf" value=(viewer.csrf_token());
                                        button.link type="submit" { "Sign out" }
                                    }
                                } @else {
                                    a href="/login" { "Sign in" }
                                }
                            }
                        }
                    }
                }
                main #content {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// Pages load only buildgrid's own stylesheet and script, and are never framed.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";

pub fn html_response(status: StatusCode, markup: &Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(markup.0.clone())
}

pub fn error_page(title: &str, message: &str) -> Markup {
    page(
        title,
        &[],
        html! {
            p.notice { (message) }
            p { a href="/" { "Back to the apps" } }
        },
    )
}

/// What the apps page says when the viewer sees no app: how to register one (admins), how to
/// be given a namespace (other users), or to sign in (anonymous visitors).
pub fn no_apps(viewer: &Viewer) -> Markup {
    html! {
        @if let Some(user) = viewer.user() {
            @if viewer.is_admin() {
                p.notice #no-apps {
                    "No apps yet. Register one with "
                    code { "buildgrid app create <namespace>/<app> --git <url>" }
                    ", then push to it."
                }
            } @else {
                p.notice #no-apps {
                    "You see no apps yet: you see those of the namespaces you are a member of, and of public ones. "
                    "Ask an admin to add you to your team's namespace ("
                    code { "buildgrid namespace add-member <namespace> " (user.name) }
                    ")."
                }
            }
        } @else {
            p.notice #no-apps {
                "No public apps here. "
                a href="/login" { "Sign in" }
                " to see the apps of your namespaces."
            }
        }
    }
}

/// A confirm step that works without JavaScript: the question, then a form that posts
/// `fields` (and the session's CSRF token) to `action`, and a way back to `cancel`.
pub fn confirm(
    viewer: &Viewer,
    title: &str,
    question: Markup,
    action: &str,
    fields: &[(&str, &str)],
    button: &str,
    cancel: &str,
) -> Markup {
    page_for(
        viewer,
        title,
        &[],
        html! {
            (question)
            form.bar #confirm method="post" action=(action) {
                input type="hidden" name="csrf" value=(viewer.csrf_token());
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" { (button) }
                a href=(cancel) { "Cancel" }
            }
        },
    )
}

/// A build state as a badge: a symbol and the word, so it reads without colour.
pub fn status(state: BuildState) -> Markup {
    let (class, symbol) = match state {
        BuildState::Succeeded => ("ok", "✓"),
        BuildState::Failed => ("bad", "✗"),
        BuildState::Queued => ("wait", "○"),
        BuildState::Fetching | BuildState::Building | BuildState::Storing => ("run", "●"),
        BuildState::Cancelled | BuildState::Skipped => ("off", "–"),
    };
    html! {
        span class={ "status " (class) } data-state=(state.as_str()) {
            span aria-hidden="true" { (symbol) } " " (state.as_str())
        }
    }
}

/// Text to copy (`id` names it) with a copy button; the button shows only with JavaScript,
/// and the text is selectable either way.
pub fn copyable(id: &str, text: &str) -> Markup {
    html! {
        span.copyable {
            code #(id) { (text) }
            button.copy type="button" data-copy=(id) aria-label={ "Copy " (text) } { "Copy" }
        }
    }
}

/// A block of text to copy: commands or YAML.
pub fn copyable_block(id: &str, text: &str) -> Markup {
    html! {
        div.block {
            pre #(id) { (text) }
            button.copy type="button" data-copy=(id) { "Copy" }
        }
    }
}

/// "5 min ago", with the exact time on hover and for machines; the script keeps the text
/// current (`data-ago`).
pub fn ago(now: i64, then: i64) -> Markup {
    html! {
        time datetime=(format::iso(then)) title=(format::datetime(then)) data-ago { (format::age(now, then)) }
    }
}

/// Marks every occurrence of `needle` in `text` (ignoring ASCII case) with `<mark>`.
pub fn highlighted(text: &str, needle: Option<&str>) -> Markup {
    let Some(needle) = needle.filter(|n| !n.is_empty()) else {
        return html! { (text) };
    };
    // ASCII lowercasing keeps every byte offset, so matches in `lower` cut `text` cleanly.
    let lower = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut pieces = Vec::new();
    let mut rest = 0;
    for (start, _) in lower.match_indices(&needle) {
        pieces.push((false, &text[rest..start]));
        pieces.push((true, &text[start..start + needle.len()]));
        rest = start + needle.len();
    }
    pieces.push((false, &text[rest..]));
    html! {
        @for (marked, piece) in pieces {
            @if marked { mark { (piece) } } @else { (piece) }
        }
    }
}
