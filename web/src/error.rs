//! Page errors: a status and an HTML page saying what happened. Internal errors are logged with
//! their cause and shown as an opaque 500.
//!
//! [`with_account`] wraps every page: an error page keeps the header of the site (the viewer's
//! account), and tells an anonymous visitor of a missing or forbidden page to sign in, since a
//! private build or app answers as a missing one. [`not_found`] answers every other URL.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError};
use buildgrid_store::StoreError;
use maud::html;

use crate::{Viewer, layout};

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// One client holds too much open: 429 with `Retry-After`.
    #[error("{0}")]
    TooMany(String),
    /// The server holds as much open as it serves: 503 with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("worker thread: {0}")]
    Blocking(#[from] actix_web::error::BlockingError),
}

impl PageError {
    /// What the page says: the message, or an opaque one for internal errors.
    fn message(&self) -> String {
        if self.status_code() == StatusCode::INTERNAL_SERVER_ERROR {
            "Something went wrong on the server; its log has the details".to_owned()
        } else {
            self.to_string()
        }
    }

    fn title(&self) -> &'static str {
        self.status_code().canonical_reason().unwrap_or("Error")
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            PageError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Store(_) | PageError::Blocking(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "rendering a page failed");
        }
        let mut response =
            layout::html_response(status, &layout::error_page(self.title(), &self.message()));
        if matches!(self, PageError::TooMany(_) | PageError::Busy(_)) {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(crate::shared::RETRY_AFTER));
        }
        response
    }
}

/// Renders a page error again for the viewer of the request: with the account header, and with
/// a sign-in link (back to this URL) for anonymous visitors of a missing or forbidden page. The
/// status, headers and the error itself (for the request log) stay as they were.
pub async fn with_account(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(request).await?;
    let Some(error) = response
        .response()
        .error()
        .and_then(|e| e.as_error::<PageError>())
    else {
        return Ok(response.map_into_boxed_body());
    };
    let (title, message, status) = (error.title(), error.message(), error.status_code());
    let Ok(viewer) = Viewer::extract(response.request()).await else {
        return Ok(response.map_into_boxed_body());
    };
    let here = response.request().uri().to_string();
    let missing = matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN);
    let content = html! {
        p.notice { (message) }
        @if missing && viewer.user().is_none() {
            p #sign-in-hint {
                "Private apps, builds and images answer like missing ones until you sign in. "
                a href={ "/login?next=" (query_value(&here)) } { "Sign in" }
                " to see them if they belong to one of your namespaces."
            }
        } @else if missing && !viewer.is_admin() {
            p #member-hint.muted {
                "If it belongs to a namespace you are not a member of, an admin can add you to it."
            }
        }
        p { a href="/" { "Back to the apps" } }
    };
    let markup = layout::page_for(&viewer, title, &[], content);
    Ok(response.map_body(|_, _| BoxBody::new(markup.0)))
}

/// Every URL no page answers: a page saying so, in the site's frame.
pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, PageError> {
    Err(PageError::NotFound(format!(
        "There is no page at {}",
        request.path()
    )))
}

/// `text` as a value of a URL's query, percent-encoded whole.
pub(crate) fn query_value(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Runs store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    actix_web::web::block(work).await?
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_goes_into_a_query_value_whole() {
        assert_eq!(
            super::query_value("/builds/5?after=3&x=a b#L4"),
            "%2Fbuilds%2F5%3Fafter%3D3%26x%3Da+b%23L4"
        );
    }
}
