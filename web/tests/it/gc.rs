//! What the pages show of builds whose image collection removed.

use buildgrid_store::gc::GcOptions;
use buildgrid_store::{App, BuildState, RetentionRule};

use crate::seed::{commit, create_app, finish_build, import_configured, start_build};
use crate::support::{HOST, TestApp, count, spawn_app};

/// Two builds of `main` with keep-last-1, collected: returns (removed build, kept build).
fn collected(app: &TestApp) -> (App, i64, i64) {
    let hello = create_app(&app.store, "acme/hello");
    let mut ids = Vec::new();
    for n in [1, 2] {
        let id = start_build(
            &app.store,
            &hello,
            "main",
            &commit(n),
            &format!("Change {n}"),
        );
        // A config of its own, so the two builds' images differ.
        let config = serde_json::json!({ "Labels": { "change": n.to_string() } });
        let digest = import_configured(
            &app.store,
            app.dir.path(),
            &hello.image_repo,
            &commit(n),
            config,
        );
        finish_build(&app.store, &hello, id, BuildState::Succeeded, Some(&digest));
        ids.push(id);
    }
    let keep_last_1 = RetentionRule {
        keep_last: Some(1),
        ..RetentionRule::default()
    };
    app.store
        .db
        .set_retention_rule("acme/hello", keep_last_1)
        .unwrap();
    let collection = app.store.gc(GcOptions::default()).unwrap();
    assert_eq!(collection.builds, vec![ids[0]], "{collection:?}");
    assert!(app.store.db.image_removed(ids[0]).unwrap());
    (hello, ids[0], ids[1])
}

#[actix_web::test]
async fn a_collected_build_says_its_image_was_removed_instead_of_a_pull_reference() {
    let app = spawn_app();
    let (hello, removed, kept) = collected(&app);
    let repo = hello.image_repo.as_str();
    let gone_pull = format!("{HOST}/{repo}:{}", commit(1));
    let kept_pull = format!("{HOST}/{repo}:{}", commit(2));

    let timeline = app.ok("/apps/acme/hello").await;
    assert_eq!(
        count(&timeline, "image removed by retention"),
        1,
        "{timeline}"
    );
    assert!(
        timeline.contains(&format!(r#"id="removed-{removed}""#)),
        "{timeline}"
    );
    assert!(!timeline.contains(&gone_pull), "{timeline}");
    assert!(timeline.contains(&kept_pull), "{timeline}");
    assert!(
        !timeline.contains(&format!("/deploy?build={removed}")),
        "a removed image offers no deploy: {timeline}"
    );

    let page = app.ok(&format!("/builds/{removed}")).await;
    assert!(page.contains(r#"id="image-removed""#), "{page}");
    assert!(page.contains("image removed by retention"), "{page}");
    assert!(!page.contains(&gone_pull), "{page}");
    assert!(!page.contains(r#"id="image-link""#), "{page}");

    let page = app.ok(&format!("/builds/{kept}")).await;
    assert!(!page.contains("image removed by retention"), "{page}");
    assert!(page.contains(&kept_pull), "{page}");
}

#[actix_web::test]
async fn the_image_page_of_a_collected_image_is_gone_and_names_its_build() {
    let app = spawn_app();
    let (hello, removed, _) = collected(&app);
    let repo = hello.image_repo.as_str();
    let digest = app
        .store
        .db
        .build(removed)
        .unwrap()
        .unwrap()
        .image_digest
        .unwrap();

    for reference in [commit(1), digest] {
        let uri = format!("/images/{repo}/{reference}");
        let page = app.get(&uri).await;
        assert_eq!(page.status, 410, "GET {uri}:\n{}", page.body);
        assert!(page.body.contains("removed by retention"), "{}", page.body);
        assert!(
            page.body
                .contains(&format!(r#"href="/builds/{removed}">build #{removed}"#)),
            "{}",
            page.body
        );
        assert!(page.body.contains("Change 1"), "{}", page.body);
        assert!(!page.body.contains("pull-command"), "{}", page.body);
    }
    app.ok(&format!("/images/{repo}/{}", commit(2))).await;
    // A tag no build made is still simply missing.
    assert_eq!(
        app.get(&format!("/images/{repo}/{}", commit(3)))
            .await
            .status,
        404
    );
}
