//! Deploys on the timeline and the deploy log page's filters.

use buildgrid_store::{BuildState, DeployLine};

use crate::seed::{commit, create_app, fake_digest, finish_build, start_build};
use crate::support::{TestApp, spawn_app};

fn line(server: &str, service: &str, container: &str, text: &str) -> DeployLine {
    DeployLine {
        at_ms: 1_700_000_000_000,
        server: Some(server.into()),
        service: Some(service.into()),
        container: Some(container.into()),
        stream: "deploy".into(),
        line: text.into(),
        ..Default::default()
    }
}

/// App `acme/hello` with a successful build 1 and a running deploy of it.
fn running_deploy(app: &TestApp) -> buildgrid_store::Deploy {
    let shop = create_app(&app.store, "acme/hello");
    let build = start_build(&app.store, &shop, "main", &commit(1), "One");
    finish_build(
        &app.store,
        &shop,
        build,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );
    app.store
        .db
        .start_deploy(
            shop.id,
            build,
            "cli",
            &buildgrid_store::Lease::this_process(),
        )
        .unwrap()
}

#[actix_web::test]
async fn deploys_show_on_the_timeline_and_their_log_filters_combine() {
    let app = spawn_app();
    let deploy = running_deploy(&app);
    for (server, service, container, text) in [
        ("alpha", "web", "web-a0", "alpha web started"),
        ("alpha", "worker", "worker-a0", "alpha worker started"),
        ("beta", "web", "web-b0", "beta web started"),
        ("beta", "web", "web-b1", "beta web second started"),
    ] {
        app.store
            .db
            .append_deploy_line(deploy.id, &line(server, service, container, text))
            .unwrap();
    }
    app.store
        .db
        .finish_deploy(deploy.id, "succeeded", None)
        .unwrap();

    let timeline = app.ok("/apps/acme/hello").await;
    assert!(timeline.contains(r#"href="/deploys/1""#), "{timeline}");
    assert!(timeline.contains("succeeded"));

    let all = app.ok("/deploys/1").await;
    for text in [
        "alpha web started",
        "alpha worker started",
        "beta web second started",
    ] {
        assert!(all.contains(text), "{text}");
    }
    let web_on_beta = app.ok("/deploys/1?server=beta&service=web").await;
    assert!(web_on_beta.contains("beta web started"));
    assert!(web_on_beta.contains("beta web second started"));
    assert!(!web_on_beta.contains("alpha web started"));
    let one = app
        .ok("/deploys/1?server=beta&service=web&container=web-b1")
        .await;
    assert!(one.contains("beta web second started"));
    assert!(!one.contains(">beta web started"), "{one}");
    let raw = app.ok("/deploys/1/log.txt").await;
    assert_eq!(raw.lines().count(), 4);
    assert_eq!(app.get("/deploys/2").await.status, 404);
}

#[actix_web::test]
async fn the_deploy_button_deploys_only_what_can_be_deployed_by_who_may_build() {
    use actix_web::test::TestRequest;

    use crate::seed::import_image;
    use crate::support::{header, read};

    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let failed = start_build(&app.store, &hello, "main", &commit(1), "Broken");
    finish_build(&app.store, &hello, failed, BuildState::Failed, None);
    let gone = start_build(&app.store, &hello, "main", &commit(2), "Image gone");
    finish_build(
        &app.store,
        &hello,
        gone,
        BuildState::Succeeded,
        Some(&fake_digest(2)),
    );
    let good = start_build(&app.store, &hello, "main", &commit(3), "Good");
    let digest = import_image(&app.store, app.dir.path(), &hello.image_repo, &commit(3));
    finish_build(
        &app.store,
        &hello,
        good,
        BuildState::Succeeded,
        Some(&digest),
    );
    let ann = app.sign_in("ann", false, &["acme"]);
    let bob = app.sign_in("bob", false, &[]);
    let deploy = |session: &crate::support::Session, build: i64, csrf: &str| {
        session.on(TestRequest::post()
            .uri("/apps/acme/hello/deploy")
            .set_form([("csrf", csrf.to_owned()), ("build", build.to_string())]))
    };

    // No services yet: no button, and the form says what is missing.
    let timeline = read(
        app.send(ann.on(TestRequest::get().uri("/apps/acme/hello")))
            .await,
    )
    .await
    .body;
    assert!(!timeline.contains("/apps/acme/hello/deploy"), "{timeline}");
    let page = read(app.send(deploy(&ann, good, &ann.csrf)).await).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("has no services"), "{}", page.body);

    app.store.db.add_service(hello.id, "web", "{}").unwrap();
    let timeline = read(
        app.send(ann.on(TestRequest::get().uri("/apps/acme/hello")))
            .await,
    )
    .await
    .body;
    assert_eq!(
        crate::support::count(&timeline, r#"href="/apps/acme/hello/deploy?build="#),
        2,
        "a button on each successful build: {timeline}"
    );
    assert!(!app.ok("/apps/acme/hello").await.contains("/deploy?build="));

    for (build, status, says) in [
        (failed, 400, "only a successful build can be deployed"),
        (gone, 400, "is no longer stored"),
        (99, 404, "has no build 99"),
    ] {
        let page = read(app.send(deploy(&ann, build, &ann.csrf)).await).await;
        assert_eq!(page.status, status, "{}", page.body);
        assert!(page.body.contains(says), "{}", page.body);
    }
    let refused = read(app.send(deploy(&bob, good, &bob.csrf)).await).await;
    assert_eq!(refused.status, 403);
    let forged = app.send(deploy(&ann, good, "not-the-token")).await;
    assert!(forged.status().is_client_error());
    assert!(app.deployer.asked.lock().unwrap().is_empty());

    let response = app.send(deploy(&ann, good, &ann.csrf)).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        header(response.headers(), "location"),
        "/apps/acme/hello#deploys"
    );
    assert_eq!(
        *app.deployer.asked.lock().unwrap(),
        vec![(hello.id, good, "ann (web)".to_owned())]
    );
}

#[actix_web::test]
async fn a_running_deploy_page_streams_its_lines_until_it_ends() {
    use crate::support::EventStream;
    use actix_web::test::TestRequest;

    let app = spawn_app();
    let deploy = running_deploy(&app);
    app.store
        .db
        .append_deploy_line(deploy.id, &line("alpha", "web", "web-a0", "pulling"))
        .unwrap();
    let page = app.ok("/deploys/1?service=web").await;
    assert!(
        page.contains(r#"data-events="/deploys/1/events?service=web&amp;after=1""#),
        "{page}"
    );
    let mut events = EventStream::new(
        app.send(TestRequest::get().uri("/deploys/1/events?service=web&after=1"))
            .await,
    );
    let store = app.store.clone();
    let writer = actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
        for (service, text) in [("worker", "worker started"), ("web", "web healthy")] {
            store
                .db
                .append_deploy_line(1, &line("alpha", service, "c", text))
                .unwrap();
        }
        store.db.finish_deploy(1, "succeeded", None).unwrap();
    });
    let seen = events.until("event: end").await.to_owned();
    writer.await.unwrap();
    assert!(seen.contains("web healthy"), "{seen}");
    assert!(!seen.contains("worker started"), "filtered: {seen}");
    assert!(
        !seen.contains("pulling"),
        "only lines after the page's: {seen}"
    );
    assert!(seen.contains(r#"data-state=\"succeeded\""#), "{seen}");
    assert!(!app.ok("/deploys/1").await.contains("data-events"));
}
