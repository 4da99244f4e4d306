use std::sync::atomic::Ordering;

use actix_web::test::TestRequest;

use crate::seed::create_app;
use crate::support::{TOKEN, header, read, spawn_app};

#[actix_web::test]
async fn build_now_queues_a_build_and_wakes_the_builder() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let form = [("csrf", ""), ("ref", ""), ("token", TOKEN)];
    let response = app
        .send(
            TestRequest::post()
                .uri("/apps/acme/hello/build")
                .set_form(form),
        )
        .await;
    assert_eq!(response.status(), 303);
    let builds = app.store.db.builds_of_app(hello.id, 10).unwrap();
    assert_eq!(builds.len(), 1);
    let build = &builds[0];
    assert_eq!(
        header(response.headers(), "location"),
        format!("/builds/{}", build.id).as_str()
    );
    assert_eq!(build.git_ref, "main", "the app's branch by default");
    assert_eq!(build.trigger, "web");
    assert_eq!(app.woken.load(Ordering::SeqCst), 1);

    let commit = "AB".repeat(20);
    let form = [("ref", commit.as_str()), ("token", TOKEN), ("force", "1")];
    app.send(
        TestRequest::post()
            .uri("/apps/acme/hello/build")
            .set_form(form),
    )
    .await;
    let build = &app.store.db.builds_of_app(hello.id, 1).unwrap()[0];
    assert_eq!(
        build.commit_id.as_deref(),
        Some(commit.to_lowercase().as_str())
    );
    assert!(build.force);
}

#[actix_web::test]
async fn build_now_needs_a_token_that_may_build() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    for form in [
        vec![("csrf", "")],
        vec![("token", "wrong")],
        vec![("token", " ")],
    ] {
        let page = read(
            app.send(
                TestRequest::post()
                    .uri("/apps/acme/hello/build")
                    .set_form(form),
            )
            .await,
        )
        .await;
        assert_eq!(page.status, 403);
        assert!(
            page.body.contains("buildgrid token create"),
            "{}",
            page.body
        );
    }
    assert!(app.store.db.builds_of_app(hello.id, 10).unwrap().is_empty());
    assert_eq!(app.woken.load(Ordering::SeqCst), 0);
    let missing = app
        .send(
            TestRequest::post()
                .uri("/apps/acme/nope/build")
                .set_form([("token", TOKEN)]),
        )
        .await;
    assert_eq!(missing.status(), 404);
    let get = app.get("/apps/acme/hello/build").await;
    assert_eq!(get.status, 404, "building is a POST");
}
