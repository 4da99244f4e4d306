//! Signing in, sessions and their cookies, private namespaces, and the settings page.

use actix_web::test::TestRequest;
use buildgrid_access::Scope;

use crate::seed::create_app;
use crate::support::{Page, TestApp, header, read, spawn_app};

/// The `name=value` of a `Set-Cookie` header for `name`, with its attributes.
fn set_cookie(page: &Page, name: &str) -> Option<String> {
    page.headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// The value of the hidden input `name` in a page.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// The page a POST that made a secret leads to, read with the cookie that carries the secret.
async fn shown_after(app: &TestApp, session: &str, answer: &Page) -> Page {
    let shown = set_cookie(answer, "bg_shown").expect("a secret to show");
    let cookies = format!("bg_session={session}; {}", shown.split(';').next().unwrap());
    read(
        app.send(
            TestRequest::get()
                .uri("/settings")
                .insert_header(("Cookie", cookies)),
        )
        .await,
    )
    .await
}

async fn sign_in_with(app: &TestApp, name: &str, password: &str) -> Page {
    let form_page = read(
        app.send(TestRequest::get().uri("/login?next=/settings"))
            .await,
    )
    .await;
    let login_cookie = cookie_value(&set_cookie(&form_page, "bg_login").unwrap());
    let token = hidden(&form_page.body, "login_token");
    read(
        app.send(
            TestRequest::post()
                .uri("/login")
                .insert_header(("Cookie", format!("bg_login={login_cookie}")))
                .set_form([
                    ("login_token", token.as_str()),
                    ("next", "/settings"),
                    ("name", name),
                    ("password", password),
                ]),
        )
        .await,
    )
    .await
}

#[actix_web::test]
async fn the_web_password_signs_in_with_a_safe_cookie_and_others_do_not() {
    let app = spawn_app();
    let (user, password) = buildgrid_access::create_user(&app.store, "ann", false).unwrap();
    let registry = buildgrid_access::regenerate_registry_password(&app.store, &user).unwrap();

    let page = sign_in_with(&app, "ann", &password).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(header(&page.headers, "location"), "/settings");
    let session = set_cookie(&page, "bg_session").unwrap();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Lax"), "{session}");
    assert!(session.contains("Path=/"), "{session}");
    assert!(!session.contains("Secure"), "plain HTTP here: {session}");
    let settings = read(
        app.send(
            TestRequest::get()
                .uri("/settings")
                .insert_header(("Cookie", format!("bg_session={}", cookie_value(&session)))),
        )
        .await,
    )
    .await;
    assert_eq!(settings.status, 200);
    assert!(settings.body.contains("Registry credentials"));

    let wrong = sign_in_with(&app, "ann", &registry).await;
    assert_eq!(
        wrong.status, 401,
        "the registry password is not the web password"
    );
    assert!(
        wrong.body.contains("Wrong user name or password"),
        "{}",
        wrong.body
    );
    assert!(!wrong.body.contains(&registry));
    assert!(set_cookie(&wrong, "bg_session").is_none());

    // A form posted without its token (from another site) is refused.
    let forged = read(
        app.send(
            TestRequest::post()
                .uri("/login")
                .set_form([("name", "ann"), ("password", password.as_str())]),
        )
        .await,
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(set_cookie(&forged, "bg_session").is_none());
}

#[actix_web::test]
async fn failed_sign_ins_are_rate_limited() {
    let app = spawn_app();
    let (_, password) = buildgrid_access::create_user(&app.store, "ann", false).unwrap();
    for _ in 0..buildgrid_access::LOGIN_ATTEMPTS {
        assert_eq!(sign_in_with(&app, "ann", "nope").await.status, 401);
    }
    let limited = sign_in_with(&app, "ann", &password).await;
    assert_eq!(limited.status, 429);
    assert!(!header(&limited.headers, "retry-after").is_empty());
    assert!(
        limited.body.contains("Too many failed sign-ins"),
        "{}",
        limited.body
    );
}

#[actix_web::test]
async fn private_namespaces_are_seen_by_members_only() {
    let app = spawn_app();
    create_app(&app.store, "secret/app");
    let ann = app.sign_in("ann", false, &["secret"]);
    let bob = app.sign_in("bob", false, &[]);
    let anonymous = app.ok("/").await;
    assert!(!anonymous.contains("secret/app"));
    let hidden_timeline = app.get("/apps/secret/app").await;
    assert_eq!(hidden_timeline.status, 404);
    assert!(hidden_timeline.body.contains("sign in to see private apps"));
    let as_bob = read(
        app.send(bob.on(TestRequest::get().uri("/apps/secret/app")))
            .await,
    )
    .await;
    assert_eq!(as_bob.status, 404);
    let as_ann = read(app.send(ann.on(TestRequest::get().uri("/"))).await).await;
    assert!(as_ann.body.contains("secret/app"), "{}", as_ann.body);
    let timeline = read(
        app.send(ann.on(TestRequest::get().uri("/apps/secret/app")))
            .await,
    )
    .await;
    assert_eq!(timeline.status, 200);
}

#[actix_web::test]
async fn settings_make_tokens_and_registry_credentials_shown_once() {
    let app = spawn_app();
    assert_eq!(
        header(&app.get("/settings").await.headers, "location"),
        "/login?next=/settings"
    );
    let ann = app.sign_in("ann", false, &["acme"]);
    let post =
        |uri: &str, form: Vec<(&str, &str)>| ann.on(TestRequest::post().uri(uri).set_form(form));

    let made = read(
        app.send(post(
            "/settings/tokens",
            vec![
                ("csrf", &ann.csrf),
                ("name", "ci"),
                ("scopes", "pull:acme"),
                ("expires", "30"),
            ],
        ))
        .await,
    )
    .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let made = shown_after(&app, &ann.cookie, &made).await;
    let secret = made.body.split("bg_").nth(1).unwrap()[..64].to_owned();
    let secret = format!("bg_{secret}");
    let principal = app
        .access
        .authenticate(Some(&format!("Bearer {secret}")), "t")
        .unwrap();
    assert_eq!(
        principal.token.unwrap().1,
        vec![Scope::parse("pull:acme").unwrap()]
    );
    let listed = read(app.send(ann.on(TestRequest::get().uri("/settings"))).await).await;
    assert!(listed.body.contains(r#"<td data-label="Name">ci</td>"#));
    assert!(!listed.body.contains(&secret), "a token is shown only once");

    let id = app.store.db.tokens(None).unwrap()[0].id;
    let revoked = app
        .send(post(
            &format!("/settings/tokens/{id}/revoke"),
            vec![("csrf", &ann.csrf)],
        ))
        .await;
    assert_eq!(revoked.status(), 303);
    assert!(
        app.access
            .authenticate(Some(&format!("Bearer {secret}")), "t")
            .is_err()
    );

    let bad = read(
        app.send(post(
            "/settings/tokens",
            vec![("csrf", &ann.csrf), ("name", "x"), ("scopes", "admin")],
        ))
        .await,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("not an admin"), "{}", bad.body);

    let credentials = read(
        app.send(post(
            "/settings/registry-password",
            vec![("csrf", &ann.csrf)],
        ))
        .await,
    )
    .await;
    assert_eq!(credentials.status, 303);
    let credentials = shown_after(&app, &ann.cookie, &credentials).await;
    let password = credentials
        .body
        .split(r#"id="shown-password">"#)
        .nth(1)
        .unwrap();
    let password = password.split('<').next().unwrap();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("ann:{password}")
        )
    );
    assert!(app.access.authenticate(Some(&basic), "t").is_ok());

    // Changes need the session's CSRF token, and admin pages an admin.
    let forged = app
        .send(post("/settings/registry-password", vec![("csrf", "x")]))
        .await;
    assert_eq!(forged.status(), 403);
    let not_admin = app
        .send(post(
            "/settings/users",
            vec![("csrf", &ann.csrf), ("name", "eve")],
        ))
        .await;
    assert_eq!(not_admin.status(), 403);
    assert!(app.store.db.user_by_name("eve").unwrap().is_none());
}

#[actix_web::test]
async fn admins_manage_users_and_namespaces() {
    let app = spawn_app();
    create_app(&app.store, "secret/app");
    let root = app.sign_in("root", true, &[]);
    let post =
        |form: Vec<(&str, &str)>, uri: &str| root.on(TestRequest::post().uri(uri).set_form(form));
    let made = read(
        app.send(post(
            vec![("csrf", &root.csrf), ("name", "eve")],
            "/settings/users",
        ))
        .await,
    )
    .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let made = shown_after(&app, &root.cookie, &made).await;
    let password = made
        .body
        .split(r#"id="shown-web-password">"#)
        .nth(1)
        .unwrap();
    let password = password.split('<').next().unwrap();
    assert!(app.access.sign_in_web("eve", password, "t").is_ok());

    for (action, user) in [("add", "eve"), ("public", "")] {
        let changed = app
            .send(post(
                vec![
                    ("csrf", &root.csrf),
                    ("namespace", "secret"),
                    ("action", action),
                    ("user", user),
                ],
                "/settings/namespaces",
            ))
            .await;
        assert_eq!(changed.status(), 303, "{action}");
    }
    let eve = app.store.db.user_by_name("eve").unwrap().unwrap();
    assert!(app.store.db.is_member("secret", eve.id).unwrap());
    assert!(app.ok("/").await.contains("secret/app"), "public now");
    let audit = app.store.db.audit(50).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "root" && e.action == "namespace made public")
    );
}
