//! Answers that clients of the Docker token flow rely on, as CNCF distribution gives them.

use actix_web::http::header;
use actix_web::test::TestRequest;
use serde_json::Value;

use crate::support::{Response, TestApp, basic, error, oci_error, spawn_app};

fn get(app: &TestApp, uri: &str, authorization: Option<&str>) -> Response {
    let mut request = TestRequest::get()
        .uri(uri)
        .peer_addr(([10, 9, 0, 1], 40000).into());
    if let Some(value) = authorization {
        request = request.insert_header((header::AUTHORIZATION, value));
    }
    app.send(request)
}

/// A bearer token from the token endpoint for `scope`, asked with `authorization`.
fn bearer(app: &TestApp, authorization: Option<&str>, scope: &str) -> String {
    let response = get(
        app,
        &format!("/auth/token?service=registry.test&scope={scope}"),
        authorization,
    );
    assert_eq!(response.status, 200, "{:?}", response.body);
    let body: Value = response.json();
    format!("Bearer {}", body["token"].as_str().unwrap())
}

#[track_caller]
fn status_and_code(response: &Response) -> (u16, String) {
    if response.status.is_success() {
        return (response.status.as_u16(), String::new());
    }
    let (answer, _) = oci_error(response);
    (answer.status, answer.code)
}

#[test]
fn a_token_without_the_repository_is_challenged_for_it_and_the_new_token_pulls() {
    let app = spawn_app();
    app.store.db.set_namespace_public("other", false).unwrap();
    app.store.db.set_namespace_public("library", false).unwrap();
    let ann = app.user_with_registry_password("ann");
    let ann_id = app.store.db.user_by_name("ann").unwrap().unwrap().id;
    app.store.db.add_member("other", ann_id).unwrap();
    app.store.db.add_member("library", ann_id).unwrap();

    let token = bearer(&app, Some(&ann.basic()), "repository:library/app:pull");
    let response = get(&app, "/v2/other/tool/manifests/latest", Some(&token));
    assert_eq!(oci_error(&response).0, error(401, "UNAUTHORIZED"));
    let challenge = response.header("www-authenticate").unwrap();
    assert!(
        challenge.ends_with(",scope=\"repository:other/tool:pull\",error=\"insufficient_scope\""),
        "{challenge}"
    );
    // What a client does next: a token for the scope the challenge names.
    let token = bearer(&app, Some(&ann.basic()), "repository:other/tool:pull");
    let response = get(&app, "/v2/other/tool/manifests/latest", Some(&token));
    assert_eq!(response.status, 200);

    // A user who may not read the repository at all is denied, with or without a token.
    let bob = app.user_with_registry_password("bob");
    let token = bearer(&app, Some(&bob.basic()), "repository:other/tool:pull");
    for authorization in [bob.basic(), token] {
        let response = get(
            &app,
            "/v2/other/tool/manifests/latest",
            Some(&authorization),
        );
        let (answer, message) = oci_error(&response);
        assert_eq!(answer, error(403, "DENIED"));
        assert!(message.contains("bob may not pull"), "{message}");
        assert!(response.header("www-authenticate").is_none());
    }
}

#[test]
fn a_repository_that_does_not_exist_is_unknown_to_whoever_could_read_it() {
    let app = spawn_app();
    let (admin, _) = buildgrid_access::create_user(&app.store, "root", true).unwrap();
    let password = buildgrid_access::regenerate_registry_password(&app.store, &admin).unwrap();
    let admin = basic("root", &password);
    let admin_token = app.token("root", "admin", None);
    let ann = app.user_with_registry_password("ann");
    let ann_id = app.store.db.user_by_name("ann").unwrap().unwrap().id;
    app.store.db.add_member("team", ann_id).unwrap();
    let uri = "/v2/no-such/repo/manifests/latest";
    let member_uri = "/v2/team/repo/manifests/latest";
    let unknown = (404, "NAME_UNKNOWN".to_owned());
    for authorization in [
        admin.clone(),
        basic("root", &admin_token),
        bearer(&app, Some(&admin), "repository:no-such/repo:pull"),
        bearer(
            &app,
            Some(&basic("root", &admin_token)),
            "repository:no-such/repo:pull",
        ),
    ] {
        let response = get(&app, uri, Some(&authorization));
        assert_eq!(status_and_code(&response), unknown, "{authorization}");
    }
    // A member of the namespace could read it too.
    for authorization in [
        ann.basic(),
        bearer(&app, Some(&ann.basic()), "repository:team/repo:pull"),
    ] {
        let response = get(&app, member_uri, Some(&authorization));
        assert_eq!(status_and_code(&response), unknown);
    }
    // Others learn nothing about whether it exists.
    let response = get(&app, uri, Some(&ann.basic()));
    assert_eq!(status_and_code(&response), (403, "DENIED".to_owned()));
    let response = get(&app, uri, None);
    assert_eq!(status_and_code(&response), (401, "UNAUTHORIZED".to_owned()));
}

#[test]
fn anonymous_clients_that_fetch_a_token_first_pull_public_images() {
    let app = spawn_app();
    // No credentials, and the empty Basic credentials clients send for "none".
    for authorization in [None, Some(basic("", ""))] {
        let response = get(
            &app,
            "/auth/token?service=registry.test",
            authorization.as_deref(),
        );
        assert_eq!(response.status, 200, "{:?}", response.body);
        let token = format!("Bearer {}", response.json()["token"].as_str().unwrap());
        // The ping with an anonymous token succeeds, as with distribution.
        let response = get(&app, "/v2/", Some(&token));
        assert_eq!(response.status, 200, "{:?}", response.body);

        let token = bearer(
            &app,
            authorization.as_deref(),
            "repository:library/app:pull",
        );
        assert_eq!(get(&app, "/v2/", Some(&token)).status, 200);
        let response = get(&app, "/v2/library/app/manifests/latest", Some(&token));
        assert_eq!(response.status, 200);
    }
    // Without any token the ping still asks for credentials.
    let response = get(&app, "/v2/", None);
    assert_eq!(oci_error(&response).0, error(401, "UNAUTHORIZED"));
    // Wrong credentials are still wrong.
    let response = get(
        &app,
        "/auth/token?service=registry.test",
        Some(&basic("", "x")),
    );
    assert_eq!(response.status, 401);
}
