//! Who is looking at a page: a signed-in user (by the session cookie) or an anonymous reader.
//!
//! Reading follows the registry's rule (`Access::may_pull_namespace`): public namespaces for
//! everyone, private ones for their members and admins. Every state-changing request is a POST
//! whose form carries the session's CSRF token, compared in constant time.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use buildgrid_access::{Access, Principal, secret};
use buildgrid_core::AppRef;
use buildgrid_store::User;

use crate::Web;
use crate::error::PageError;

/// The session cookie: `HttpOnly`, `SameSite=Lax`, and `Secure` when served over TLS.
pub const SESSION_COOKIE: &str = "bg_session";

/// The person a page is rendered for.
#[derive(Clone)]
pub struct Viewer {
    pub principal: Principal,
    /// The CSRF token of the session; empty for anonymous viewers.
    csrf: String,
    access: Option<Arc<Access>>,
}

impl Viewer {
    pub fn user(&self) -> Option<&User> {
        self.principal.user.as_ref()
    }

    /// Whether the viewer may read the apps, builds, logs and images of `namespace`.
    pub fn may_read(&self, namespace: &str) -> bool {
        self.access.as_ref().is_some_and(|access| {
            access
                .may_pull_namespace(&self.principal, namespace)
                .unwrap_or(false)
        })
    }

    /// Whether the viewer may read the build logs, deploy logs and running containers of
    /// `namespace`: its members and admins, and whoever may read it when the namespace publishes
    /// its logs (`buildgrid namespace publish-logs`). Public alone means pullable images and
    /// their pages.
    pub fn may_read_logs(&self, namespace: &str) -> bool {
        self.access.as_ref().is_some_and(|access| {
            access
                .may_read_logs(&self.principal, namespace)
                .unwrap_or(false)
        })
    }

    /// Why the viewer sees no logs of `namespace`, as the pages say it.
    pub fn logs_hidden(&self, namespace: &str) -> String {
        let hint = if self.user().is_none() {
            " (sign in if you are one)"
        } else {
            ""
        };
        format!("Logs and running containers of {namespace} are shown to its members only{hint}")
    }

    /// Whether the viewer may start builds of `app`.
    pub fn may_build(&self, app: &AppRef) -> bool {
        self.access
            .as_ref()
            .is_some_and(|access| access.may_build(&self.principal, app).unwrap_or(false))
    }

    pub fn is_admin(&self) -> bool {
        self.access
            .as_ref()
            .is_some_and(|access| access.is_admin(&self.principal))
    }

    /// The value of the hidden `csrf` field of this viewer's forms.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's `csrf` field belongs to this viewer's session.
    pub fn check_csrf(&self, token: &str) -> bool {
        !self.csrf.is_empty() && secret::same_secret(&self.csrf, token)
    }

    /// The signed-in user, after checking the form's CSRF token: what every POST needs.
    pub fn require_form(&self, token: &str) -> Result<&User, PageError> {
        let Some(user) = self.user() else {
            return Err(PageError::Forbidden(
                "Sign in first: this needs a signed-in user".into(),
            ));
        };
        if !self.check_csrf(token) {
            return Err(PageError::Forbidden(
                "This form has expired: reload the page and send it again".into(),
            ));
        }
        Ok(user)
    }
}

impl FromRequest for Viewer {
    type Error = PageError;
    type Future = Ready<Result<Viewer, PageError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(viewer(request))
    }
}

fn viewer(request: &HttpRequest) -> Result<Viewer, PageError> {
    let Some(state) = request.app_data::<web::Data<Web>>() else {
        return Ok(Viewer {
            principal: Principal::anonymous(),
            csrf: String::new(),
            access: None,
        });
    };
    let access = state.settings.access.clone();
    let session = match request.cookie(SESSION_COOKIE) {
        // One indexed lookup by the secret's SHA-256.
        Some(cookie) => buildgrid_access::session(&state.store, cookie.value())?,
        None => None,
    };
    let (user, csrf) = match session {
        Some((user, csrf)) => (Some(user), csrf),
        None => (None, String::new()),
    };
    if let Some(user) = &user {
        // For the request log.
        request
            .extensions_mut()
            .insert(buildgrid_core::RequestUser(user.name.clone()));
    }
    Ok(Viewer {
        principal: Principal {
            user,
            token: None,
            claims: None,
        },
        csrf,
        access: Some(access),
    })
}
