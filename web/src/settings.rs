//! The settings page: the viewer's registry credentials and API tokens; for admins also users,
//! namespaces and their members. Every change is a POST carrying the session's CSRF token; a new
//! secret is shown once, in the answer to the POST that made it, and stored only hashed.

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use buildgrid_access::Scope;
use buildgrid_store::{Namespace, TokenRow, User};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::{Viewer, Web, format, layout};

/// What the page lists.
struct Listing {
    tokens: Vec<TokenRow>,
    users: Vec<User>,
    namespaces: Vec<Namespace>,
}

/// A secret made by the request being answered: shown once.
struct Shown {
    title: &'static str,
    lines: Vec<(&'static str, String)>,
    note: &'static str,
}

fn redirect_to_login() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/login?next=/settings"))
        .finish()
}

fn back() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/settings"))
        .finish()
}

pub async fn page(viewer: Viewer, state: web::Data<Web>) -> Result<HttpResponse, PageError> {
    if viewer.user().is_none() {
        return Ok(redirect_to_login());
    }
    render_page(&viewer, &state, None, StatusCode::OK).await
}

async fn render_page(
    viewer: &Viewer,
    state: &Web,
    shown: Option<Shown>,
    status: StatusCode,
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
    let markup = render(viewer, &user, admin, &listing, shown.as_ref(), state);
    Ok(layout::html_response(status, &markup))
}

fn render(
    viewer: &Viewer,
    user: &User,
    admin: bool,
    listing: &Listing,
    shown: Option<&Shown>,
    state: &Web,
) -> Markup {
    let host = state.settings.registry_host();
    let now = format::now();
    let csrf = viewer.csrf_token();
    let content = html! {
        @if let Some(shown) = shown {
            section.notice role="status" {
                h2 { (shown.title) }
                dl.facts {
                    @for (label, value) in &shown.lines {
                        dt { (label) }
                        dd { (layout::copyable(&format!("shown-{}", label.to_lowercase().replace(' ', "-")), value)) }
                    }
                }
                p.muted { (shown.note) }
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
            table.list {
                thead { tr { th { "Name" } th { "Scopes" } th { "Created" } th { "Last used" } th { "State" } th {} } }
                tbody {
                    @for token in &listing.tokens {
                        tr {
                            td { (token.name) }
                            td { code { (token.scopes) } }
                            td { (layout::ago(now, token.created_at)) }
                            td { @match token.last_used_at { Some(at) => (layout::ago(now, at)), None => "never" } }
                            td { (token_state(token, now)) }
                            td {
                                @if token.revoked_at.is_none() {
                                    form.inline method="post" action={ "/settings/tokens/" (token.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.link type="submit" aria-label={ "Revoke token " (token.name) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        form.bar method="post" action="/settings/tokens" {
            input type="hidden" name="csrf" value=(csrf);
            label { "Name" input name="name" required maxlength="100" placeholder="ci"; }
            label { "Scopes"
                input name="scopes" required value="pull" placeholder="pull:acme build:acme/shop";
            }
            label { "Expires"
                select name="expires" {
                    option value="" { "never" }
                    option value="1" { "in 1 day" }
                    option value="30" selected { "in 30 days" }
                    option value="90" { "in 90 days" }
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
            (admin_sections(listing, csrf))
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

fn admin_sections(listing: &Listing, csrf: &str) -> Markup {
    html! {
        h2 #users { "Users" }
        table.list {
            thead { tr { th { "Name" } th { "Role" } th { "Registry credentials" } th { "Created" } } }
            tbody {
                @for user in &listing.users {
                    tr {
                        td { (user.name) }
                        td { @if user.admin { "admin" } @else { "user" } }
                        td { @if user.registry_password_hash.is_some() { "yes" } @else { "none yet" } }
                        td { (format::datetime(user.created_at)) }
                    }
                }
            }
        }
        form.bar method="post" action="/settings/users" {
            input type="hidden" name="csrf" value=(csrf);
            label { "New user" input name="name" required placeholder="ann" autocomplete="off"; }
            label.check { span { "Admin" } input type="checkbox" name="admin" value="1"; }
            button type="submit" { "Create user" }
        }
        h2 #namespaces { "Namespaces" }
        p.muted { "Private namespaces are pulled and built by their members and admins only; public ones are pulled by anyone." }
        table.list {
            thead { tr { th { "Namespace" } th { "Visibility" } th { "Members" } } }
            tbody {
                @for namespace in &listing.namespaces {
                    tr {
                        td { (namespace.name) }
                        td {
                            (if namespace.public { "public" } else { "private" }) " "
                            form.inline method="post" action="/settings/namespaces" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="namespace" value=(namespace.name);
                                input type="hidden" name="action" value=(if namespace.public { "private" } else { "public" });
                                button.link type="submit" {
                                    "make " (if namespace.public { "private" } else { "public" })
                                }
                            }
                        }
                        td {
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
        form.bar method="post" action="/settings/namespaces" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value="add";
            label { "Namespace" input name="namespace" required placeholder="acme"; }
            label { "Member" input name="user" required placeholder="ann"; }
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
    viewer: Viewer,
    form: web::Form<CsrfForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let user = viewer.require_form(&form.csrf)?.clone();
    let store = state.store.clone();
    let name = user.name.clone();
    let password = blocking(move || {
        Ok(buildgrid_access::regenerate_registry_password(
            &store, &user,
        )?)
    })
    .await?;
    let viewer = reload(viewer, &state).await?;
    let shown = Shown {
        title: "New registry credentials",
        lines: vec![("Username", name), ("Password", password)],
        note: "Shown only now. The previous password no longer works.",
    };
    render_page(&viewer, &state, Some(shown), StatusCode::OK).await
}

/// The viewer with its user read again, after a change to it.
async fn reload(viewer: Viewer, state: &Web) -> Result<Viewer, PageError> {
    let Some(user) = viewer.user().cloned() else {
        return Ok(viewer);
    };
    let store = state.store.clone();
    let fresh = blocking(move || Ok(store.db.user_by_id(user.id)?)).await?;
    let mut viewer = viewer;
    viewer.principal.user = fresh;
    Ok(viewer)
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

pub async fn create_token(
    viewer: Viewer,
    form: web::Form<TokenForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let user = viewer.require_form(&form.csrf)?.clone();
    let name = form.name.trim().to_owned();
    if name.is_empty() || name.len() > 100 {
        return Err(PageError::BadRequest(
            "A token needs a name of 1 to 100 characters".into(),
        ));
    }
    let scopes = Scope::parse_list(&form.scopes)
        .map_err(|error| PageError::BadRequest(error.to_string()))?;
    if scopes.is_empty() {
        return Err(PageError::BadRequest(
            "A token needs at least one scope".into(),
        ));
    }
    let expires_at = match form.expires.as_str() {
        "" => None,
        days => match days.parse::<i64>() {
            Ok(days @ 1..=3650) => Some(format::now() + days * 86_400),
            _ => {
                return Err(PageError::BadRequest(
                    "Choose an expiry from the list".into(),
                ));
            }
        },
    };
    let store = state.store.clone();
    let token_name = name.clone();
    let made = blocking(move || {
        Ok(buildgrid_access::create_token(
            &store,
            &user,
            &token_name,
            &scopes,
            expires_at,
        ))
    })
    .await?;
    let (_, secret) = made.map_err(|error| PageError::BadRequest(error.to_string()))?;
    let shown = Shown {
        title: "New token",
        lines: vec![("Name", name), ("Token", secret)],
        note: "Shown only now: copy it into your CI system's secrets. Only its hash is kept.",
    };
    render_page(&viewer, &state, Some(shown), StatusCode::OK).await
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
    Ok(back())
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
    viewer: Viewer,
    form: web::Form<UserForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    require_admin(&viewer, &form.csrf)?;
    let store = state.store.clone();
    let name = form.name.trim().to_owned();
    let admin = form.admin.is_some();
    let made = blocking(move || Ok(buildgrid_access::create_user(&store, &name, admin))).await?;
    let (user, password) = made.map_err(|error| PageError::BadRequest(error.to_string()))?;
    let shown = Shown {
        title: "New user",
        lines: vec![("User name", user.name), ("Web password", password)],
        note: "Shown only now: hand it over safely. Add the user to namespaces below; they make their own registry credentials here.",
    };
    render_page(&viewer, &state, Some(shown), StatusCode::OK).await
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
    let namespace = match Scope::parse(&format!("pull:{}", form.namespace.trim())) {
        Ok(Scope::Pull(buildgrid_access::Target::Namespace(ns))) => ns,
        _ => {
            return Err(PageError::BadRequest(format!(
                "Invalid namespace {:?}: use lowercase letters, digits and separators",
                form.namespace
            )));
        }
    };
    let store = state.store.clone();
    blocking(move || {
        let member = |name: &str| {
            buildgrid_access::user(&store, name.trim())
                .map_err(|error| PageError::BadRequest(error.to_string()))
        };
        let (action, target) = match form.action.as_str() {
            "public" | "private" => {
                store
                    .db
                    .set_namespace_public(&namespace, form.action == "public")?;
                (format!("namespace made {}", form.action), namespace.clone())
            }
            "add" => {
                let user = member(&form.user)?;
                store.db.add_member(&namespace, user.id)?;
                (
                    "member added".into(),
                    format!("{} to {namespace}", user.name),
                )
            }
            "remove" => {
                let user = member(&form.user)?;
                if !store.db.remove_member(&namespace, user.id)? {
                    return Err(PageError::BadRequest(format!(
                        "{} is not a member of {namespace}",
                        user.name
                    )));
                }
                (
                    "member removed".into(),
                    format!("{} from {namespace}", user.name),
                )
            }
            _ => return Err(PageError::BadRequest("Unknown namespace change".into())),
        };
        buildgrid_access::audit_now(&store, &admin.name, &action, &target)?;
        Ok(())
    })
    .await?;
    Ok(back())
}
