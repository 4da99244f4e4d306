//! Who is looking at a page.
//!
//! SEAM(access): users, sessions and the web login come with the access work. Until then:
//! - every visitor may read every page ([`Viewer::may_read`] is always true);
//! - a state-changing form (Build now) is a POST that asks for an API token in the form itself,
//!   checked by [`crate::Settings::may_build`]. The credential travels in the body, never in a
//!   cookie, so a form forged on another site cannot use it;
//! - every such form already carries a hidden `csrf` field. [`Viewer::csrf_token`] fills it and
//!   [`Viewer::check_csrf`] checks it; both become real with the session they belong to.

use std::convert::Infallible;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

/// The person (or program) a page is rendered for. Today always an anonymous reader.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    _anonymous: (),
}

impl Viewer {
    /// Whether the viewer may read the apps, builds, logs and images of `namespace`.
    pub fn may_read(&self, _namespace: &str) -> bool {
        true
    }

    /// The value of the hidden `csrf` field of this viewer's forms.
    pub fn csrf_token(&self) -> &str {
        ""
    }

    /// Whether a form's `csrf` field belongs to this viewer's session.
    pub fn check_csrf(&self, _token: &str) -> bool {
        true
    }
}

impl FromRequest for Viewer {
    type Error = Infallible;
    type Future = Ready<Result<Viewer, Infallible>>;

    fn from_request(_request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Ok(Viewer::default()))
    }
}
