use std::sync::atomic::Ordering;

use actix_web::test::TestRequest;

use crate::seed::create_app;
use crate::support::{header, read, spawn_app};

#[actix_web::test]
async fn build_now_queues_a_build_and_wakes_the_builder() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let ann = app.sign_in("ann", false, &["acme"]);
    let timeline = read(
        app.send(ann.on(TestRequest::get().uri("/apps/acme/hello")))
            .await,
    )
    .await;
    assert!(timeline.body.contains("Build now"), "{}", timeline.body);
    let form = [("csrf", ann.csrf.as_str()), ("ref", "")];
    let response = app
        .send(
            ann.on(TestRequest::post()
                .uri("/apps/acme/hello/build")
                .set_form(form)),
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
    let form = [
        ("csrf", ann.csrf.as_str()),
        ("ref", commit.as_str()),
        ("force", "1"),
    ];
    app.send(
        ann.on(TestRequest::post()
            .uri("/apps/acme/hello/build")
            .set_form(form)),
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
async fn build_now_needs_a_session_its_csrf_token_and_the_right_to_build() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let ann = app.sign_in("ann", false, &["acme"]);
    let bob = app.sign_in("bob", false, &[]);
    let uri = "/apps/acme/hello/build";
    let cases = [
        (
            "anonymous",
            TestRequest::post().uri(uri).set_form([("csrf", "")]),
            "Sign in first",
        ),
        (
            "no csrf token",
            ann.on(TestRequest::post().uri(uri).set_form([("ref", "")])),
            "This form has expired",
        ),
        (
            "another session's token",
            ann.on(TestRequest::post()
                .uri(uri)
                .set_form([("csrf", bob.csrf.as_str())])),
            "This form has expired",
        ),
        (
            "a non-member",
            bob.on(TestRequest::post()
                .uri(uri)
                .set_form([("csrf", bob.csrf.as_str())])),
            "You may not build acme/hello",
        ),
    ];
    for (who, request, message) in cases {
        let page = read(app.send(request).await).await;
        assert_eq!(page.status, 403, "{who}");
        assert!(page.body.contains(message), "{who}: {}", page.body);
    }
    assert!(app.store.db.builds_of_app(hello.id, 10).unwrap().is_empty());
    assert_eq!(app.woken.load(Ordering::SeqCst), 0);
    let timeline = read(
        app.send(bob.on(TestRequest::get().uri("/apps/acme/hello")))
            .await,
    )
    .await;
    assert!(!timeline.body.contains("Build now"), "bob sees the form");
    let anonymous = app.get("/apps/acme/hello").await;
    assert!(
        anonymous.body.contains("Sign in</a> to build"),
        "{}",
        anonymous.body
    );
    let missing = app
        .send(
            ann.on(TestRequest::post()
                .uri("/apps/acme/nope/build")
                .set_form([("csrf", ann.csrf.as_str())])),
        )
        .await;
    assert_eq!(missing.status(), 404);
    let get = app.get("/apps/acme/hello/build").await;
    assert_eq!(get.status, 404, "building is a POST");
}
