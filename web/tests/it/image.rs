use buildgrid_core::RepoName;
use buildgrid_store::BuildState;

use crate::seed::{commit, create_app, finish_build, import_image, start_build};
use crate::support::{HOST, spawn_app};

#[actix_web::test]
async fn installation_and_run_tabs_use_the_public_host() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let id = start_build(&app.store, &hello, "main", &commit(7), "Ship it");
    let digest = import_image(&app.store, app.dir.path(), &hello.image_repo, &commit(7));
    finish_build(&app.store, &hello, id, BuildState::Succeeded, Some(&digest));
    let repo = hello.image_repo.as_str();

    let page = app.ok(&format!("/images/{repo}/{}", commit(7))).await;
    // acme is public: pulling needs no sign-in (the `image_pages` module has private ones).
    assert!(!page.contains("login-command"), "{page}");
    let pull = format!(
        r#"<code id="pull-command">docker pull {HOST}/{repo}:{}</code>"#,
        commit(7)
    );
    assert!(page.contains(&pull), "{page}");
    assert!(
        page.contains(&format!("docker pull {HOST}/{repo}@{digest}")),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"href="/builds/{id}""#)),
        "the build that made it: {page}"
    );
    assert!(
        page.contains(r#"<a href="?tab=installation" aria-current="page">"#),
        "{page}"
    );

    let run = app
        .ok(&format!("/images/{repo}/{}?tab=run", commit(7)))
        .await;
    let reference = format!("{HOST}/{repo}:{}", commit(7));
    assert!(run.contains(&format!("docker run -d {reference}")), "{run}");
    assert!(run.contains("kind: Deployment"), "{run}");
    assert!(run.contains("  name: hello\n"), "{run}");
    assert!(!run.contains("imagePullSecrets"), "{run}");
    assert!(run.contains(&format!("image: {reference}\n")), "{run}");

    let by_digest = app.ok(&format!("/images/{repo}/{digest}")).await;
    assert!(by_digest.contains(&format!(
        r#"<code id="pull-command">docker pull {HOST}/{repo}@{digest}</code>"#
    )));
}

#[actix_web::test]
async fn unknown_images_and_tabs_are_not_found() {
    let app = spawn_app();
    let repo = RepoName::parse("library/tool").unwrap();
    import_image(&app.store, app.dir.path(), &repo, "v1");
    assert_eq!(app.get("/images/library/tool/v1").await.status, 200);
    for uri in [
        "/images/library/tool/v2",
        "/images/library/other/v1",
        "/images/library/tool/sha256:00",
        "/images/v1",
        "/images/library/tool/v1?tab=files",
        "/images/Library/tool/v1",
    ] {
        let page = app.get(uri).await;
        assert_eq!(page.status, 404, "{uri}");
    }
}

#[actix_web::test]
async fn contents_details_and_download_show_the_stored_image() {
    let app = spawn_app();
    let repo = RepoName::parse("library/tool").unwrap();
    let digest = import_image(&app.store, app.dir.path(), &repo, "v1");

    let contents = app.ok("/images/library/tool/v1?tab=contents").await;
    assert!(contents.contains("hello.txt"), "{contents}");
    assert!(contents.contains("-rw-r--r--"), "{contents}");
    assert!(contents.contains("26 B"), "{contents}");
    let missing = app
        .ok("/images/library/tool/v1?tab=contents&path=/nope")
        .await;
    assert!(missing.contains("The image has no directory"), "{missing}");

    let details = app.ok("/images/library/tool/v1?tab=details").await;
    let sums = buildgrid_store::image::archive_checksums(
        &app.store,
        &repo,
        &digest,
        Some(&format!("{HOST}/library/tool:v1")),
    )
    .unwrap()
    .unwrap();
    for (id, value) in [
        ("md5", &sums.md5),
        ("sha1", &sums.sha1),
        ("sha256", &sums.sha256),
        ("sha512", &sums.sha512),
    ] {
        assert!(
            details.contains(&format!(r#"<code id="{id}">{value}</code>"#)),
            "{id} in {details}"
        );
    }
    assert!(details.contains(&digest.to_string()));
    assert!(details.contains("linux/amd64"), "{details}");

    let download = app.ok("/images/library/tool/v1?tab=download").await;
    assert!(
        download.contains(r#"href="/archives/library/tool/v1""#),
        "{download}"
    );
    let archive = app
        .send(actix_web::test::TestRequest::get().uri("/archives/library/tool/v1"))
        .await;
    assert_eq!(archive.status(), 200);
    let headers = archive.headers().clone();
    assert_eq!(
        crate::support::header(&headers, "content-length"),
        sums.size.to_string()
    );
    assert!(
        crate::support::header(&headers, "content-disposition")
            .starts_with("attachment; filename=\"library_tool-v1.tar\"")
    );
    let bytes = actix_web::test::read_body(archive).await;
    assert_eq!(bytes.len() as u64, sums.size);
    use sha2::Digest as _;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sums.sha256);
}

#[actix_web::test]
async fn private_images_and_their_archives_are_hidden() {
    let app = spawn_app();
    let repo = RepoName::parse("secret/tool").unwrap();
    import_image(&app.store, app.dir.path(), &repo, "v1");
    for uri in [
        "/images/secret/tool/v1",
        "/images/secret/tool/v1?tab=contents",
        "/archives/secret/tool/v1",
    ] {
        assert_eq!(app.get(uri).await.status, 404, "{uri}");
    }
}

#[actix_web::test]
async fn archive_writers_are_bounded_and_a_client_that_reads_nothing_is_let_go() {
    let mut app = spawn_app();
    app.shared = buildgrid_web::Shared::new(buildgrid_web::Limits {
        archive_writers: 2,
        archive_write_timeout: std::time::Duration::from_secs(1),
        ..buildgrid_web::Limits::default()
    });
    let repo = RepoName::parse("library/noise").unwrap();
    // Larger than what the channel between writer and response holds.
    crate::seed::import_incompressible(&app.store, app.dir.path(), &repo, "v1", 6 << 20);
    let uri = "/archives/library/noise/v1";
    let request = || actix_web::test::TestRequest::get().uri(uri);
    // Two downloads held open, never read.
    let held = [app.send(request()).await, app.send(request()).await];
    for response in &held {
        assert_eq!(response.status(), 200);
    }
    let refused = crate::support::read(app.send(request()).await).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        crate::support::header(&refused.headers, "retry-after"),
        "10"
    );
    assert!(
        refused.body.contains("try again shortly"),
        "{}",
        refused.body
    );
    assert_eq!(app.get("/").await.status, 200, "pages answer meanwhile");
    assert_eq!(app.get("/images/library/noise/v1").await.status, 200);

    // The writers give up on clients that read nothing, and their places come back.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let again = app.send(request()).await;
    assert_eq!(
        again.status(),
        200,
        "a place is free after the write timeout"
    );
    let whole = actix_web::test::read_body(again).await;
    assert!(whole.len() > 6 << 20);
    // A download cut short ends with an error, never like a whole archive.
    for response in held {
        let body = actix_web::body::to_bytes(response.into_body()).await;
        assert!(body.is_err(), "a stopped download ended cleanly");
    }
}
