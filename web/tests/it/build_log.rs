use actix_web::test::TestRequest;
use buildgrid_store::BuildState;
use serde_json::Value;

use crate::seed::{
    append_line, commit, create_app, fake_digest, finish_build, start_build, write_log,
};
use crate::support::{EventStream, HOST, count, header, spawn_app};

/// The line numbers a page shows, in order.
fn line_numbers(body: &str) -> Vec<i64> {
    body.split(r#"id="L"#)
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

#[actix_web::test]
async fn a_long_log_opens_at_its_tail_with_a_way_back() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(1), "first");
    write_log(&app.store, id, 0, 2500, 500);
    finish_build(
        &app.store,
        &hello,
        id,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );

    let body = app.ok(&format!("/builds/{id}")).await;
    assert_eq!(line_numbers(&body), (1501..=2500).collect::<Vec<_>>());
    assert!(body.contains("Lines 1501–2500 of 2500"), "{body}");
    assert!(
        body.contains(r#"<a id="earlier" href="?before=1501""#),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            r#"data-fragment="/builds/{id}/lines?before=1501""#
        )),
        "{body}"
    );
    assert!(
        !body.contains("data-events"),
        "a finished build is not followed"
    );
    // Timestamps and steps on every line, the steps listed with links to their first line.
    assert!(body.contains("<time>22:13:35</time>"), "{body}");
    assert!(body.contains(r#"<span class="st">5/5</span>"#), "{body}");
    assert!(
        body.contains(&format!(r#"href="/builds/{id}?after=500#L501""#)),
        "{body}"
    );
    assert_eq!(count(&body, r#"<option value="3/5""#), 1, "{body}");
    // The image URL at the end.
    let pull = format!("{HOST}/{}:{}", hello.image_repo, commit(1));
    let end = body.split(r#"id="build-end""#).nth(1).unwrap();
    assert!(end.contains(&pull), "{end}");
    assert!(end.contains(&format!(
        r#"href="/images/{}/{}""#,
        hello.image_repo,
        commit(1)
    )));

    let earlier = app.ok(&format!("/builds/{id}?before=1501")).await;
    assert_eq!(line_numbers(&earlier), (501..=1500).collect::<Vec<_>>());
    assert!(earlier.contains(r#"href="?after=1500""#), "{earlier}");
    let start = app.ok(&format!("/builds/{id}?after=0")).await;
    assert_eq!(line_numbers(&start), (1..=1000).collect::<Vec<_>>());
    assert!(
        start.contains(r#"id="earlier" href="?before=1" hidden"#),
        "{start}"
    );

    // The script loads earlier windows in place.
    let fragment = app.ok(&format!("/builds/{id}/lines?before=1501")).await;
    let fragment: Value = serde_json::from_str(&fragment).unwrap();
    assert_eq!(line_numbers(fragment["html"].as_str().unwrap()).len(), 1000);
    assert_eq!(
        fragment["fragment"],
        format!("/builds/{id}/lines?before=501")
    );
    let first = app.ok(&format!("/builds/{id}/lines?before=501")).await;
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        line_numbers(first["html"].as_str().unwrap()),
        (1..=500).collect::<Vec<_>>()
    );
    assert!(first["fragment"].is_null());
}

#[actix_web::test]
async fn filters_by_text_and_step_run_on_the_server() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(1), "first");
    write_log(&app.store, id, 0, 3000, 1000);
    finish_build(
        &app.store,
        &hello,
        id,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );

    let text = app.ok(&format!("/builds/{id}?q=MODULE+95&step=")).await;
    let numbers = line_numbers(&text);
    assert!(!numbers.is_empty());
    assert!(numbers.iter().all(|n| n % 97 == 95), "{numbers:?}");
    assert!(
        text.contains("<mark>module 95</mark>"),
        "matches are marked: {text}"
    );
    assert!(text.contains(r#"value="MODULE 95""#), "{text}");

    let step = app.ok(&format!("/builds/{id}?step=2/3")).await;
    assert_eq!(line_numbers(&step), (1001..=2000).collect::<Vec<_>>());
    assert!(step.contains(r#"<option value="2/3" selected>"#), "{step}");
    let both = app.ok(&format!("/builds/{id}?step=2/3&q=module+4")).await;
    let numbers = line_numbers(&both);
    assert!(!numbers.is_empty());
    assert!(
        numbers.iter().all(|n| (1001..=2000).contains(n)),
        "{numbers:?}"
    );

    // `%` and `_` are text, not patterns.
    let literal = app.ok(&format!("/builds/{id}?q=%25")).await;
    assert!(line_numbers(&literal).is_empty(), "{literal}");
    assert!(literal.contains("No line matches."), "{literal}");
}

#[actix_web::test]
async fn jumps_to_the_first_error_and_downloads_the_raw_log() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(1), "first");
    write_log(&app.store, id, 0, 1500, 500);
    append_line(&app.store, id, 1501, "ERROR: missing script: build");
    append_line(
        &app.store,
        id,
        1502,
        "build failed: The command '/bin/sh -c npm run build' returned a non-zero code: 1",
    );
    finish_build(&app.store, &hello, id, BuildState::Failed, None);

    let jump = app.get(&format!("/builds/{id}/first-error")).await;
    assert_eq!(jump.status, 303);
    assert_eq!(
        header(&jump.headers, "location"),
        format!("/builds/{id}?after=1481#L1501").as_str()
    );
    let page = app.ok(&format!("/builds/{id}?after=1481")).await;
    assert!(
        page.contains(r#"<div class="ln err" id="L1501">"#),
        "{page}"
    );
    assert!(
        page.contains("non-zero code: 3"),
        "the build's reason: {page}"
    );

    let raw = app.get(&format!("/builds/{id}/log.txt")).await;
    assert_eq!(raw.status, 200);
    assert_eq!(
        header(&raw.headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    assert!(header(&raw.headers, "content-disposition").contains(&format!("build-{id}.log")));
    let lines: Vec<&str> = raw.body.lines().collect();
    assert_eq!(lines.len(), 1502);
    assert_eq!(lines[0], "Step 1/3 : RUN make part-1");
    assert_eq!(lines[1500], "ERROR: missing script: build");

    let clean = start_build(&app.store, &hello, "main", &commit(2), "clean");
    write_log(&app.store, clean, 0, 10, 5);
    assert_eq!(
        app.get(&format!("/builds/{clean}/first-error"))
            .await
            .status,
        404
    );
    assert_eq!(app.get("/builds/999").await.status, 404);
    assert_eq!(app.get("/builds/999/log.txt").await.status, 404);
}

#[actix_web::test]
async fn a_running_build_streams_its_lines_and_its_end() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(1), "first");
    write_log(&app.store, id, 0, 3, 10);

    let page = app.ok(&format!("/builds/{id}")).await;
    assert!(
        page.contains(&format!(r#"data-events="/builds/{id}/events?after=3""#)),
        "{page}"
    );
    assert!(page.contains(r#"data-state="building""#), "{page}");
    assert!(
        page.contains("Reload the page for new lines."),
        "a note without JavaScript: {page}"
    );

    let uri = format!("/builds/{id}/events?after=3");
    let mut stream = EventStream::new(app.send(TestRequest::get().uri(&uri)).await);
    write_log(&app.store, id, 3, 2, 10);
    let received = stream.until("L5").await.to_owned();
    assert!(
        received.contains("id: 5\nevent: lines\ndata: "),
        "{received}"
    );
    assert!(!received.contains("L3"), "{received}");
    app.store
        .db
        .set_build_state(id, BuildState::Storing)
        .unwrap();
    stream.until("event: state").await;
    append_line(&app.store, id, 6, "image: somewhere");
    finish_build(
        &app.store,
        &hello,
        id,
        BuildState::Succeeded,
        Some(&fake_digest(3)),
    );
    let received = stream.read_to_end().await;
    assert!(received.contains("L6"), "{received}");
    let end = received
        .split("event: end\ndata: ")
        .nth(1)
        .expect("an end event");
    let end: Value = serde_json::from_str(end.trim()).unwrap();
    assert_eq!(end["state"], "succeeded");
    assert!(
        end["end"].as_str().unwrap().contains(r#"id="image-link""#),
        "{end}"
    );

    // A reconnect resumes after the line its last event named.
    let resumed = app
        .send(
            TestRequest::get()
                .uri(&uri)
                .insert_header(("Last-Event-ID", "5")),
        )
        .await;
    let received = EventStream::new(resumed).read_to_end().await;
    assert!(
        received.contains("L6") && !received.contains("L5"),
        "{received}"
    );
    // With a filter, only matching lines come.
    let filtered = app
        .send(TestRequest::get().uri(&format!("/builds/{id}/events?after=0&q=image")))
        .await;
    let received = EventStream::new(filtered).read_to_end().await;
    assert_eq!(count(&received, r#"class=\"ln"#), 1, "{received}");
}
