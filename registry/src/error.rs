use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use buildgrid_core::{ErrorCode, NameError};
use buildgrid_store::StoreError;
use serde_json::{Value, json};

use crate::Route;

/// An error as the distribution spec renders it: `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Value,
    /// Only for `RANGE_INVALID`: the blob size, for `Content-Range: bytes */<size>`.
    range_size: Option<u64>,
    /// Headers the error needs, e.g. `WWW-Authenticate` or `Retry-After`.
    headers: Vec<(&'static str, String)>,
}

/// What `docker push` prints after "unsupported: ".
pub const READ_ONLY_MESSAGE: &str = "this registry is read-only: buildgrid builds its images from git, so push your code to the app's git remote to build a new image; pushing, deleting and mounting images is not supported";

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RegistryError {
        RegistryError {
            code,
            message: message.into(),
            detail: Value::Null,
            range_size: None,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> RegistryError {
        self.headers.push((name, value));
        self
    }

    pub fn with_detail(mut self, detail: Value) -> RegistryError {
        self.detail = detail;
        self
    }

    pub fn read_only(method: &str, route: &Route) -> RegistryError {
        let mut detail = json!({ "method": method });
        if let Some(name) = route.name() {
            detail["repository"] = json!(name);
        }
        RegistryError::new(ErrorCode::Unsupported, READ_ONLY_MESSAGE).with_detail(detail)
    }

    pub fn unknown_route(path: &str) -> RegistryError {
        RegistryError::new(
            ErrorCode::NameUnknown,
            "no such endpoint in the OCI distribution API",
        )
        .with_detail(json!({ "path": path.chars().take(300).collect::<String>() }))
    }

    pub fn range_not_satisfiable(size: u64) -> RegistryError {
        let mut error = RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("the requested range is not satisfiable: the blob has {size} bytes"),
        );
        error.range_size = Some(size);
        error
    }

    pub fn invalid_name(error: NameError) -> RegistryError {
        let code = match error {
            NameError::InvalidTag(_) => ErrorCode::ManifestUnknown,
            NameError::Digest(_) => ErrorCode::DigestInvalid,
            _ => ErrorCode::NameInvalid,
        };
        RegistryError::new(code, error.to_string())
    }

    pub fn internal(error: &dyn std::error::Error) -> RegistryError {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "registry request failed");
        RegistryError::new(
            ErrorCode::Unknown,
            "internal error; the server log has the details",
        )
    }
}

impl From<StoreError> for RegistryError {
    fn from(error: StoreError) -> RegistryError {
        RegistryError::internal(&error)
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for RegistryError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut entry = json!({ "code": self.code.as_str(), "message": self.message });
        if !self.detail.is_null() {
            entry["detail"] = self.detail.clone();
        }
        let body = json!({ "errors": [entry] }).to_string();
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/json");
        if self.code == ErrorCode::Unsupported {
            response.insert_header((header::ALLOW, HeaderValue::from_static("GET, HEAD")));
        }
        for (name, value) in &self.headers {
            response.insert_header((*name, value.as_str()));
        }
        if let Some(size) = self.range_size {
            response.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
        }
        response.body(body)
    }
}
