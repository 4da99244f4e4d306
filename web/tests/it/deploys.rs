//! Deploys on the timeline and the deploy log page's filters.

use buildgrid_store::{BuildState, DeployLine};

use crate::seed::{commit, create_app, fake_digest, finish_build, start_build};
use crate::support::spawn_app;

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

#[actix_web::test]
async fn deploys_show_on_the_timeline_and_their_log_filters_combine() {
    let app = spawn_app();
    let shop = create_app(&app.store, "acme/hello");
    let build = start_build(&app.store, &shop, "main", &commit(1), "One");
    finish_build(
        &app.store,
        &shop,
        build,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );
    let deploy = app
        .store
        .db
        .start_deploy(shop.id, build, "cli", std::process::id(), |_| true)
        .unwrap();
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
