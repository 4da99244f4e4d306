//! Forms: every POST answers 303 to a page (a reload never sends a form twice), a secret made
//! by one is shown once on the page it leads to, a refused form comes back filled in with the
//! reason, and deploys, rollbacks, revocations and making a namespace public are confirmed on a
//! page of their own first. buildgrid's own users are listed nowhere and changed by no one.

use actix_web::test::TestRequest;
use buildgrid_store::BuildState;

use crate::seed::{commit, create_app, finish_build, import_image, start_build};
use crate::support::{Page, Session, TestApp, count, header, read, spawn_app};

/// The `name=value` of each `Set-Cookie` for `name`.
fn set_cookie(page: &Page, name: &str) -> Option<String> {
    page.headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

async fn post(app: &TestApp, session: &Session, uri: &str, form: &[(&str, &str)]) -> Page {
    read(
        app.send(session.on(TestRequest::post().uri(uri).set_form(form)))
            .await,
    )
    .await
}

/// Follows a 303 with the session and the cookie the answer set (as a browser does).
async fn follow(app: &TestApp, session: &Session, answer: &Page) -> Page {
    assert_eq!(answer.status, 303, "{}", answer.body);
    let location = header(&answer.headers, "location").to_owned();
    let mut cookies = format!("bg_session={}", session.cookie);
    if let Some(shown) = set_cookie(answer, "bg_shown") {
        cookies.push_str("; ");
        cookies.push_str(shown.split(';').next().unwrap());
    }
    let path = location.split('#').next().unwrap().to_owned();
    read(
        app.send(
            TestRequest::get()
                .uri(&path)
                .insert_header(("Cookie", cookies)),
        )
        .await,
    )
    .await
}

#[actix_web::test]
async fn a_new_token_is_shown_once_after_a_redirect_and_a_bad_scope_keeps_the_form() {
    let app = spawn_app();
    let ann = app.sign_in("ann", false, &["acme"]);
    let made = post(
        &app,
        &ann,
        "/settings/tokens",
        &[
            ("csrf", &ann.csrf),
            ("name", "ci"),
            ("scopes", "pull"),
            ("expires", "30"),
        ],
    )
    .await;
    assert_eq!(header(&made.headers, "location"), "/settings#shown");
    let cookie = set_cookie(&made, "bg_shown").expect("the secret goes to the next page");
    assert!(cookie.contains("Path=/settings"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let shown = follow(&app, &ann, &made).await;
    assert_eq!(shown.status, 200);
    let secret = shown
        .body
        .split(r#"id="shown-token">"#)
        .nth(1)
        .expect("the page shows the token")
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        app.access
            .authenticate(Some(&format!("Bearer {secret}")), "t")
            .is_ok()
    );
    assert!(
        set_cookie(&shown, "bg_shown").is_some_and(|c| c.contains("Max-Age=0")),
        "the page deletes the cookie that carried the secret"
    );
    // The scope reads as it was typed, not `pull:*`.
    assert!(shown.body.contains("<code>pull</code>"), "{}", shown.body);
    assert!(!shown.body.contains("pull:*"));
    // Reloading the page shows the secret no more, and makes no second token.
    let again = read(app.send(ann.on(TestRequest::get().uri("/settings"))).await).await;
    assert!(!again.body.contains(&secret));
    assert_eq!(app.store.db.tokens(None).unwrap().len(), 1);
    // Another user on the same browser never sees it.
    let bob = app.sign_in("bob", false, &[]);
    let stolen = follow(&app, &bob, &made).await;
    assert!(!stolen.body.contains(&secret));

    // A bad scope: the form again, filled in, with the reason beside it.
    let refused = post(
        &app,
        &ann,
        "/settings/tokens",
        &[
            ("csrf", &ann.csrf),
            ("name", "deploy bot"),
            ("scopes", "push:acme"),
            ("expires", "90"),
        ],
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains(r#"id="token-error""#),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("Invalid scope"), "{}", refused.body);
    assert!(refused.body.contains(r#"value="deploy bot""#));
    assert!(refused.body.contains(r#"value="push:acme""#));
    assert!(refused.body.contains(r#"<option value="90" selected>"#));
    assert!(
        refused.body.contains("Sign out"),
        "the page keeps its header"
    );
    assert_eq!(app.store.db.tokens(None).unwrap().len(), 1);
}

#[actix_web::test]
async fn registry_credentials_and_new_users_are_shown_once_after_a_redirect() {
    let app = spawn_app();
    let root = app.sign_in("root", true, &[]);
    let made = post(
        &app,
        &root,
        "/settings/registry-password",
        &[("csrf", &root.csrf)],
    )
    .await;
    let page = follow(&app, &root, &made).await;
    assert!(
        page.body.contains("New registry credentials"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"id="shown-password""#));

    let made = post(
        &app,
        &root,
        "/settings/users",
        &[("csrf", &root.csrf), ("name", "eve")],
    )
    .await;
    let page = follow(&app, &root, &made).await;
    let password = page
        .body
        .split(r#"id="shown-web-password">"#)
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert!(app.access.sign_in_web("eve", password, "t").is_ok());

    let refused = post(
        &app,
        &root,
        "/settings/users",
        &[("csrf", &root.csrf), ("name", "Eve Smith")],
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains(r#"id="user-error""#),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(r#"value="Eve Smith""#));
}

#[actix_web::test]
async fn revoking_a_token_and_making_a_namespace_public_are_confirmed_first() {
    let app = spawn_app();
    let root = app.sign_in("root", true, &[]);
    app.store.db.ensure_namespace("secret").unwrap();
    let made = post(
        &app,
        &root,
        "/settings/tokens",
        &[("csrf", &root.csrf), ("name", "ci"), ("scopes", "pull")],
    )
    .await;
    assert_eq!(made.status, 303);
    let id = app.store.db.tokens(None).unwrap()[0].id;

    let settings = read(app.send(root.on(TestRequest::get().uri("/settings"))).await).await;
    let revoke = format!("/settings/tokens/{id}/revoke");
    assert!(settings.body.contains(&format!(r#"<a href="{revoke}""#)));
    assert!(
        !settings.body.contains(&format!(r#"action="{revoke}""#)),
        "no revocation in one click"
    );
    let confirm = read(app.send(root.on(TestRequest::get().uri(&revoke))).await).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains(&format!(r#"action="{revoke}""#)));
    assert!(confirm.body.contains("cannot be undone"));
    assert!(app.store.db.tokens(None).unwrap()[0].revoked_at.is_none());
    let revoked = post(&app, &root, &revoke, &[("csrf", &root.csrf)]).await;
    assert_eq!(header(&revoked.headers, "location"), "/settings#tokens");
    assert!(app.store.db.tokens(None).unwrap()[0].revoked_at.is_some());
    assert_eq!(
        read(app.send(root.on(TestRequest::get().uri(&revoke))).await)
            .await
            .status,
        404,
        "a revoked token is not offered again"
    );

    let make_public = "/settings/namespaces/secret/make-public";
    assert!(settings.body.contains(&format!(r#"href="{make_public}""#)));
    let confirm = read(app.send(root.on(TestRequest::get().uri(make_public))).await).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains(r#"name="action" value="public""#));
    assert!(!app.store.db.namespace_is_public("secret").unwrap());
    let changed = post(
        &app,
        &root,
        "/settings/namespaces",
        &[
            ("csrf", &root.csrf),
            ("namespace", "secret"),
            ("action", "public"),
        ],
    )
    .await;
    assert_eq!(header(&changed.headers, "location"), "/settings#namespaces");
    assert!(app.store.db.namespace_is_public("secret").unwrap());
    let ann = app.sign_in("ann", false, &[]);
    let refused = read(app.send(ann.on(TestRequest::get().uri(make_public))).await).await;
    assert_eq!(refused.status, 403);
}

#[actix_web::test]
async fn deploys_and_rollbacks_are_confirmed_and_land_on_the_deploy_page() {
    let app = spawn_app();
    let hello = create_app(&app.store, "acme/hello");
    let mut builds = Vec::new();
    for n in 1..=2 {
        let id = start_build(&app.store, &hello, "main", &commit(n), "Good");
        let digest = import_image(&app.store, app.dir.path(), &hello.image_repo, &commit(n));
        finish_build(&app.store, &hello, id, BuildState::Succeeded, Some(&digest));
        builds.push(id);
    }
    app.store.db.add_service(hello.id, "web", "{}").unwrap();
    let deployed = app
        .store
        .db
        .start_deploy(
            hello.id,
            builds[1],
            "cli",
            &buildgrid_store::Lease::this_process(),
        )
        .unwrap();
    app.store
        .db
        .finish_deploy(deployed.id, "succeeded", None)
        .unwrap();
    let ann = app.sign_in("ann", false, &["acme"]);

    let timeline = read(
        app.send(ann.on(TestRequest::get().uri("/apps/acme/hello")))
            .await,
    )
    .await;
    let rollback = format!("/apps/acme/hello/deploy?build={}", builds[0]);
    assert!(
        timeline.body.contains(&format!(r#"href="{rollback}""#)),
        "{}",
        timeline.body
    );
    assert_eq!(
        count(&timeline.body, r#"action="/apps/acme/hello/deploy""#),
        0
    );
    assert!(
        timeline.body.contains("from the command line"),
        "{}",
        timeline.body
    );

    let confirm = read(app.send(ann.on(TestRequest::get().uri(&rollback))).await).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm
            .body
            .contains(&format!("Roll back to build #{}", builds[0]))
    );
    assert!(confirm.body.contains(r#"action="/apps/acme/hello/deploy""#));
    assert!(app.deployer.asked.lock().unwrap().is_empty(), "nothing yet");

    // The process that deploys starts the deploy a moment later; the answer waits for it.
    let store = app.store.clone();
    let deployer = app.deployer.clone();
    let starter = actix_web::rt::spawn(async move {
        loop {
            let asked = deployer.asked.lock().unwrap().first().cloned();
            if let Some((app_id, build, trigger)) = asked {
                actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
                return store
                    .db
                    .start_deploy(
                        app_id,
                        build,
                        &trigger,
                        &buildgrid_store::Lease::this_process(),
                    )
                    .unwrap()
                    .id;
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    let answer = post(
        &app,
        &ann,
        "/apps/acme/hello/deploy",
        &[("csrf", &ann.csrf), ("build", &builds[0].to_string())],
    )
    .await;
    let started = starter.await.unwrap();
    assert_eq!(answer.status, 303);
    assert_eq!(
        header(&answer.headers, "location"),
        format!("/deploys/{started}")
    );
    let page = app.ok(&format!("/deploys/{started}")).await;
    assert!(page.contains("rollback by ann on the web"), "{page}");
    assert!(!page.contains("by rollback"), "{page}");

    let anonymous = app.get(&rollback).await;
    assert_eq!(anonymous.status, 303);
    assert!(header(&anonymous.headers, "location").starts_with("/login?next="));
}

#[actix_web::test]
async fn the_users_builds_and_deploys_pull_as_are_listed_nowhere_and_changed_by_no_one() {
    let app = spawn_app();
    let root = app.sign_in("root", true, &[]);
    for name in buildgrid_access::SYSTEM_USERS {
        let user = buildgrid_access::system_user(&app.store, name).unwrap();
        assert!(user.system);
        app.store.db.add_member("acme", user.id).unwrap();
        let (id, _) = buildgrid_access::create_token(
            &app.store,
            &user,
            "build 1",
            &[buildgrid_access::Scope::parse("pull:acme").unwrap()],
            None,
        )
        .unwrap();
        assert!(app.store.db.token_by_id(id).unwrap().is_some());
        assert!(
            app.store
                .db
                .tokens(None)
                .unwrap()
                .iter()
                .all(|t| t.id != id)
        );
        assert!(app.store.db.delete_token(id).unwrap());
        assert!(app.store.db.token_by_id(id).unwrap().is_none());
    }
    let settings = read(app.send(root.on(TestRequest::get().uri("/settings"))).await).await;
    for name in buildgrid_access::SYSTEM_USERS {
        assert!(
            !settings.body.contains(name),
            "{name} listed:\n{}",
            settings.body
        );
        for action in ["remove", "add"] {
            let refused = post(
                &app,
                &root,
                "/settings/namespaces",
                &[
                    ("csrf", &root.csrf),
                    ("namespace", "acme"),
                    ("action", action),
                    ("user", name),
                ],
            )
            .await;
            assert_eq!(refused.status, 400, "{action} {name}");
            assert!(
                refused.body.contains("buildgrid&#39;s own user")
                    || refused.body.contains("buildgrid's own user"),
                "{}",
                refused.body
            );
        }
        let user = app.store.db.user_by_name(name).unwrap().unwrap();
        assert!(
            app.store.db.is_member("acme", user.id).unwrap(),
            "still a member"
        );
        let made = post(
            &app,
            &root,
            "/settings/users",
            &[("csrf", &root.csrf), ("name", name)],
        )
        .await;
        assert_eq!(made.status, 400, "no one else takes the name");
    }
}
