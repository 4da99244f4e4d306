//! What one app's pages and streams show stays within that app and its namespace's members (a
//! live stream sends only what the same request would show as a page, for the app in its URL;
//! logs, deploys and running containers are for members unless published), what one client may
//! hold open is bounded, and sessions end with the password they were opened with.

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

/// From a client at `ip`.
fn from(ip: &str, uri: &str) -> TestRequest {
    TestRequest::get()
        .uri(uri)
        .peer_addr(format!("{ip}:40000").parse().unwrap())
}

#[actix_web::test]
async fn one_client_holds_a_bounded_number_of_event_streams() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let running = start_build(&app.store, &hello, "main", &commit(1), "running");
    let timeline = "/apps/acme/hello/events?after=0";
    let mut held = Vec::new();
    for n in 0..20 {
        let uri = if n % 2 == 0 {
            timeline.to_owned()
        } else {
            format!("/builds/{running}/events")
        };
        held.push(EventStream::new(app.send(from("10.0.0.1", &uri)).await));
    }
    let refused = read(app.send(from("10.0.0.1", timeline)).await).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        refused.body.contains("live updates open"),
        "{}",
        refused.body
    );
    assert_eq!(header(&refused.headers, "retry-after"), "10");
    let log = read(
        app.send(from("10.0.0.1", &format!("/builds/{running}/events")))
            .await,
    )
    .await;
    assert_eq!(log.status, 429, "every kind of stream counts");

    // Other clients, pages and the rest of the stream go on.
    EventStream::new(app.send(from("10.0.0.2", timeline)).await);
    let page = read(app.send(from("10.0.0.1", "/apps/acme/hello")).await).await;
    assert_eq!(page.status, 200);
    held[0].until(&format!(r#""id":{running}}}"#)).await;

    // A closed stream gives its place back.
    held.pop();
    EventStream::new(app.send(from("10.0.0.1", timeline)).await);
}

#[actix_web::test]
async fn streams_in_all_are_capped_and_idle_ones_end() {
    let mut app = spawn_app();
    app.shared = buildgrid_web::Shared::new(buildgrid_web::Limits {
        streams: 3,
        stream_idle: std::time::Duration::from_secs(1),
        ..buildgrid_web::Limits::default()
    });
    create_app(&app.store, "acme/hello");
    let uri = "/apps/acme/hello/events?after=0";
    let held: Vec<EventStream> =
        open_streams(&app, uri, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]).await;
    let refused = read(app.send(from("10.0.0.4", uri)).await).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("try again later"), "{}", refused.body);
    assert_eq!(header(&refused.headers, "retry-after"), "10");
    assert_eq!(app.get("/").await.status, 200, "pages answer at the cap");
    assert_eq!(app.get("/apps/acme/hello").await.status, 200);

    // Nothing happens: each stream ends after a second, and frees its place.
    let started = std::time::Instant::now();
    for stream in held {
        stream.read_to_end().await;
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    EventStream::new(app.send(from("10.0.0.4", uri)).await);
}

async fn open_streams(app: &crate::support::TestApp, uri: &str, ips: &[&str]) -> Vec<EventStream> {
    let mut streams = Vec::new();
    for ip in ips {
        streams.push(EventStream::new(app.send(from(ip, uri)).await));
    }
    streams
}

/// App `open/site` of a public namespace that keeps its logs to its members: a failed build
/// with a log, and a finished deploy with a log line naming its server.
fn public_app_with_private_logs(app: &crate::support::TestApp) -> (i64, i64) {
    app.store.db.set_namespace_public("open", true).unwrap();
    let site = create_app(&app.store, "open/site");
    let build = start_build(&app.store, &site, "main", &commit(1), "Ship it");
    crate::seed::append_line(&app.store, build, 1, "secret build output");
    crate::seed::append_line(&app.store, build, 2, "error: it broke");
    finish_build(
        &app.store,
        &site,
        build,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );
    let deploy = app
        .store
        .db
        .start_deploy(
            site.id,
            build,
            "cli",
            &buildgrid_store::Lease::this_process(),
        )
        .unwrap();
    app.store
        .db
        .append_deploy_line(
            deploy.id,
            &buildgrid_store::DeployLine {
                at_ms: 1_700_000_000_000,
                server: Some("db-host-7".into()),
                service: Some("web".into()),
                container: Some("web-a0".into()),
                stream: "deploy".into(),
                line: "listening on 10.1.2.3:8080".into(),
                ..Default::default()
            },
        )
        .unwrap();
    app.store
        .db
        .finish_deploy(deploy.id, "succeeded", None)
        .unwrap();
    app.deployer
        .running
        .lock()
        .unwrap()
        .push(buildgrid_web::ServerRunning {
            server: "db-host-7".into(),
            containers: Ok(vec![buildgrid_web::Running {
                service: "web".into(),
                name: "web-a0".into(),
                image: "open/site:1".into(),
                state: "running".into(),
                deploy: deploy.id.to_string(),
                addresses: vec!["10.1.2.3:8080".into()],
            }]),
        });
    (build, deploy.id)
}

#[actix_web::test]
async fn logs_deploys_and_running_containers_of_a_public_namespace_are_for_members() {
    let app = spawn_app();
    let (build, deploy) = public_app_with_private_logs(&app);
    let member = app.sign_in("ann", false, &["open"]);
    let outsider = app.sign_in("bob", false, &["acme"]);
    let hidden = [
        format!("/builds/{build}/log.txt"),
        format!("/builds/{build}/lines?before=3"),
        format!("/builds/{build}/events?after=0"),
        format!("/builds/{build}/first-error"),
        format!("/deploys/{deploy}"),
        format!("/deploys/{deploy}/log.txt"),
        format!("/deploys/{deploy}/events?after=0"),
    ];
    for (who, session) in [("anonymous", None), ("bob", Some(&outsider))] {
        let send = |uri: &str| {
            let request = TestRequest::get().uri(uri);
            match session {
                Some(session) => session.on(request),
                None => request,
            }
        };
        let timeline = read(app.send(send("/apps/open/site")).await).await;
        assert_eq!(timeline.status, 200, "{who}: the app's page is public");
        assert!(
            timeline.body.contains("Ship it"),
            "{who}: {}",
            timeline.body
        );
        for secret in ["db-host-7", "10.1.2.3", "web-a0", "/deploys/"] {
            assert!(
                !timeline.body.contains(secret),
                "{who} sees {secret}: {}",
                timeline.body
            );
        }
        let page = read(app.send(send(&format!("/builds/{build}"))).await).await;
        assert_eq!(page.status, 200, "{who}");
        assert!(
            !page.body.contains("secret build output"),
            "{who}: {}",
            page.body
        );
        assert!(
            page.body.contains("shown to its members only"),
            "{}",
            page.body
        );
        assert!(
            page.body.contains("Image page"),
            "{who}: the image stays public"
        );
        for uri in &hidden {
            let answer = read(app.send(send(uri)).await).await;
            assert_eq!(answer.status, 403, "{who} GET {uri}: {}", answer.body);
            assert!(!answer.body.contains("secret build output"));
            assert!(!answer.body.contains("10.1.2.3"));
        }
    }
    assert_eq!(
        app.deployer
            .asked_running
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no server was asked for a visitor who may not see the answer"
    );

    // Members see everything; the servers are asked once for views close together.
    for _ in 0..3 {
        let timeline = read(
            app.send(member.on(TestRequest::get().uri("/apps/open/site")))
                .await,
        )
        .await;
        assert!(timeline.body.contains("10.1.2.3:8080"), "{}", timeline.body);
        assert!(timeline.body.contains(&format!("/deploys/{deploy}")));
    }
    assert_eq!(
        app.deployer
            .asked_running
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let page = read(
        app.send(member.on(TestRequest::get().uri(&format!("/builds/{build}"))))
            .await,
    )
    .await;
    assert!(page.body.contains("secret build output"), "{}", page.body);
    for uri in hidden.iter().filter(|uri| !uri.contains("events")) {
        let answer = read(app.send(member.on(TestRequest::get().uri(uri))).await).await;
        assert!(
            matches!(answer.status.as_u16(), 200 | 303),
            "member GET {uri}: {} {}",
            answer.status,
            answer.body
        );
    }

    // A namespace that publishes its logs shows them to anyone who may read it.
    app.store
        .db
        .set_namespace_logs_public("open", true)
        .unwrap();
    assert!(
        app.ok(&format!("/builds/{build}/log.txt"))
            .await
            .contains("secret build output")
    );
    assert!(
        app.ok(&format!("/deploys/{deploy}"))
            .await
            .contains("10.1.2.3:8080")
    );
    assert!(app.ok("/apps/open/site").await.contains("db-host-7"));
}
