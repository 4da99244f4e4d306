//! The image page's Run and Installation tabs, its download counts, the repository page with
//! its tags and branch tags, and the home page's headline build.

use buildgrid_core::{RepoName, Tag};
use buildgrid_store::{BuildState, DownloadCount};

use crate::seed::{commit, create_app, finish_build, import_configured, start_build};
use crate::support::{HOST, spawn_app};

#[actix_web::test]
async fn run_publishes_the_exposed_ports_in_the_background_and_public_images_skip_sign_in() {
    let app = spawn_app();
    let repo = RepoName::parse("acme/web").unwrap();
    let ports = serde_json::json!({ "ExposedPorts": { "8080/tcp": {}, "53/udp": {} } });
    import_configured(&app.store, app.dir.path(), &repo, "v1", ports);
    let reference = format!("{HOST}/acme/web:v1");

    let run = app.ok("/images/acme/web/v1?tab=run").await;
    assert!(
        run.contains(&format!(
            "docker run -d -p 53:53/udp -p 8080:8080 {reference}"
        )),
        "{run}"
    );
    assert!(run.contains("- containerPort: 8080\n"), "{run}");
    assert!(
        run.contains("- containerPort: 53\n              protocol: UDP\n"),
        "{run}"
    );
    // Public: no pull secret, no sign-in.
    assert!(!run.contains("imagePullSecrets"), "{run}");
    assert!(!run.contains("secret-command"), "{run}");
    let installation = app.ok("/images/acme/web/v1").await;
    assert!(!installation.contains("login-command"), "{installation}");
    assert!(
        installation.contains("pulls without signing in"),
        "{installation}"
    );

    // A private image keeps the steps that sign in.
    app.store.db.set_namespace_public("acme", false).unwrap();
    let member = app.sign_in("ann", false, &["acme"]);
    let private = |uri: &str| member.on(actix_web::test::TestRequest::get().uri(uri));
    let page = crate::support::read(app.send(private("/images/acme/web/v1")).await).await;
    assert!(
        page.body.contains(&format!(
            r#"<code id="login-command">docker login {HOST}</code>"#
        )),
        "{}",
        page.body
    );
    let run = crate::support::read(app.send(private("/images/acme/web/v1?tab=run")).await).await;
    assert!(
        run.body
            .contains("imagePullSecrets:\n        - name: buildgrid-registry")
    );
    assert!(run.body.contains("--docker-server="), "{}", run.body);
}

#[actix_web::test]
async fn an_image_without_ports_runs_in_the_background_too() {
    let app = spawn_app();
    let repo = RepoName::parse("acme/tool").unwrap();
    let config = serde_json::json!({ "Cmd": ["/bin/true"] });
    import_configured(&app.store, app.dir.path(), &repo, "v1", config);
    let run = app.ok("/images/acme/tool/v1?tab=run").await;
    assert!(
        run.contains(&format!("docker run -d {HOST}/acme/tool:v1")),
        "{run}"
    );
    assert!(!run.contains("containerPort"), "{run}");
}

#[actix_web::test]
async fn details_count_pulls_and_whole_archive_downloads_apart() {
    let app = spawn_app();
    let repo = RepoName::parse("acme/counted").unwrap();
    let config = serde_json::json!({ "ExposedPorts": { "8080/tcp": {} } });
    let digest = import_configured(&app.store, app.dir.path(), &repo, "v1", config);
    app.store
        .db
        .add_downloads(&[DownloadCount {
            repo: repo.clone(),
            digest: digest.clone(),
            count: 4,
        }])
        .unwrap();
    for _ in 0..2 {
        let archive = app
            .send(actix_web::test::TestRequest::get().uri("/archives/acme/counted/v1"))
            .await;
        assert_eq!(archive.status(), 200);
        actix_web::test::read_body(archive).await;
    }
    // The writer counts once it has written the whole archive, on its own thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.store.db.archive_downloads(&repo, &digest).unwrap() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "archive downloads not counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let details = app.ok("/images/acme/counted/v1?tab=details").await;
    assert!(
        details.contains(r#"<span id="pulls">4 pulls</span>"#),
        "{details}"
    );
    assert!(
        details.contains(r#"<span id="archive-downloads">2 archive downloads</span>"#),
        "{details}"
    );
    assert_eq!(app.store.db.downloads(&repo, &digest).unwrap(), 4);
    assert!(details.contains("<code>8080/tcp</code>"), "{details}");
}

#[actix_web::test]
async fn the_image_id_is_the_config_digest_docker_shows() {
    let app = spawn_app();
    let repo = RepoName::parse("acme/ids").unwrap();
    let digest = import_configured(
        &app.store,
        app.dir.path(),
        &repo,
        "v1",
        serde_json::json!({}),
    );
    let details = buildgrid_store::image::image_details(&app.store, &repo, &digest)
        .unwrap()
        .unwrap();
    let page = app.ok("/images/acme/ids/v1?tab=details").await;
    assert!(
        page.contains(&format!(
            r#"<code id="image-id">{}</code>"#,
            details.config_digest
        )),
        "{page}"
    );
    assert!(page.contains("IMAGE ID"), "{page}");
}

#[actix_web::test]
async fn a_repository_page_lists_its_tags_newest_first_with_its_branch_tags() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let repo = hello.image_repo.clone();
    // Commits whose short forms differ.
    let (first_commit, second_commit) = ("a1".repeat(20), "b2".repeat(20));
    let id = start_build(&app.store, &hello, "main", &first_commit, "First");
    let first = import_configured(
        &app.store,
        app.dir.path(),
        &repo,
        &first_commit,
        serde_json::json!({}),
    );
    finish_build(&app.store, &hello, id, BuildState::Succeeded, Some(&first));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = import_configured(
        &app.store,
        app.dir.path(),
        &repo,
        &second_commit,
        serde_json::json!({ "Cmd": ["/bin/sh"] }),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    app.store
        .db
        .move_branch_tag(&repo, &Tag::parse("main").unwrap(), "main", id, &second)
        .unwrap();

    let page = app.ok(&format!("/images/{repo}")).await;
    let order: Vec<usize> = [
        ":main",
        &format!(":{}", &second_commit[..7]),
        &format!(":{}", &first_commit[..7]),
    ]
    .iter()
    .map(|label| {
        page.find(&format!(">{label}</a>"))
            .unwrap_or_else(|| panic!("{label} in {page}"))
    })
    .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "newest first: {page}"
    );
    assert!(
        page.contains("branch <span class=\"branch\">main</span>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("docker pull {HOST}/{repo}:main")),
        "the branch tag's pull command: {page}"
    );
    assert!(page.contains(r#"href="/apps/acme/hello""#), "{page}");
    // The branch tag is an image page like any tag.
    let image = app.ok(&format!("/images/{repo}/main")).await;
    assert!(image.contains(&second.to_string()), "{image}");

    // The app's page shows its branch tags and leads to the repository page.
    let timeline = app.ok("/apps/acme/hello").await;
    assert!(
        timeline.contains(&format!("docker pull {HOST}/{repo}:main")),
        "{timeline}"
    );
    assert!(
        timeline.contains(&format!(r#"href="/images/{repo}""#)),
        "{timeline}"
    );
    // The timeline's image value is the manifest digest, labelled so (not Docker's IMAGE ID).
    assert!(
        timeline.contains(&format!(
            r#"<span class="muted">digest</span><code title="{first}">"#
        )),
        "{timeline}"
    );

    // Unknown and private repositories are not found; image pages keep working.
    assert_eq!(app.get("/images/acme/nothing.here").await.status, 404);
    app.store.db.set_namespace_public("acme", false).unwrap();
    assert_eq!(app.get(&format!("/images/{repo}")).await.status, 404);
}

#[actix_web::test]
async fn a_skipped_build_is_never_the_apps_headline() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let built = start_build(&app.store, &hello, "main", &commit(3), "Built");
    let digest = import_configured(
        &app.store,
        app.dir.path(),
        &hello.image_repo,
        &commit(3),
        serde_json::json!({}),
    );
    finish_build(
        &app.store,
        &hello,
        built,
        BuildState::Succeeded,
        Some(&digest),
    );
    let skipped = start_build(&app.store, &hello, "main", &commit(3), "Built");
    finish_build(&app.store, &hello, skipped, BuildState::Skipped, None);

    let home = app.ok("/").await;
    assert!(
        home.contains(&format!(r#"href="/builds/{built}""#)),
        "{home}"
    );
    assert!(
        !home.contains(&format!(r#"href="/builds/{skipped}""#)),
        "{home}"
    );
}
