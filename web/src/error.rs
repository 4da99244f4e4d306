//! Page errors: a status and an HTML page saying what happened. Internal errors are logged with
//! their cause and shown as an opaque 500.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use buildgrid_store::StoreError;

use crate::layout;

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
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "rendering a page failed");
            "Something went wrong on the server; its log has the details".to_owned()
        } else {
            self.to_string()
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let mut response = layout::html_response(status, &layout::error_page(title, &message));
        if matches!(self, PageError::TooMany(_) | PageError::Busy(_)) {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(crate::shared::RETRY_AFTER));
        }
        response
    }
}

/// Runs store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    actix_web::web::block(work).await?
}
