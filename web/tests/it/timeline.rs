use actix_web::test::TestRequest;
use buildgrid_store::BuildState;

use crate::seed::{commit, create_app, fake_digest, finish_build, queue_build, start_build};
use crate::support::{EventStream, HOST, count, spawn_app};

/// The build ids of a timeline page, in page order.
fn rows(body: &str) -> Vec<i64> {
    body.split(r#"<li id="b"#)
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

#[actix_web::test]
async fn builds_newest_first_with_commit_status_duration_and_image() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let first = start_build(
        &app.store,
        &hello,
        "main",
        &commit(1),
        "Add the page\n\nbody",
    );
    finish_build(
        &app.store,
        &hello,
        first,
        BuildState::Succeeded,
        Some(&fake_digest(0xabc)),
    );
    let second = start_build(&app.store, &hello, "main", &commit(2), "Break it");
    finish_build(&app.store, &hello, second, BuildState::Failed, None);

    let body = app.ok("/apps/acme/hello").await;
    assert_eq!(rows(&body), vec![second, first]);
    assert!(body.contains("Add the page"), "{body}");
    assert!(!body.contains("body</"), "only the subject line: {body}");
    assert!(body.contains("Ada Lovelace"), "{body}");
    assert!(body.contains(&commit(1)[..7]), "{body}");
    assert!(body.contains("took "), "{body}");
    assert!(
        body.contains("non-zero code"),
        "the reason of the failure: {body}"
    );
    // The image: its id and the full pull URL with a copy button.
    assert!(body.contains(">000000000abc</code>"), "{body}");
    let pull = format!("{HOST}/acme/hello.git-example-com-acme-hello:{}", commit(1));
    assert!(body.contains(&pull), "{body}");
    assert!(
        body.contains(&format!(r#"data-copy="pull-{first}""#)),
        "{body}"
    );
    assert!(body.contains(&format!(
        r#"href="/images/acme/hello.git-example-com-acme-hello/{}""#,
        commit(1)
    )));
    // The first page is live; its running builds are watched.
    assert!(
        body.contains(r#"data-events="/apps/acme/hello/events?after="#),
        "{body}"
    );
    let ann = app.sign_in("ann", false, &["acme"]);
    let signed_in = crate::support::read(
        app.send(ann.on(actix_web::test::TestRequest::get().uri("/apps/acme/hello")))
            .await,
    )
    .await
    .body;
    assert!(
        signed_in.contains(&format!(r#"name="csrf" value="{}""#, ann.csrf)),
        "the build form carries the session's csrf token: {signed_in}"
    );
}

#[actix_web::test]
async fn filters_by_branch_and_status() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let mut ids = Vec::new();
    for n in 0..6u64 {
        let branch = if n % 2 == 0 { "main" } else { "feature/x" };
        let id = start_build(&app.store, &hello, branch, &commit(n), "work");
        let state = if n % 3 == 0 {
            BuildState::Failed
        } else {
            BuildState::Succeeded
        };
        finish_build(&app.store, &hello, id, state, Some(&fake_digest(n)));
        ids.push(id);
    }
    let running = start_build(&app.store, &hello, "main", &commit(9), "running");

    let feature = app.ok("/apps/acme/hello?branch=feature%2Fx").await;
    assert_eq!(rows(&feature), vec![ids[5], ids[3], ids[1]]);
    assert!(
        feature.contains(r#"<option value="feature/x" selected>"#),
        "{feature}"
    );
    let failed = app.ok("/apps/acme/hello?status=failed").await;
    assert_eq!(rows(&failed), vec![ids[3], ids[0]]);
    let both = app.ok("/apps/acme/hello?branch=main&status=failed").await;
    assert_eq!(rows(&both), vec![ids[0]]);
    let live = app.ok("/apps/acme/hello?status=running&branch=").await;
    assert_eq!(rows(&live), vec![running]);
    let none = app.ok("/apps/acme/hello?branch=nope").await;
    assert!(rows(&none).is_empty());
    assert!(
        none.contains(r#"<p class="notice" id="no-builds">"#),
        "{none}"
    );

    let bad = app.get("/apps/acme/hello?status=green").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("unknown status"), "{}", bad.body);
    assert_eq!(app.get("/apps/acme/nope").await.status, 404);
    assert_eq!(app.get("/apps/Acme/hello").await.status, 404);
}

#[actix_web::test]
async fn pages_through_thousands_of_builds_by_id() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let mut ids = Vec::new();
    for n in 0..120u64 {
        let id = start_build(&app.store, &hello, "main", &commit(n), "work");
        finish_build(
            &app.store,
            &hello,
            id,
            BuildState::Succeeded,
            Some(&fake_digest(n)),
        );
        ids.push(id);
    }
    ids.reverse();
    let first = app.ok("/apps/acme/hello?branch=main").await;
    assert_eq!(rows(&first), ids[..50]);
    let older = format!("?branch=main&amp;before={}", ids[49]);
    assert!(first.contains(&older), "{first}");
    assert!(!first.contains("Newer"), "{first}");

    let second = app
        .ok(&format!("/apps/acme/hello?branch=main&before={}", ids[49]))
        .await;
    assert_eq!(rows(&second), ids[50..100]);
    assert!(
        !second.contains("data-events"),
        "only the newest page is live"
    );
    assert!(second.contains(&format!("after={}", ids[50])), "{second}");
    let last = app
        .ok(&format!("/apps/acme/hello?before={}", ids[99]))
        .await;
    assert_eq!(rows(&last), ids[100..]);
    assert!(!last.contains("Older"), "{last}");
    let back = app.ok(&format!("/apps/acme/hello?after={}", ids[50])).await;
    assert_eq!(rows(&back), ids[..50]);
}

#[actix_web::test]
async fn the_event_stream_sends_new_builds_and_state_changes() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let running = start_build(&app.store, &hello, "main", &commit(1), "first");
    let page = app.ok("/apps/acme/hello").await;
    let events = page
        .split(r#"data-events=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    assert_eq!(
        events,
        format!("/apps/acme/hello/events?after={running}&watch={running}")
    );

    let mut stream = EventStream::new(app.send(TestRequest::get().uri(&events)).await);
    stream.until(r#""id":"#).await;
    let queued = queue_build(&app.store, &hello, "feature");
    stream.until(&format!(r#""id":{queued}}}"#)).await;
    finish_build(
        &app.store,
        &hello,
        running,
        BuildState::Succeeded,
        Some(&fake_digest(7)),
    );
    let received = stream.until("succeeded").await.to_owned();
    assert!(
        received.contains(&format!("id: {queued}\nevent: build\ndata: ")),
        "{received}"
    );
    assert!(
        received.contains(&format!("{HOST}/acme/hello")),
        "the row has its pull URL: {received}"
    );
    assert_eq!(
        count(&received, r#"data-state=\"succeeded\""#),
        1,
        "{received}"
    );

    // A reconnect resumes after the last build it saw.
    let resumed = app
        .send(
            TestRequest::get()
                .uri(&events)
                .insert_header(("Last-Event-ID", queued.to_string())),
        )
        .await;
    let mut resumed = EventStream::new(resumed);
    let newer = queue_build(&app.store, &hello, "other");
    let received = resumed.until(&format!(r#""id":{newer}}}"#)).await;
    assert!(
        !received.contains(&format!(r#""id":{queued}}}"#)),
        "{received}"
    );
}
