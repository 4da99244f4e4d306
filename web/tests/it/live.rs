//! Live pages are never stale: a build page's stream and an app timeline's stream send the
//! state as it is when they connect, then its changes; deploys follow on the timeline; a build
//! whose deploy failed says so; "First error" is offered only when there is one.

use actix_web::test::TestRequest;
use buildgrid_store::{BuildState, DeployLine};
use serde_json::Value;

use crate::seed::{
    append_line, commit, create_app, fake_digest, finish_build, start_build, write_log,
};
use crate::support::{EventStream, TestApp, count, read, spawn_app};

/// The data of the first `name` event in `received`.
fn event(received: &str, name: &str) -> Value {
    let data = received
        .split(&format!("event: {name}\ndata: "))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} event in:\n{received}"));
    serde_json::from_str(data.lines().next().unwrap()).unwrap()
}

/// App `acme/hello` with a succeeded build 1.
fn built(app: &TestApp) -> (buildgrid_store::App, i64) {
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(1), "One");
    finish_build(
        &app.store,
        &hello,
        id,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );
    (hello, id)
}

#[actix_web::test]
async fn a_build_stream_that_connects_late_sends_the_build_as_it_is_now() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(1), "first");
    app.store
        .db
        .set_build_state(id, BuildState::Fetching)
        .unwrap();
    write_log(&app.store, id, 0, 4, 100);
    let page = app.ok(&format!("/builds/{id}")).await;
    assert!(page.contains("Lines 1–4 of 4"), "{page}");
    assert!(page.contains(r#"data-state="fetching""#), "{page}");

    // The build moves on before the page's stream connects.
    write_log(&app.store, id, 4, 2014, 500);
    app.store
        .db
        .set_build_state(id, BuildState::Building)
        .unwrap();
    let uri = format!("/builds/{id}/events?after=4");
    let mut stream = EventStream::new(app.send(TestRequest::get().uri(&uri)).await);
    let received = stream.until("event: state").await.to_owned();
    let state = event(&received, "state");
    assert_eq!(state["state"], "building");
    assert!(
        state["status"].as_str().unwrap().contains("building"),
        "{state}"
    );
    assert_eq!(state["total"], 2018, "{state}");
    let steps = state["steps"].as_str().unwrap();
    assert!(steps.contains("Step 5/5"), "{steps}");
    assert!(steps.contains(r#"id="build-steps""#), "{steps}");
    let facts = state["facts"].as_str().unwrap();
    assert!(facts.contains("so far"), "{facts}");
    assert!(facts.contains(r#"id="build-facts""#), "{facts}");

    // Later lines bring the header along.
    write_log(&app.store, id, 2018, 3, 500);
    let received = stream.until("L2021").await.to_owned();
    let after_lines = received.rsplit("event: lines").next().unwrap();
    assert!(after_lines.contains("event: state"), "{after_lines}");
    assert!(after_lines.contains(r#""total":2021"#), "{after_lines}");
}

#[actix_web::test]
async fn first_error_is_offered_only_when_a_line_looks_like_one() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let link = r#"id="first-error""#;

    // Failed without an error line: no link.
    let quiet = start_build(&app.store, &hello, "main", &commit(1), "quiet");
    write_log(&app.store, quiet, 0, 20, 10);
    finish_build(&app.store, &hello, quiet, BuildState::Failed, None);
    let page = app.ok(&format!("/builds/{quiet}")).await;
    assert!(!page.contains(link), "{page}");
    assert!(!page.contains("First error"), "{page}");

    // Failed with an error far before the lines shown: the link, and it leads to the line.
    let loud = start_build(&app.store, &hello, "main", &commit(2), "loud");
    append_line(&app.store, loud, 1, "ERROR: missing script: build");
    write_log(&app.store, loud, 1, 3000, 500);
    finish_build(&app.store, &hello, loud, BuildState::Failed, None);
    let page = app.ok(&format!("/builds/{loud}")).await;
    assert!(!page.contains(r#"id="L1""#), "line 1 is not in the tail");
    assert!(page.contains(link), "{page}");
    assert_eq!(
        app.get(&format!("/builds/{loud}/first-error")).await.status,
        303
    );

    // Running and clean, or succeeded: no link.
    let running = start_build(&app.store, &hello, "main", &commit(3), "running");
    write_log(&app.store, running, 0, 5, 10);
    assert!(!app.ok(&format!("/builds/{running}")).await.contains(link));
    let good = start_build(&app.store, &hello, "main", &commit(4), "good");
    append_line(&app.store, good, 1, "0 errors");
    finish_build(
        &app.store,
        &hello,
        good,
        BuildState::Succeeded,
        Some(&fake_digest(4)),
    );
    assert!(!app.ok(&format!("/builds/{good}")).await.contains(link));
}

#[actix_web::test]
async fn the_newest_lines_of_a_finished_log_open_at_its_end() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(1), "long");
    write_log(&app.store, id, 0, 5000, 1000);
    finish_build(
        &app.store,
        &hello,
        id,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );
    let tail = app.ok(&format!("/builds/{id}")).await;
    assert!(tail.contains("data-tail"), "{tail}");
    assert!(tail.contains("Lines 4001–5000 of 5000"), "{tail}");
    let earlier = app.ok(&format!("/builds/{id}?before=4001")).await;
    assert!(!earlier.contains("data-tail"), "{earlier}");
}

#[actix_web::test]
async fn a_build_whose_deploy_failed_says_so_to_who_may_see_deploys() {
    let app = spawn_app();
    let (hello, id) = built(&app);
    let deploy = app
        .store
        .db
        .start_deploy(hello.id, id, "cli", &buildgrid_store::Lease::this_process())
        .unwrap();
    app.store
        .db
        .finish_deploy(
            deploy.id,
            "failed",
            Some("local/web: bg.acme.hello.web.d1.r0 exited with code 3 before it was healthy"),
        )
        .unwrap();
    let badge = format!(r#"<a class="deploy-state" href="/deploys/{}""#, deploy.id);
    for uri in ["/apps/acme/hello".to_owned(), format!("/builds/{id}")] {
        let page = app.ok(&uri).await;
        assert!(page.contains(&badge), "{uri}: {page}");
        assert!(page.contains("deploy #1 failed"), "{uri}: {page}");
        assert!(page.contains(r#"data-state="succeeded""#), "{uri}: {page}");
    }
    // A later deploy of the same build that succeeded takes the badge away.
    let again = app
        .store
        .db
        .start_deploy(hello.id, id, "cli", &buildgrid_store::Lease::this_process())
        .unwrap();
    app.store
        .db
        .finish_deploy(again.id, "succeeded", None)
        .unwrap();
    assert!(
        !app.ok(&format!("/builds/{id}"))
            .await
            .contains("deploy-state")
    );
    app.store
        .db
        .finish_deploy(again.id, "failed", Some("broken"))
        .unwrap();

    // Deploys are for members while the namespace keeps its logs.
    app.store
        .db
        .set_namespace_logs_public("acme", false)
        .unwrap();
    for uri in ["/apps/acme/hello".to_owned(), format!("/builds/{id}")] {
        let page = app.ok(&uri).await;
        assert!(!page.contains("deploy-state"), "{uri}: {page}");
    }
    let ann = app.sign_in("ann", false, &["acme"]);
    let page = read(
        app.send(ann.on(TestRequest::get().uri(&format!("/builds/{id}"))))
            .await,
    )
    .await;
    assert!(page.body.contains("deploy #2 failed"), "{}", page.body);
}

#[actix_web::test]
async fn a_failed_deploy_says_why_at_the_top_of_its_page() {
    let app = spawn_app();
    let (hello, id) = built(&app);
    let deploy = app
        .store
        .db
        .start_deploy(hello.id, id, "cli", &buildgrid_store::Lease::this_process())
        .unwrap();
    app.store
        .db
        .append_deploy_line(
            deploy.id,
            &DeployLine {
                at_ms: 1_700_000_000_000,
                stream: "deploy".into(),
                line: "pulling".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let reason = "local/web: bg.acme.hello.web.d1.r0 exited with code 3 before it was healthy";
    app.store
        .db
        .finish_deploy(deploy.id, "failed", Some(reason))
        .unwrap();
    let page = app.ok(&format!("/deploys/{}", deploy.id)).await;
    let content = page.split(r#"<main id="content">"#).nth(1).unwrap();
    let alert = content
        .find(r#"role="alert""#)
        .expect("the reason as an alert");
    assert!(alert < content.find("deploy-status").unwrap(), "{content}");
    assert!(alert < content.find("deploy-log").unwrap(), "{content}");
    assert!(content.contains(reason), "{content}");
}

#[actix_web::test]
async fn the_timeline_stream_follows_deploys_what_runs_and_the_buttons() {
    let app = spawn_app();
    let (hello, id) = built(&app);
    app.store.db.add_service(hello.id, "web", "{}").unwrap();
    let ann = app.sign_in("ann", false, &["acme"]);
    let page = read(
        app.send(ann.on(TestRequest::get().uri("/apps/acme/hello")))
            .await,
    )
    .await;
    assert!(
        page.body.contains(r#"<div id="operations">"#),
        "{}",
        page.body
    );
    let events = "/apps/acme/hello/events?after=1&watch=";
    let mut stream = EventStream::new(app.send(ann.on(TestRequest::get().uri(events))).await);
    // The state as it is first: nothing deployed yet.
    let first = stream.until("event: operations").await.to_owned();
    assert!(
        event(&first, "operations")["html"]
            .as_str()
            .unwrap()
            .contains(r#"id="operations""#)
    );

    // A deploy starts (from the CLI, say): its card comes, and what runs.
    app.deployer
        .running
        .lock()
        .unwrap()
        .push(buildgrid_web::ServerRunning {
            server: "local".into(),
            containers: Ok(vec![buildgrid_web::Running {
                service: "web".into(),
                name: "bg.acme.hello.web.d1.r0".into(),
                image: "registry.test:5000/acme/hello:1".into(),
                state: "running".into(),
                deploy: "1".into(),
                addresses: vec!["127.0.0.1:8080".into()],
            }]),
        });
    let deploy = app
        .store
        .db
        .start_deploy(
            hello.id,
            id,
            "auto",
            &buildgrid_store::Lease::this_process(),
        )
        .unwrap();
    let received = stream.until(r#"data-state=\"running\""#).await.to_owned();
    let operations = received.rsplit("event: operations\ndata: ").next().unwrap();
    assert!(operations.contains(r#"id=\"d1\""#), "{operations}");
    assert!(
        operations.contains("bg.acme.hello.web.d1.r0"),
        "{operations}"
    );

    // It ends: the card says so, and build 1's row shows it deployed.
    app.store
        .db
        .finish_deploy(deploy.id, "succeeded", None)
        .unwrap();
    let received = stream.until(">deployed<").await.to_owned();
    let row = event(
        &format!(
            "event: row{}",
            received.rsplit("event: row").next().unwrap()
        ),
        "row",
    );
    assert_eq!(row["id"], id);
    assert!(
        row["html"].as_str().unwrap().contains(">deployed<"),
        "{row}"
    );
    assert!(
        !row["html"].as_str().unwrap().contains("deploy-state"),
        "{row}"
    );
    let operations = received.rsplit("event: operations\ndata: ").next().unwrap();
    assert!(
        operations.contains(r#"data-state=\"succeeded\""#),
        "{operations}"
    );
}

#[actix_web::test]
async fn who_may_not_see_deploys_gets_none_from_the_timeline_stream() {
    let app = spawn_app();
    let (hello, id) = built(&app);
    app.store
        .db
        .set_namespace_logs_public("acme", false)
        .unwrap();
    app.store
        .db
        .start_deploy(
            hello.id,
            id,
            "auto",
            &buildgrid_store::Lease::this_process(),
        )
        .unwrap();
    let mut stream = EventStream::new(
        app.send(TestRequest::get().uri("/apps/acme/hello/events?after=1&watch="))
            .await,
    );
    let next = start_build(&app.store, &hello, "main", &commit(2), "Two");
    let received = stream.until(&format!(r#""id":{next}"#)).await.to_owned();
    assert_eq!(count(&received, "event: operations"), 0, "{received}");
    assert_eq!(count(&received, "event: row"), 0, "{received}");
    assert!(!received.contains("/deploys/"), "{received}");
}

#[actix_web::test]
async fn the_home_page_says_what_runs_where_to_who_may_see_deploys() {
    let app = spawn_app();
    let (hello, id) = built(&app);
    app.store
        .db
        .add_service(hello.id, "web", r#"{"servers":["alpha","beta"]}"#)
        .unwrap();
    app.store
        .db
        .add_service(hello.id, "worker", r#"{"servers":["beta"]}"#)
        .unwrap();
    let newer = start_build(&app.store, &hello, "main", &commit(2), "Two");
    finish_build(
        &app.store,
        &hello,
        newer,
        BuildState::Succeeded,
        Some(&fake_digest(2)),
    );
    let body = app.ok("/").await;
    assert!(
        !body.contains(r#"class="row runs""#),
        "never deployed: {body}"
    );

    let deploy = |build: i64, state: &str| {
        let deploy = app
            .store
            .db
            .start_deploy(
                hello.id,
                build,
                "cli",
                &buildgrid_store::Lease::this_process(),
            )
            .unwrap();
        app.store.db.finish_deploy(deploy.id, state, None).unwrap();
    };
    deploy(id, "succeeded");
    deploy(newer, "failed");
    let body = app.ok("/").await;
    let runs = body
        .split(r#"class="row runs""#)
        .nth(1)
        .unwrap_or_else(|| panic!("no runs row: {body}"));
    let runs = runs.split("</div>").next().unwrap();
    assert!(runs.contains(&format!(r#"href="/builds/{id}""#)), "{runs}");
    assert!(runs.contains(&commit(1)[..7]), "{runs}");
    assert!(runs.contains("web on alpha, beta"), "{runs}");
    assert!(runs.contains("worker on beta"), "{runs}");
    assert!(runs.contains(r#"href="/deploys/1""#), "{runs}");
    assert!(runs.contains("deploy #2 failed"), "{runs}");

    app.store
        .db
        .set_namespace_logs_public("acme", false)
        .unwrap();
    let body = app.ok("/").await;
    assert!(!body.contains(r#"class="row runs""#), "{body}");
    assert!(!body.contains("/deploys/"), "{body}");
}

#[actix_web::test]
async fn a_timeline_stream_sends_deploys_again_only_when_they_differ_from_the_page() {
    let app = spawn_app();
    let (hello, id) = built(&app);
    app.store.db.add_service(hello.id, "web", "{}").unwrap();
    let deploy = app
        .store
        .db
        .start_deploy(hello.id, id, "cli", &buildgrid_store::Lease::this_process())
        .unwrap();
    app.store
        .db
        .finish_deploy(deploy.id, "succeeded", None)
        .unwrap();
    let page = app.ok("/apps/acme/hello").await;
    let events = page
        .split(r#"data-events=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a live timeline")
        .replace("&amp;", "&");
    assert!(events.contains("deploys=1.succeeded"), "{events}");
    let mut stream = EventStream::new(app.send(TestRequest::get().uri(&events)).await);

    // Nothing changed since the page: a new build comes, and no deploys or rows.
    let next = start_build(&app.store, &hello, "main", &commit(2), "Two");
    let received = stream.until(&format!(r#""id":{next}"#)).await.to_owned();
    assert_eq!(count(&received, "event: operations"), 0, "{received}");
    assert_eq!(count(&received, "event: row"), 0, "{received}");

    // A deploy starts: it comes.
    app.store
        .db
        .start_deploy(hello.id, id, "cli", &buildgrid_store::Lease::this_process())
        .unwrap();
    stream.until(r#"id=\"d2\""#).await;
}
