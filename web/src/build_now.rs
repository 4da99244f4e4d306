//! "Build now": a POST form on the timeline that queues a build in the store, as the builder's
//! API does, and wakes the builder. The pages never talk to the Docker engine or git.

use actix_web::http::header::LOCATION;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use buildgrid_core::RequestId;
use buildgrid_store::{App, NewBuild};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::timeline::load_app;
use crate::{Viewer, Web};

/// The form, folded away until asked for; for viewers who may not build, what they would need.
pub fn form(app: &App, viewer: &Viewer) -> Markup {
    if viewer.user().is_none() {
        return html! {
            p.muted { a href={ "/login?next=/apps/" (app.app) } { "Sign in" } " to build this app." }
        };
    }
    if !viewer.may_build(&app.app) {
        return html! {};
    }
    html! {
        details.panel {
            summary { "Build now" }
            form.bar method="post" action={ "/apps/" (app.app) "/build" } {
                input type="hidden" name="csrf" value=(viewer.csrf_token());
                label { "Branch or commit"
                    input name="ref" placeholder=(app.branch) autocomplete="off";
                }
                label.check {
                    span { "Build again if built" }
                    input type="checkbox" name="force" value="1";
                }
                button type="submit" { "Build now" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct BuildForm {
    #[serde(default)]
    csrf: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    force: Option<String>,
}

/// Queues the build and sends the browser to its page.
pub async fn submit(
    request: HttpRequest,
    viewer: Viewer,
    path: web::Path<(String, String)>,
    form: web::Form<BuildForm>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let (namespace, name) = path.into_inner();
    let form = form.into_inner();
    viewer.require_form(&form.csrf)?;
    let app = load_app(&state, &namespace, &name).await?;
    if !viewer.may_build(&app.app) {
        return Err(PageError::Forbidden(format!(
            "You may not build {}: that needs membership of namespace {}",
            app.app,
            app.app.namespace()
        )));
    }
    let git_ref = match form.git_ref.trim() {
        "" => app.branch.clone(),
        other => other.to_owned(),
    };
    let is_commit = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
    let new = NewBuild {
        app_id: app.id,
        commit_id: is_commit.then(|| git_ref.to_ascii_lowercase()),
        git_ref,
        trigger: "web".into(),
        force: form.force.is_some(),
    };
    let store = state.store.clone();
    let requested = request.extensions().get::<RequestId>().cloned();
    let queued = blocking(move || {
        Ok(store
            .db
            .enqueue_requested_build(&new, None, requested.as_ref())?)
    })
    .await?;
    (state.settings.wake)();
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/builds/{}", queued.id())))
        .finish())
}
