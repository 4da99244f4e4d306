//! The settings page: the viewer's registry credentials and API tokens; for admins also users,
//! namespaces and their members. Every change is a POST carrying the session's CSRF token and
//! answers 303 to the page, so a reload never sends a form twice. A new secret is stored only
//! hashed and shown once: the POST that made it hands it to the page it redirects to in a
//! cookie of the settings path that lives a minute, and that page shows it and deletes it.
//! A refused change answers with the page, its form filled in as sent and the reason beside it.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_access::Scope;
use buildgrid_store::{Namespace, TokenRow, User};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::session::secure;
use crate::{Viewer, Web, format, layout};

/// Carries a secret made by a POST to the page it redirects to.
const SHOWN_COOKIE: &str = "bg_shown";
/// How long the secret waits in the browser for that page, at most.
const SHOWN_TTL: i64 = 60;

/// What the page lists.
struct Listing {
    tokens: Vec<TokenRow>,
    users: Vec<User>,
    namespaces: Vec<Namespace>,
}

/// A secret made by the request before: shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShownKind {
    Registry,
    Token,
    User,
}

struct Shown {
    kind: ShownKind,
    /// Registry: user name and password; token: name and secret; user: name and web password.
    values: [String; 2],
}

impl Shown {
    fn title(&self) -> &'static str {
        match self.kind {
            ShownKind::Registry => "New registry credentials",
            ShownKind::Token => "New token",
            ShownKind::User => "New user",
        }
    }

    fn labels(&self) -> [&'static str; 2] {
        match self.kind {
            ShownKind::Registry => ["Username", "Password"],
            ShownKind::Token => ["Name", "Token"],
            ShownKind::User => ["User name", "Web password"],
        }
    }

    fn note(&self) -> &'static str {
        match self.kind {
            ShownKind::Registry => "Shown only now. The previous password no longer works.",
            ShownKind::Token => {
                "Shown only now: copy it into your CI system's secrets. Only its hash is kept."
            }
            ShownKind::User => {
                "Shown only now: hand it over safely. Add the user to namespaces below; they make their own registry credentials here."
            }
        }
    }

    /// The user who made it, the kind and the values, form-encoded (which a cookie value may
    /// hold). Bound to that user: another user signing in on the same browser never sees it.
    fn encode(&self, user_id: i64) -> String {
        let kind = match self.kind {
            ShownKind::Registry => "registry",
            ShownKind::Token => "token",
            ShownKind::User => "user",
        };
        form_urlencoded::Serializer::new(String::new())
            .append_pair("for", &user_id.to_string())
            .append_pair("kind", kind)
            .append_pair("a", &self.values[0])
            .append_pair("b", &self.values[1])
            .finish()
    }

    fn decode(text: &str, user_id: i64) -> Option<Shown> {
        let pairs: std::collections::HashMap<_, _> =
            form_urlencoded::parse(text.as_bytes()).collect();
        if pairs.get("for")?.parse::<i64>().ok()? != user_id {
            return None;
        }
        let kind = match pairs.get("kind")?.as_ref() {
            "registry" => ShownKind::Registry,
            "token" => ShownKind::Token,
            "user" => ShownKind::User,
            _ => return None,
        };
        let values = [pairs.get("a")?.to_string(), pairs.get("b")?.to_string()];
        Some(Shown { kind, values })
    }
}

/// A change the page refused: which form, why, and what was sent (to fill the form in again).
#[derive(Default)]
struct Refused {
    form: &'static str,
    message: String,
    name: String,
    scopes: String,
    expires: String,
    namespace: String,
    user: String,
}

fn redirect_to_login() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/login?next=/settings"))
        .finish()
}

fn back(anchor: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/settings#{anchor}")))
        .finish()
}

fn shown_cookie(value: String, max_age: i64, secure: bool) -> Cookie<'static> {
    Cookie::build(SHOWN_COOKIE, value)
        .path("/settings")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(CookieDuration::seconds(max_age))
        .finish()
}

/// 303 to the page, which shows `shown` once.
fn show_once(request: &HttpRequest, state: &Web, user: &User, shown: &Shown) -> HttpResponse {
    let mut response = back("shown");
    let cookie = shown_cookie(shown.encode(user.id), SHOWN_TTL, secure(state, request));
    let _ = response.add_cookie(&cookie);
    response
}

pub async fn page(
    request: HttpRequest,
    viewer: Viewer,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let Some(user) = viewer.user() else {
        return Ok(redirect_to_login());
    };
    let cookie = request.cookie(SHOWN_COOKIE);
    let shown = cookie
        .as_ref()
        .and_then(|c| Shown::decode(c.value(), user.id));
    let mut response = render_page(&viewer, &state, shown, None).await?;
    if cookie.is_some() {
        let removal = shown_cookie(String::new(), 0, secure(&state, &request));
        let _ = response.add_removal_cookie(&removal);
    }
    Ok(response)
}

async fn render_page(
    viewer: &Viewer,
    state: &Web,
    shown: Option<Shown>,
    refused: Option<Refused>,
) -> Result<HttpResponse, PageError> {
    let user = viewer.user().expect("signed in").clone();
    let admin = viewer.is_admin();
    let store = state.store.clone();
    let user_id = user.id;
    let listing = blocking(move || {
        Ok(Listing {
            tokens: store.db.tokens(Some(user_id))?,
            users: if admin { store.db.users()? } else { Vec::new() },
            namespaces: if admin {
                store.db.namespaces()?
            } else {
                Vec::new()
            },
        })
    })
    .await?;
    let status = if refused.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let refused = refused.unwrap_or_default();
    let markup = render(
        viewer,
        &user,
        admin,
        &listing,
        shown.as_ref(),
        &refused,
        state,
    );
    Ok(layout::html_response(status, &markup))
}

/// The reason a form was refused, above it.
fn refusal(refused: &Refused, form: &str) -> Markup {
    html! {
        @if refused.form == form {
            p.notice.bad role="alert" id=(format!("{form}-error")) { (refused.message) }
        }
    }
}

fn render(
    viewer: &Viewer,
    user: &User,
    admin: bool,
    listing: &Listing,
    shown: Option<&Shown>,
    refused: &Refused,
    state: &Web,
) -> Markup {
    let host = state.settings.registry_host();
    let now = format::now();
    let csrf = viewer.csrf_token();
    let token_form = refused.form == "token";
    let (name, scopes, expires) = if token_form {
        (
            refused.name.as_str(),
            refused.scopes.as_str(),
            refused.expires.as_str(),
        )
    } else {
        ("", "pull", "30")
    };
    let content = html! {
        @if let Some(shown) = shown {
            section #shown.notice role="status" {
                h2 { (shown.title()) }
                dl.facts {
                    @for (label, value) in shown.labels().iter().zip(&shown.values) {
                        dt { (label) }
                        dd { (layout::copyable(&format!("shown-{}", label.to_lowercase().replace(' ', "-")), value)) }
                    }
                }
                p.muted { (shown.note()) }
            }
        }
        h2 #registry { "Registry credentials" }
        p {
            "For " code { "docker login " (host) } ", separate from this web password. "
            @if user.registry_password_hash.is_some() {
                "Username " code { (user.name) } "; the password was shown once when it was made."
            } @else {
                "You have none yet."
            }
        }
        form.bar method="post" action="/settings/registry-password" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" {
                @if user.registry_password_hash.is_some() { "Regenerate the registry password" }
                @else { "Make registry credentials" }
            }
        }
        h2 #tokens { "Tokens" }
        p.muted {
            "For CI systems and scripts: use a token as the password of " code { "docker login" }
            " or " code { "git push" } ", or as " code { "Authorization: Bearer" } ". A token never does more than you may."
        }
        @if listing.tokens.is_empty() {
            p { "No tokens yet." }
        } @else {
            table.list.cards-narrow #token-list {
                thead { tr { th { "Name" } th { "Scopes" } th { "Created" } th { "Last used" } th { "State" } th { span.hidden-label { "Action" } } } }
                tbody {
                    @for token in &listing.tokens {
                        tr {
                            td data-label="Name" { (token.name) }
                            td data-label="Scopes" { code { (format::scopes(&token.scopes)) } }
                            td data-label="Created" { (layout::ago(now, token.created_at)) }
                            td data-label="Last used" { @match token.last_used_at { Some(at) => (layout::ago(now, at)), None => "never" } }
                            td data-label="State" { (token_state(token, now)) }
                            td {
                                @if token.revoked_at.is_none() {
                                    a href={ "/settings/tokens/" (token.id) "/revoke" } aria-label={ "Revoke token " (token.name) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        (refusal(refused, "token"))
        form.bar method="post" action="/settings/tokens" {
            input type="hidden" name="csrf" value=(csrf);
            label { "Name" input name="name" required maxlength="100" placeholder="ci" value=(name); }
            label { "Scopes"
                input name="scopes" required value=(scopes) placeholder="pull:acme build:acme/shop";
            }
            label { "Expires"
                select name="expires" {
                    @for (value, label) in [("", "never"), ("1", "in 1 day"), ("30", "in 30 days"), ("90", "in 90 days")] {
                        option value=(value) selected[value == expires] { (label) }
                    }
                }
            }
            button type="submit" { "Create token" }
        }
        p.muted {
            "Scopes: " code { "pull" } " (all you may pull), " code { "pull:<namespace>" } ", "
            code { "build:<namespace>/<app>" } ", " code { "build:<namespace>/*" }
            @if admin { ", " code { "admin" } } "."
        }
        @if admin {
            (admin_sections(listing, csrf, refused))
        }
    };
    layout::page_for(viewer, "Settings", &[], content)
}

fn token_state(token: &TokenRow, now: i64) -> String {
    if token.revoked_at.is_some() {
        "revoked".into()
    } else {
        match token.expires_at {
            Some(at) if at <= now => "expired".into(),
            Some(at) => format!("expires {}", format::datetime(at)),
            None => "no expiry".into(),
        }
    }
}

fn admin_sections(listing: &Listing, csrf: &str, refused: &Refused) -> Markup {
    let new_user = if refused.form == "user" {
        refused.name.as_str()
    } else {
        ""
    };
    let (namespace, member) = if refused.form == "namespace" {
        (refused.namespace.as_str(), refused.user.as_str())
    } else {
        ("", "")
    };
    html! {
        h2 #users { "Users" }
        table.list.cards-narrow {
            thead { tr { th { "Name" } th { "Role" } th { "Registry credentials" } th { "Created" } } }
            tbody {
                @for user in &listing.users {
                    tr {
                        td data-label="Name" { (user.name) }
                        td data-label="Role" { @if user.admin { "admin" } @else { "user" } }
                        td data-label="Registry credentials" { @if user.registry_password_hash.is_some() { "yes" } @else { "none yet" } }
                        td data-label="Created" { (format::datetime(user.created_at)) }
                    }
                }
            }
        }
        (refusal(refused, "user"))
        form.bar method="post" action="/settings/users" {
            input type="hidden" name="csrf" value=(csrf);
            label { "New user" input name="name" required placeholder="ann" autocomplete="off" value=(new_user); }
            label.check { span { "Admin" } input type="checkbox" name="admin" value="1"; }
            button type="submit" { "Create user" }
        }
        h2 #namespaces { "Namespaces" }
        p.muted { "Private namespaces are pulled and built by their members and admins only; public ones are pulled by anyone." }
        table.list.cards-narrow {
            thead { tr { th { "Namespace" } th { "Visibility" } th { "Members" } } }
            tbody {
                @for namespace in &listing.namespaces {
                    tr {
                        td data-label="Namespace" { (namespace.name) }
                        td data-label="Visibility" {
                            @if namespace.public {
                                "public "
                                form.inline method="post" action="/settings/namespaces" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="namespace" value=(namespace.name);
                                    input type="hidden" name="action" value="private";
                                    button.link type="submit" { "make private" }
                                }
                            } @else {
                                "private "
                                a href={ "/settings/namespaces/" (namespace.name) "/make-public" } { "make public" }
                            }
                        }
                        td data-label="Members" {
                            @for member in &namespace.members {
                                span.member {
                                    (member) " "
                                    form.inline method="post" action="/settings/namespaces" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="namespace" value=(namespace.name);
                                        input type="hidden" name="action" value="remove";
                                        input type="hidden" name="user" value=(member);
                                        button.link type="submit" aria-label={ "Remove " (member) " from " (namespace.name) } { "(remove)" }
                                    }
                                    " "
                                }
                            }
                        }
                    }
                }
            }
        }
        (refusal(refused, "namespace"))
        form.bar method="post" action="/settings/namespaces" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value="add";
            label { "Namespace" input name="namespace" required placeholder="acme" value=(namespace); }
            label { "Member" input name="user" required placeholder="ann" value=(member); }
            button type="submit" { "Add member" }
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn registry_password(
    request: HttpRequest,
    viewer: Viewer,
    form: web::Form<CsrfForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let user = viewer.require_form(&form.csrf)?.clone();
    let store = state.store.clone();
    let changed = user.clone();
    let password = blocking(move || {
        Ok(buildgrid_access::regenerate_registry_password(
            &store, &changed,
        )?)
    })
    .await?;
    let shown = Shown {
        kind: ShownKind::Registry,
        values: [user.name.clone(), password],
    };
    Ok(show_once(&request, &state, &user, &shown))
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    expires: String,
}

/// The token a form asks for, or why not.
fn token_request(form: &TokenForm) -> Result<(String, Vec<Scope>, Option<i64>), String> {
    let name = form.name.trim().to_owned();
    if name.is_empty() || name.len() > 100 {
        return Err("A token needs a name of 1 to 100 characters".into());
    }
    let scopes =
        Scope::parse_list(&form.scopes).map_err(|error| capitalized(&error.to_string()))?;
    if scopes.is_empty() {
        return Err("A token needs at least one scope".into());
    }
    let expires_at = match form.expires.as_str() {
        "" => None,
        days => match days.parse::<i64>() {
            Ok(days @ 1..=3650) => Some(format::now() + days * 86_400),
            _ => return Err("Choose an expiry from the list".into()),
        },
    };
    Ok((name, scopes, expires_at))
}

pub async fn create_token(
    request: HttpRequest,
    viewer: Viewer,
    form: web::Form<TokenForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let user = viewer.require_form(&form.csrf)?.clone();
    let refused = |message: String| Refused {
        form: "token",
        message,
        name: form.name.clone(),
        scopes: form.scopes.clone(),
        expires: form.expires.clone(),
        ..Refused::default()
    };
    let (name, scopes, expires_at) = match token_request(&form) {
        Ok(request) => request,
        Err(message) => return render_page(&viewer, &state, None, Some(refused(message))).await,
    };
    let store = state.store.clone();
    let owner = user.clone();
    let token_name = name.clone();
    let made = blocking(move || {
        Ok(buildgrid_access::create_token(
            &store,
            &owner,
            &token_name,
            &scopes,
            expires_at,
        ))
    })
    .await?;
    match made {
        Ok((_, secret)) => {
            let shown = Shown {
                kind: ShownKind::Token,
                values: [name, secret],
            };
            Ok(show_once(&request, &state, &user, &shown))
        }
        Err(buildgrid_access::AccessError::Store(error)) => Err(error.into()),
        Err(error) => {
            let message = capitalized(&error.to_string());
            render_page(&viewer, &state, None, Some(refused(message))).await
        }
    }
}

/// A live token of the viewer, or 404.
async fn own_live_token(viewer: &Viewer, state: &Web, id: i64) -> Result<TokenRow, PageError> {
    let user_id = viewer.user().map(|u| u.id);
    let store = state.store.clone();
    let token = blocking(move || Ok(store.db.token_by_id(id)?)).await?;
    token
        .filter(|t| user_id.is_some() && t.user_id == user_id && t.revoked_at.is_none())
        .ok_or_else(|| PageError::NotFound(format!("You have no live token {id}")))
}

/// Asks before a token is revoked; the answer posts to [`revoke_token`].
pub async fn confirm_revoke(
    viewer: Viewer,
    path: web::Path<i64>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    if viewer.user().is_none() {
        return Ok(redirect_to_login());
    }
    let token = own_live_token(&viewer, &state, path.into_inner()).await?;
    let question = html! {
        p {
            "Revoke token " strong { (token.name) } " (" code { (format::scopes(&token.scopes)) } ")? "
            "Whatever uses it is refused from its next request on. This cannot be undone."
        }
    };
    let markup = layout::confirm(
        &viewer,
        &format!("Revoke token {}", token.name),
        question,
        &format!("/settings/tokens/{}/revoke", token.id),
        &[],
        "Revoke",
        "/settings#tokens",
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

pub async fn revoke_token(
    viewer: Viewer,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let user = viewer.require_form(&form.csrf)?.clone();
    let id = path.into_inner();
    let store = state.store.clone();
    let revoked = blocking(move || {
        let revoked = store.db.revoke_token(id, Some(user.id))?;
        if revoked {
            buildgrid_access::audit_now(
                &store,
                &user.name,
                "token revoked",
                &format!("token {id}"),
            )?;
        }
        Ok(revoked)
    })
    .await?;
    if !revoked {
        return Err(PageError::NotFound(format!("You have no live token {id}")));
    }
    Ok(back("tokens"))
}

fn require_admin(viewer: &Viewer, csrf: &str) -> Result<User, PageError> {
    let user = viewer.require_form(csrf)?.clone();
    if !viewer.is_admin() {
        return Err(PageError::Forbidden(
            "Only admins manage users and namespaces".into(),
        ));
    }
    Ok(user)
}

#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    admin: Option<String>,
}

pub async fn create_user(
    request: HttpRequest,
    viewer: Viewer,
    form: web::Form<UserForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let admin_user = require_admin(&viewer, &form.csrf)?;
    let store = state.store.clone();
    let name = form.name.trim().to_owned();
    let admin = form.admin.is_some();
    let made = blocking(move || Ok(buildgrid_access::create_user(&store, &name, admin))).await?;
    match made {
        Ok((user, password)) => {
            let shown = Shown {
                kind: ShownKind::User,
                values: [user.name, password],
            };
            Ok(show_once(&request, &state, &admin_user, &shown))
        }
        Err(buildgrid_access::AccessError::Store(error)) => Err(error.into()),
        Err(error) => {
            let refused = Refused {
                form: "user",
                message: capitalized(&error.to_string()),
                name: form.name,
                ..Refused::default()
            };
            render_page(&viewer, &state, None, Some(refused)).await
        }
    }
}

/// Asks before a namespace is made public; the answer posts to [`change_namespace`].
pub async fn confirm_public(
    viewer: Viewer,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    if viewer.user().is_none() {
        return Ok(redirect_to_login());
    }
    if !viewer.is_admin() {
        return Err(PageError::Forbidden(
            "Only admins manage users and namespaces".into(),
        ));
    }
    let namespace = parse_namespace(&path.into_inner())?;
    let question = html! {
        p {
            "Make namespace " strong { (namespace) } " public? Anyone, signed in or not, may then pull its images and read their pages. "
            "Its build logs, deploy logs and running containers stay with its members unless it publishes its logs."
        }
    };
    let markup = layout::confirm(
        &viewer,
        &format!("Make {namespace} public"),
        question,
        "/settings/namespaces",
        &[("namespace", &namespace), ("action", "public")],
        "Make public",
        "/settings#namespaces",
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

fn parse_namespace(text: &str) -> Result<String, PageError> {
    match Scope::parse(&format!("pull:{}", text.trim())) {
        Ok(Scope::Pull(buildgrid_access::Target::Namespace(ns))) => Ok(ns),
        _ => Err(PageError::BadRequest(format!(
            "Invalid namespace {text:?}: use lowercase letters, digits and separators"
        ))),
    }
}

#[derive(Deserialize)]
pub struct NamespaceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    user: String,
}

pub async fn change_namespace(
    viewer: Viewer,
    form: web::Form<NamespaceForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let admin = require_admin(&viewer, &form.csrf)?;
    let refused = |message: String| Refused {
        form: "namespace",
        message,
        namespace: form.namespace.clone(),
        user: form.user.clone(),
        ..Refused::default()
    };
    let namespace = match parse_namespace(&form.namespace) {
        Ok(namespace) => namespace,
        Err(error) => {
            return render_page(&viewer, &state, None, Some(refused(error.to_string()))).await;
        }
    };
    let store = state.store.clone();
    let (action, user) = (form.action.clone(), form.user.clone());
    let outcome = blocking(move || {
        let member = |name: &str| buildgrid_access::user(&store, name.trim());
        let (action, target) = match action.as_str() {
            "public" | "private" => {
                store
                    .db
                    .set_namespace_public(&namespace, action == "public")?;
                (format!("namespace made {action}"), namespace.clone())
            }
            "add" | "remove" => {
                let user = match member(&user) {
                    Ok(user) => user,
                    Err(buildgrid_access::AccessError::Store(error)) => return Err(error.into()),
                    Err(error) => return Ok(Err(capitalized(&error.to_string()))),
                };
                if action == "add" {
                    store.db.add_member(&namespace, user.id)?;
                    (
                        "member added".into(),
                        format!("{} to {namespace}", user.name),
                    )
                } else if store.db.remove_member(&namespace, user.id)? {
                    (
                        "member removed".into(),
                        format!("{} from {namespace}", user.name),
                    )
                } else {
                    return Ok(Err(format!("{} is not a member of {namespace}", user.name)));
                }
            }
            _ => return Ok(Err("Unknown namespace change".into())),
        };
        buildgrid_access::audit_now(&store, &admin.name, &action, &target)?;
        Ok(Ok(()))
    })
    .await?;
    match outcome {
        Ok(()) => Ok(back("namespaces")),
        Err(message) => render_page(&viewer, &state, None, Some(refused(message))).await,
    }
}

/// `text` with its first letter in capitals, as the pages' messages start.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}
