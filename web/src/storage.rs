//! What the next collection keeps and gives back, as pages show it: why an image stays (the
//! image page) and an app's storage (the app page). Both come from the store's outlook of the
//! collection, which the process computes at most once a minute (`Shared::outlook`).

use buildgrid_core::{AppRef, Digest, RepoName};
use buildgrid_store::gc::{KeepReason, Usage};
use maud::{Markup, html};

use crate::error::PageError;
use crate::image_tabs::size_text;
use crate::{Viewer, Web, format};

/// Why the next collection keeps an image, and when that was computed.
pub(crate) struct Kept {
    pub reasons: Vec<KeepReason>,
    pub computed_at: i64,
}

/// Why the next collection keeps the manifest `digest` of `repo`; `None` when the outlook,
/// computed again for an image newer than the one kept, does not have it (collected since).
pub(crate) async fn kept(
    state: &Web,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<Kept>, PageError> {
    let shared = &state.settings.shared;
    let has = |outlook: &buildgrid_store::gc::Outlook| outlook.keep_reasons(repo, digest).is_some();
    let outlook = shared.outlook(&state.store, has).await?;
    Ok(outlook.keep_reasons(repo, digest).map(|reasons| Kept {
        reasons,
        computed_at: outlook.computed_at(),
    }))
}

/// The reasons as the image page lists them, one line each. Viewers who may not see deploys
/// (`may_read_logs`) learn that a deploy keeps the image, not which service or server.
pub(crate) fn kept_markup(viewer: &Viewer, repo: &RepoName, kept: &Kept) -> Markup {
    let deploys_shown = viewer.may_read_logs(repo.namespace());
    let line = |reason: &KeepReason| match reason {
        KeepReason::Runs { .. }
        | KeepReason::LeftRunning { .. }
        | KeepReason::RollbackTarget { .. }
        | KeepReason::Deploying { .. }
            if !deploys_shown =>
        {
            "a deploy".to_owned()
        }
        reason => reason.to_string(),
    };
    let mut lines: Vec<String> = kept.reasons.iter().map(line).collect();
    lines.dedup();
    html! {
        dt { "Kept because" }
        dd #keep-reasons {
            @if lines.is_empty() {
                span #collectable { "nothing keeps it: the next collection removes it" }
            } @else {
                ul.reasons {
                    @for line in &lines { li { (line) } }
                }
            }
            span.muted { "as of " (format::datetime(kept.computed_at)) }
        }
    }
}

/// The app page's storage section: stored bytes, bytes shared with other apps, and what the
/// next collection would reclaim, with when that was computed.
pub(crate) async fn app_storage(state: &Web, app: &AppRef) -> Result<Markup, PageError> {
    let outlook = state
        .settings
        .shared
        .outlook(&state.store, |_| true)
        .await?;
    let name = app.to_string();
    let usage = outlook.usage().into_iter().find(|u| u.name == name);
    Ok(storage_markup(usage.as_ref(), outlook.computed_at()))
}

fn storage_markup(usage: Option<&Usage>, computed_at: i64) -> Markup {
    html! {
        section #storage aria-label="Storage" {
            h2 { "Storage" }
            @match usage {
                None => p.muted { "No images stored." },
                Some(usage) => dl.facts {
                    dt { "Stored" } dd #stored-bytes data-bytes=(usage.stored) { (size_text(usage.stored)) }
                    dt { "Shared with other apps" } dd #shared-bytes data-bytes=(usage.shared) { (size_text(usage.shared)) }
                    dt { "The next collection reclaims" }
                    dd #reclaimable-bytes data-bytes=(usage.reclaimable) {
                        (size_text(usage.reclaimable))
                    }
                },
            }
            p.muted #storage-computed {
                "Computed " (format::datetime(computed_at))
                " (at most once a minute: it reads every stored manifest)."
            }
        }
    }
}
