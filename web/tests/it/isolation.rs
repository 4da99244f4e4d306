//! What one app's pages and streams show stays within that app: a live stream sends only what
//! the same request would show as a page, for the app in its URL.

use actix_web::test::TestRequest;
use buildgrid_store::BuildState;

use crate::seed::{commit, create_app, fake_digest, finish_build, start_build};
use crate::support::{EventStream, header, read, spawn_app};

#[actix_web::test]
async fn a_timeline_stream_sends_only_builds_of_the_app_in_its_url() {
    let app = spawn_app();
    let public = create_app(&app.store, "acme/hello");
    let neighbour = create_app(&app.store, "acme/other");
    let private = create_app(&app.store, "secret/app");
    let own = start_build(&app.store, &public, "main", &commit(1), "public work");
    let other = start_build(&app.store, &neighbour, "main", &commit(2), "neighbour work");
    let hidden = start_build(&app.store, &private, "main", &commit(3), "private plans");
    finish_build(
        &app.store,
        &private,
        hidden,
        BuildState::Succeeded,
        Some(&fake_digest(0x5ec)),
    );
    let bob = app.sign_in("bob", false, &["acme"]);

    let watch = format!("/apps/acme/hello/events?after=0&watch={hidden},{other},{own}");
    for request in [
        TestRequest::get().uri(&watch),
        bob.on(TestRequest::get().uri(&watch)),
    ] {
        let mut stream = EventStream::new(app.send(request).await);
        // The public build's event comes in the same look as the watched ones would.
        let received = stream.until(&format!(r#""id":{own}}}"#)).await.to_owned();
        for leaked in [hidden, other] {
            assert!(
                !received.contains(&format!(r#""id":{leaked}}}"#)),
                "build {leaked} of another app was sent: {received}"
            );
        }
        assert!(!received.contains("private plans"), "{received}");
        assert!(!received.contains("secret/app"), "{received}");
        assert!(!received.contains("00000000005ec"), "{received}");
        assert!(!received.contains("neighbour work"), "{received}");
    }
}

#[actix_web::test]
async fn a_password_reset_ends_the_users_web_sessions() {
    let app = spawn_app();
    let ann = app.sign_in("ann", false, &["acme"]);
    let other = app.sign_in("bob", false, &["acme"]);
    let settings = read(app.send(ann.on(TestRequest::get().uri("/settings"))).await).await;
    assert_eq!(settings.status, 200, "{}", settings.body);

    let user = buildgrid_access::user(&app.store, "ann").unwrap();
    buildgrid_access::reset_password(&app.store, &user).unwrap();

    let after = read(app.send(ann.on(TestRequest::get().uri("/settings"))).await).await;
    assert_eq!(
        after.status, 303,
        "the old session still signs in: {}",
        after.body
    );
    assert!(header(&after.headers, "location").starts_with("/login"));
    let bobs = read(
        app.send(other.on(TestRequest::get().uri("/settings")))
            .await,
    )
    .await;
    assert_eq!(bobs.status, 200, "another user's session stays");
}
