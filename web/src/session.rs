//! Signing in to the web pages with the web password (never the registry password), and out.
//!
//! The sign-in form is protected against cross-site posting by a double-submit token: a random
//! value in a short-lived cookie and in the form, compared in constant time.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::http::header::{LOCATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_access::{AuthError, SESSION_TTL, secret};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::viewer::SESSION_COOKIE;
use crate::{Viewer, Web, layout};

const LOGIN_COOKIE: &str = "bg_login";

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path of this site only. It starts with one `/` followed by
/// a character other than `/` and `\\`, and holds no control character (browsers drop tabs and
/// line breaks from a `Location`, so `/<TAB>/evil.example` would leave the site) and no `\\`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if is_local_path(path) => path.to_owned(),
        _ => "/".to_owned(),
    }
}

fn is_local_path(path: &str) -> bool {
    let mut chars = path.chars();
    chars.next() == Some('/')
        && chars
            .next()
            .is_none_or(|second| second != '/' && second != '\\')
        && !path.chars().any(|c| c.is_control() || c == '\\')
}

/// Cookies get `Secure` when people reach buildgrid over TLS.
pub(crate) fn secure(state: &Web, request: &HttpRequest) -> bool {
    state.settings.public_url.starts_with("https://")
        || request.connection_info().scheme() == "https"
}

fn cookie<'a>(name: &'a str, value: String, max_age: i64, secure: bool) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(CookieDuration::seconds(max_age))
        .finish()
}

fn form(viewer: &Viewer, token: &str, next: &str, name: &str, message: Option<&str>) -> Markup {
    let content = html! {
        @if let Some(message) = message {
            p.notice.bad role="alert" { (message) }
        }
        form.stack method="post" action="/login" {
            input type="hidden" name="login_token" value=(token);
            input type="hidden" name="next" value=(next);
            label { "User name"
                input name="name" value=(name) autocomplete="username" required autofocus;
            }
            label { "Password"
                input type="password" name="password" autocomplete="current-password" required;
            }
            button type="submit" { "Sign in" }
        }
        p.muted {
            "This is the web password. Registry credentials for "
            code { "docker login" } " are separate: they are on the settings page."
        }
    };
    layout::page_for(viewer, "Sign in", &[], content)
}

fn login_response(
    state: &Web,
    request: &HttpRequest,
    status: StatusCode,
    markup: impl FnOnce(&str) -> Markup,
) -> HttpResponse {
    let token = secret::random_hex::<16>();
    let mut response = layout::html_response(status, &markup(&token));
    let _ = response.add_cookie(&cookie(LOGIN_COOKIE, token, 3600, secure(state, request)));
    response
}

pub async fn login_page(
    request: HttpRequest,
    viewer: Viewer,
    query: web::Query<NextQuery>,
    state: web::Data<Web>,
) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    login_response(&state, &request, StatusCode::OK, |token| {
        form(&viewer, token, &next, "", None)
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    login_token: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

pub async fn login(
    request: HttpRequest,
    viewer: Viewer,
    form_data: web::Form<LoginForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let LoginForm {
        login_token,
        next,
        name,
        password,
    } = form_data.into_inner();
    let next = safe_next(Some(&next));
    let expected = request
        .cookie(LOGIN_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if expected.is_empty() || !secret::same_secret(&expected, &login_token) {
        return Ok(login_response(
            &state,
            &request,
            StatusCode::FORBIDDEN,
            |token| {
                form(
                    &viewer,
                    token,
                    &next,
                    &name,
                    Some("This form has expired: sign in again"),
                )
            },
        ));
    }
    let client = request
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    let access = state.settings.access.clone();
    let store = state.store.clone();
    let user_name = name.clone();
    let outcome = blocking(move || {
        Ok(access
            .sign_in_web(&user_name, &password, &client)
            .and_then(|user| Ok(buildgrid_access::create_session(&store, &user)?)))
    })
    .await?;
    match outcome {
        Ok(session) => {
            let mut response = HttpResponse::SeeOther()
                .insert_header((LOCATION, next))
                .finish();
            let secure = secure(&state, &request);
            let _ =
                response.add_cookie(&cookie(SESSION_COOKIE, session.secret, SESSION_TTL, secure));
            let _ = response.add_removal_cookie(&cookie(LOGIN_COOKIE, String::new(), 0, secure));
            Ok(response)
        }
        Err(AuthError::Unauthorized(message)) => Ok(login_response(
            &state,
            &request,
            StatusCode::UNAUTHORIZED,
            |token| form(&viewer, token, &next, &name, Some(&capitalized(message))),
        )),
        Err(error @ AuthError::TooManyAttempts { retry_after }) => {
            let message = capitalized(&error.to_string());
            let mut response =
                login_response(&state, &request, StatusCode::TOO_MANY_REQUESTS, |token| {
                    form(&viewer, token, &next, &name, Some(&message))
                });
            response.headers_mut().insert(
                RETRY_AFTER,
                retry_after
                    .to_string()
                    .parse()
                    .expect("digits make a header value"),
            );
            Ok(response)
        }
        Err(AuthError::Store(error)) => Err(error.into()),
    }
}

fn capitalized(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    request: HttpRequest,
    viewer: Viewer,
    form_data: web::Form<LogoutForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    viewer.require_form(&form_data.csrf)?;
    if let Some(cookie) = request.cookie(SESSION_COOKIE) {
        let store = state.store.clone();
        let secret = cookie.value().to_owned();
        blocking(move || Ok(buildgrid_access::end_session(&store, &secret)?)).await?;
    }
    let mut response = HttpResponse::SeeOther()
        .insert_header((LOCATION, "/"))
        .finish();
    let _ = response.add_removal_cookie(&cookie(
        SESSION_COOKIE,
        String::new(),
        0,
        secure(&state, &request),
    ));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_paths_of_this_site_are_followed_after_sign_in() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/apps/acme/hello", "/apps/acme/hello"),
            ("/builds/7?after=3#L4", "/builds/7?after=3#L4"),
            ("/settings", "/settings"),
            ("", "/"),
            ("apps/acme", "/"),
            ("https://evil.example/", "/"),
            ("//evil.example/", "/"),
            ("/\\evil.example/", "/"),
            ("/\tevil.example/", "/"),
            ("/\t/evil.example/", "/"),
            ("/\n/evil.example/", "/"),
            ("/\r\n/evil.example/", "/"),
            ("\t//evil.example/", "/"),
            ("/apps\\..\\evil", "/"),
            ("/a\u{0}b", "/"),
            ("/a\u{7f}b", "/"),
            ("/a\u{85}b", "/"),
        ];
        for (next, expected) in cases {
            assert_eq!(safe_next(Some(next)), *expected, "next={next:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
