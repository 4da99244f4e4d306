//! What the pages say when there is nothing to show or no access: the account header on error
//! pages, a sign-in hint where a private page answers as a missing one, a real 404 page, and
//! one vocabulary for triggers, states and scopes.

use actix_web::test::TestRequest;
use buildgrid_store::BuildState;

use crate::seed::{commit, create_app, finish_build, start_build};
use crate::support::{read, spawn_app};

#[actix_web::test]
async fn error_pages_keep_the_account_header_and_hint_at_signing_in() {
    let app = spawn_app();
    let private = create_app(&app.store, "secret/app");
    let build = start_build(&app.store, &private, "main", &commit(1), "One");

    // An anonymous visitor following the link `git push` printed.
    let page = app.get(&format!("/builds/{build}")).await;
    assert_eq!(page.status, 404);
    assert!(page.body.contains("There is no build"), "{}", page.body);
    assert!(page.body.contains(r#"id="sign-in-hint""#), "{}", page.body);
    assert!(
        page.body
            .contains(&format!(r#"href="/login?next=%2Fbuilds%2F{build}""#)),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(">Sign in</a>"),
        "the header: {}",
        page.body
    );

    // A signed-in user keeps the header: their name and Sign out.
    let ann = app.sign_in("ann", false, &[]);
    let page = read(
        app.send(ann.on(TestRequest::get().uri(&format!("/builds/{build}"))))
            .await,
    )
    .await;
    assert_eq!(page.status, 404);
    assert!(
        page.body.contains(r#"<a href="/settings">ann</a>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("Sign out"));
    assert!(!page.body.contains(r#"id="sign-in-hint""#));
    assert!(page.body.contains(r#"id="member-hint""#), "{}", page.body);

    // An unknown URL: a page, in the site's frame, with the account.
    let page = read(
        app.send(ann.on(TestRequest::get().uri("/no/such/page")))
            .await,
    )
    .await;
    assert_eq!(page.status, 404);
    assert!(
        page.body.contains("There is no page at /no/such/page"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"<a href="/settings">ann</a>"#));
    assert!(
        page.headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"))
    );
}

#[actix_web::test]
async fn the_apps_page_says_why_a_viewer_sees_no_apps() {
    let app = spawn_app();
    create_app(&app.store, "secret/app");
    let anonymous = app.ok("/").await;
    assert!(anonymous.contains("No public apps here"), "{anonymous}");
    assert!(anonymous.contains(r#"href="/login""#));

    let ann = app.sign_in("ann", false, &[]);
    let page = read(app.send(ann.on(TestRequest::get().uri("/"))).await).await;
    assert!(!page.body.contains("Register one"), "{}", page.body);
    assert!(
        page.body
            .contains("buildgrid namespace add-member &lt;namespace&gt; ann"),
        "{}",
        page.body
    );

    let root = app.sign_in("root", true, &[]);
    let page = read(app.send(root.on(TestRequest::get().uri("/"))).await).await;
    assert!(page.body.contains("secret/app"), "an admin sees every app");
}

#[actix_web::test]
async fn triggers_and_states_read_as_sentences() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "feature/broken", &commit(1), "One");
    app.store
        .db
        .set_build_state(id, BuildState::Building)
        .unwrap();
    let page = app.ok(&format!("/builds/{id}")).await;
    assert!(!page.contains("Build building"), "{page}");
    assert!(page.contains("Building."), "{page}");
    let done = start_build(&app.store, &hello, "main", &commit(2), "Two");
    finish_build(&app.store, &hello, done, BuildState::Failed, None);
    let timeline = app.ok("/apps/acme/hello").await;
    assert!(timeline.contains("by git push"), "{timeline}");
    assert!(
        timeline.contains("running (fetching, building, storing)"),
        "the filter names the badges it stands for: {timeline}"
    );
}
