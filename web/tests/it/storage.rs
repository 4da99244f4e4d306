//! What the pages show of the next collection: why an image stays, and an app's storage.

use std::time::Duration;

use buildgrid_core::Digest;
use buildgrid_store::{App, BuildState, DeployImage, RetentionRule};

use crate::seed::{commit, create_app, finish_build, import_configured, start_build};
use crate::support::{TestApp, spawn_app};

/// A succeeded build of `main` at commit `n` whose image (its own config) is stored.
fn build(app: &TestApp, hello: &App, n: u64) -> (i64, Digest) {
    let id = start_build(
        &app.store,
        hello,
        "main",
        &commit(n),
        &format!("Change {n}"),
    );
    let config = serde_json::json!({ "Labels": { "change": n.to_string() } });
    let digest = import_configured(
        &app.store,
        app.dir.path(),
        &hello.image_repo,
        &commit(n),
        config,
    );
    finish_build(&app.store, hello, id, BuildState::Succeeded, Some(&digest));
    (id, digest)
}

/// A test app whose pages compute the collection's outlook on every view.
fn uncached() -> TestApp {
    let mut app = spawn_app();
    app.shared = buildgrid_web::Shared::new(buildgrid_web::Limits {
        outlook_ttl: Duration::ZERO,
        ..buildgrid_web::Limits::default()
    });
    app
}

/// The reasons the image page of `digest` lists, one per line.
async fn reasons(app: &TestApp, hello: &App, digest: &Digest) -> Vec<String> {
    let page = app
        .ok(&format!("/images/{}/{digest}", hello.image_repo))
        .await;
    let start = page
        .find(r#"<dd id="keep-reasons">"#)
        .unwrap_or_else(|| panic!("no reasons: {page}"));
    let section = &page[start..];
    let section = &section[..section.find("</dd>").unwrap()];
    if section.contains(r#"id="collectable""#) {
        return Vec::new();
    }
    section
        .split("<li>")
        .skip(1)
        .map(|li| li[..li.find("</li>").unwrap()].to_owned())
        .collect()
}

#[actix_web::test]
async fn the_image_page_says_why_an_image_stays() {
    let app = uncached();
    let hello = create_app(&app.store, "acme/hello");
    let builds: Vec<(i64, Digest)> = (1..=5).map(|n| build(&app, &hello, n)).collect();
    app.store
        .db
        .set_retention_rule(
            "acme/hello",
            RetentionRule {
                keep_last: Some(2),
                keep_deployed: Some(1),
                keep_days: None,
                drop_deleted_after: None,
            },
        )
        .unwrap();
    // Build 1 pinned; builds 2 and 3 deployed to service web on server s1, 3 the current one.
    app.store
        .db
        .pin_image(
            &hello.image_repo,
            &buildgrid_core::Tag::parse(&commit(1)).unwrap(),
        )
        .unwrap()
        .unwrap();
    app.store
        .db
        .add_service(hello.id, "web", r#"{"servers": ["s1"]}"#)
        .unwrap();
    for (id, digest) in &builds[1..3] {
        let deploy = app
            .store
            .db
            .start_deploy(
                hello.id,
                *id,
                "test",
                &buildgrid_store::Lease::this_process(),
            )
            .unwrap();
        app.store
            .db
            .record_deploy_images(&[DeployImage {
                deploy_id: deploy.id,
                service: "web".into(),
                build_id: *id,
                image_ref: format!("{}@{digest}", hello.image_repo),
                digest: digest.to_string(),
            }])
            .unwrap();
        app.store
            .db
            .finish_deploy(deploy.id, "succeeded", None)
            .unwrap();
    }

    assert_eq!(reasons(&app, &hello, &builds[0].1).await, ["pinned"]);
    assert_eq!(
        reasons(&app, &hello, &builds[1].1).await,
        ["a rollback target of service web (1 kept)"]
    );
    assert_eq!(
        reasons(&app, &hello, &builds[2].1).await,
        ["runs now on service web of server s1"]
    );
    assert_eq!(
        reasons(&app, &hello, &builds[3].1).await,
        ["the 2nd newest of the last 2 successful builds of branch main"]
    );
    assert_eq!(
        reasons(&app, &hello, &builds[4].1).await,
        ["the newest of the last 2 successful builds of branch main"]
    );

    // Unpinned, it has nothing left; the page says so, and collection agrees.
    assert!(
        app.store
            .db
            .unpin_image(
                &hello.image_repo,
                &buildgrid_core::Tag::parse(&commit(1)).unwrap()
            )
            .unwrap()
    );
    assert_eq!(
        reasons(&app, &hello, &builds[0].1).await,
        Vec::<String>::new()
    );
    let collection = app
        .store
        .gc(buildgrid_store::gc::GcOptions::default())
        .unwrap();
    assert_eq!(collection.builds, vec![builds[0].0]);
}

/// The numbers of the app page's storage section: stored, shared, reclaimable, and when.
async fn storage(app: &TestApp) -> (u64, u64, u64, String) {
    let page = app.ok("/apps/acme/hello").await;
    let bytes = |id: &str| -> u64 {
        let pattern = format!(r#"id="{id}" data-bytes=""#);
        let start = page
            .find(&pattern)
            .unwrap_or_else(|| panic!("no {id}: {page}"));
        let rest = &page[start + pattern.len()..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    let computed = page.find(r#"id="storage-computed""#).unwrap();
    let computed = page[computed..page[computed..].find("</p>").unwrap() + computed].to_owned();
    (
        bytes("stored-bytes"),
        bytes("shared-bytes"),
        bytes("reclaimable-bytes"),
        computed,
    )
}

#[actix_web::test]
async fn the_app_page_shows_what_the_app_stores_and_what_collection_would_reclaim() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let other = create_app(&app.store, "acme/other");
    for n in 1..=3 {
        build(&app, &hello, n);
    }
    // The other app's image shares hello's layer (same layer bytes, its own config).
    build(&app, &other, 9);
    app.store
        .db
        .set_retention_rule(
            "acme/hello",
            RetentionRule {
                keep_last: Some(1),
                ..RetentionRule::default()
            },
        )
        .unwrap();
    let dry_run = app
        .store
        .gc(buildgrid_store::gc::GcOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    let expected = dry_run
        .usage
        .iter()
        .find(|u| u.name == "acme/hello")
        .unwrap();
    assert!(
        expected.shared > 0 && expected.reclaimable > 0,
        "{expected:?}"
    );

    let (stored, shared, reclaimable, computed) = storage(&app).await;
    assert_eq!(
        (stored, shared, reclaimable),
        (expected.stored, expected.shared, expected.reclaimable)
    );

    // Within the minute the page shows the same outlook, with when it was computed.
    build(&app, &hello, 4);
    let again = storage(&app).await;
    assert_eq!(again, (stored, shared, reclaimable, computed.clone()));
    assert!(computed.contains("Computed 20"), "{computed}");

    // A process that computes it on every view sees the new build.
    let mut app = app;
    app.shared = buildgrid_web::Shared::new(buildgrid_web::Limits {
        outlook_ttl: Duration::ZERO,
        ..buildgrid_web::Limits::default()
    });
    let (fresh, ..) = storage(&app).await;
    assert!(fresh > stored, "{fresh} > {stored}");
}
