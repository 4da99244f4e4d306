use buildgrid_core::RepoName;
use buildgrid_store::BuildState;

use crate::seed::{commit, create_app, fake_digest, finish_build, import_image, start_build};
use crate::support::{HOST, count, header, spawn_app};

#[actix_web::test]
async fn an_empty_store_says_how_to_start() {
    let app = spawn_app();
    let body = app.ok("/").await;
    assert!(body.contains("No public apps here"), "{body}");
    let root = app.sign_in("root", true, &[]);
    let body = crate::support::read(
        app.send(root.on(actix_web::test::TestRequest::get().uri("/")))
            .await,
    )
    .await
    .body;
    assert!(body.contains("No apps yet"), "{body}");
    assert!(body.contains("buildgrid app create"), "{body}");
}

#[actix_web::test]
async fn apps_show_their_last_build_and_newest_image() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let idle = create_app(&app.store, "acme/idle");
    let good = start_build(&app.store, &hello, "main", &commit(1), "first");
    finish_build(
        &app.store,
        &hello,
        good,
        BuildState::Succeeded,
        Some(&fake_digest(1)),
    );
    let bad = start_build(&app.store, &hello, "feature", &commit(2), "broken");
    finish_build(&app.store, &hello, bad, BuildState::Failed, None);

    let body = app.ok("/").await;
    assert!(body.contains(r#"href="/apps/acme/hello""#), "{body}");
    assert!(body.contains(r#"href="/apps/acme/idle""#), "{body}");
    assert!(body.contains("No builds yet"), "{idle:?} has none: {body}");
    // The last build is the failed one of `feature` ...
    assert!(body.contains(&format!(r#"href="/builds/{bad}""#)), "{body}");
    assert!(body.contains(r#"data-state="failed""#), "{body}");
    assert!(body.contains(&commit(2)[..7]), "{body}");
    assert!(body.contains("feature"), "{body}");
    // ... and the image is the newest one that succeeded.
    let image = format!("{HOST}/{}:{}", hello.image_repo, commit(1));
    assert!(body.contains(&image), "{body}");
    assert_eq!(count(&body, "data-copy="), 1, "one copy button: {body}");
}

#[actix_web::test]
async fn imported_repositories_without_an_app_are_listed() {
    let app = spawn_app();
    let repo = RepoName::parse("library/tool").unwrap();
    import_image(&app.store, app.dir.path(), &repo, "v1");
    let body = app.ok("/").await;
    assert!(body.contains("Imported images"), "{body}");
    assert!(
        body.contains(&format!("docker pull {HOST}/library/tool:v1")),
        "{body}"
    );
    assert!(body.contains(r#"href="/images/library/tool/v1""#), "{body}");
}

#[actix_web::test]
async fn static_files_are_embedded_and_cached_for_good() {
    let app = spawn_app();
    let page = app.get("/").await;
    let policy = header(&page.headers, "content-security-policy");
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let body = page.body;
    let css = body
        .split("href=\"")
        .find(|s| s.starts_with("/static/buildgrid.css?v="))
        .and_then(|s| s.split('"').next())
        .expect("the page links its stylesheet with a version");
    let page = app.get(css).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        header(&page.headers, "content-type"),
        "text/css; charset=utf-8"
    );
    assert!(header(&page.headers, "cache-control").contains("immutable"));
    let script = app.get("/static/buildgrid.js").await;
    assert!(script.body.contains("EventSource"));
    assert_eq!(app.get("/static/other.js").await.status, 404);
}
