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
    assert!(
        page.contains(&format!(
            r#"<code id="login-command">docker login {HOST}</code>"#
        )),
        "{page}"
    );
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
    assert!(
        run.contains(&format!("docker run --rm {reference}")),
        "{run}"
    );
    assert!(run.contains("kind: Deployment"), "{run}");
    assert!(run.contains("  name: hello\n"), "{run}");
    assert!(
        run.contains("imagePullSecrets:\n        - name: buildgrid-registry"),
        "{run}"
    );
    assert!(run.contains(&format!("image: {reference}\n")), "{run}");
    assert!(run.contains(&format!("--docker-server={HOST}")), "{run}");

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
        "/images/library/tool/v1?tab=contents",
        "/images/Library/tool/v1",
    ] {
        let page = app.get(uri).await;
        assert_eq!(page.status, 404, "{uri}");
    }
}
