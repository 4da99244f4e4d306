//! Who may pull what: every kind of caller against public and private repositories, the token
//! endpoint, and that refusals change nothing.

use actix_web::http::header;
use actix_web::test::TestRequest;
use serde_json::Value;

use crate::support::{
    ErrorAnswer, TestApp, basic, error, oci_archive, oci_error, oci_with_referrer, spawn_app,
};

/// The app with `open/sbom` (public) and `secret/sbom` (private): the same OCI image with an
/// SBOM referrer. `ann` is a member of `secret`, `bob` of nothing.
struct Matrix {
    app: TestApp,
    callers: Vec<(&'static str, Option<String>)>,
    image: String,
    layer: String,
}

fn matrix() -> Matrix {
    let app = spawn_app();
    let (sbom, blobs) = oci_with_referrer();
    let archive = oci_archive(&sbom.index, &blobs);
    app.import("open.tar", &archive, "open/sbom", "latest");
    app.import("secret.tar", &archive, "secret/sbom", "latest");
    app.import("other.tar", &archive, "secret/other", "latest");
    app.store.db.set_namespace_public("open", true).unwrap();
    let ann = app.user_with_registry_password("ann");
    let bob = app.user_with_registry_password("bob");
    let ann_id = app.store.db.user_by_name("ann").unwrap().unwrap().id;
    app.store.db.add_member("secret", ann_id).unwrap();
    let read_only = app.token("ann", "pull:secret", None);
    let expired = app.token("ann", "pull", Some(1));
    let revoked = app.token("ann", "pull", None);
    let revoked_id = app.store.db.tokens(None).unwrap()[0].id;
    app.store.db.revoke_token(revoked_id, None).unwrap();
    let image: Value = serde_json::from_slice(&sbom.image.bytes).unwrap();
    Matrix {
        callers: vec![
            ("anonymous", None),
            ("member", Some(ann.basic())),
            ("non-member", Some(bob.basic())),
            ("read-only token", Some(format!("Bearer {read_only}"))),
            ("expired token", Some(basic("ann", &expired))),
            ("revoked token", Some(basic("ann", &revoked))),
        ],
        image: sbom.image.digest.to_string(),
        layer: image["layers"][0]["digest"].as_str().unwrap().to_owned(),
        app,
    }
}

impl Matrix {
    /// A GET from a client address of the caller's own, so that one caller's refused
    /// credentials never rate-limit another's.
    fn get(&self, uri: &str, authorization: Option<&str>) -> crate::support::Response {
        let index = self
            .callers
            .iter()
            .position(|(_, a)| a.as_deref() == authorization)
            .unwrap_or(99);
        let client = std::net::SocketAddr::from(([10, 0, 0, index as u8 + 1], 40000));
        let mut request = TestRequest::get().uri(uri).peer_addr(client);
        if let Some(value) = authorization {
            request = request.insert_header((header::AUTHORIZATION, value));
        }
        self.app.send(request)
    }
}

/// `200` or the error an answer carries.
fn outcome(response: &crate::support::Response) -> ErrorAnswer {
    if response.status.is_success() {
        return error(response.status.as_u16(), "");
    }
    oci_error(response).0
}

#[test]
fn every_caller_gets_its_exact_answer_on_every_endpoint() {
    let m = matrix();
    let ok = error(200, "");
    let unauthorized = error(401, "UNAUTHORIZED");
    let denied = error(403, "DENIED");
    for namespace in ["open", "secret"] {
        let repo = format!("{namespace}/sbom");
        let endpoints = [
            ("manifest", format!("/v2/{repo}/manifests/latest")),
            ("blob", format!("/v2/{repo}/blobs/{}", m.layer)),
            ("tags", format!("/v2/{repo}/tags/list")),
            ("referrers", format!("/v2/{repo}/referrers/{}", m.image)),
        ];
        for (caller, authorization) in &m.callers {
            let expected = match (*caller, namespace) {
                ("expired token" | "revoked token", _) => &unauthorized,
                (_, "open") => &ok,
                ("anonymous", _) => &unauthorized,
                ("non-member", _) => &denied,
                _ => &ok,
            };
            for (endpoint, uri) in &endpoints {
                let response = m.get(uri, authorization.as_deref());
                assert_eq!(
                    &outcome(&response),
                    expected,
                    "{caller} on {endpoint} of {repo}: {}",
                    String::from_utf8_lossy(&response.body)
                );
                if expected.code == "UNAUTHORIZED" {
                    let challenge = response.header("www-authenticate").unwrap_or_default();
                    assert!(
                        challenge.starts_with(
                            "Bearer realm=\"http://registry.test/auth/token\",service=\"registry.test\""
                        ),
                        "{caller} on {endpoint}: {challenge}"
                    );
                    if *caller == "anonymous" {
                        assert!(
                            challenge.ends_with(&format!(",scope=\"repository:{repo}:pull\"")),
                            "{challenge}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_catalog_lists_only_what_the_caller_may_pull() {
    let m = matrix();
    for (caller, authorization) in &m.callers {
        let response = m.get("/v2/_catalog", authorization.as_deref());
        if caller.ends_with("d token") {
            assert_eq!(outcome(&response), error(401, "UNAUTHORIZED"), "{caller}");
            continue;
        }
        assert_eq!(response.status.as_u16(), 200, "{caller}");
        let listed: Vec<String> =
            serde_json::from_value(response.json()["repositories"].clone()).unwrap();
        let sees_secret = matches!(*caller, "member" | "read-only token");
        assert_eq!(
            listed.contains(&"secret/sbom".to_owned()),
            sees_secret,
            "{caller}: {listed:?}"
        );
        assert!(listed.contains(&"open/sbom".to_owned()), "{caller}");
    }
}

#[test]
fn the_base_endpoint_asks_anonymous_callers_to_sign_in() {
    let m = matrix();
    let response = m.get("/v2/", None);
    assert_eq!(outcome(&response), error(401, "UNAUTHORIZED"));
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"http://registry.test/auth/token\",service=\"registry.test\"")
    );
    for (caller, authorization) in &m.callers[1..4] {
        assert_eq!(
            m.get("/v2/", authorization.as_deref()).status,
            200,
            "{caller}"
        );
    }
}

fn token_for(m: &Matrix, authorization: Option<&str>, scope: &str) -> (u16, Value) {
    let response = m.get(
        &format!("/auth/token?service=registry.test&scope={scope}"),
        authorization,
    );
    let status = response.status.as_u16();
    (status, response.json())
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn the_token_endpoint_grants_what_is_asked_and_allowed_pull_at_most() {
    let m = matrix();
    let member = m.callers[1].1.clone();
    let (status, body) = token_for(&m, member.as_deref(), "repository:secret/sbom:pull,push");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["access_token"], body["token"]);
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        claims(token)["access"],
        serde_json::json!([{"type": "repository", "name": "secret/sbom", "actions": ["pull"]}])
    );
    let bearer = format!("Bearer {token}");
    assert_eq!(
        m.get("/v2/secret/sbom/manifests/latest", Some(&bearer))
            .status,
        200
    );
    // The grant names one repository: the same user's other private repository needs its own,
    // which the challenge tells the client to ask for.
    let narrow = m.get("/v2/secret/other/manifests/latest", Some(&bearer));
    assert_eq!(outcome(&narrow), error(401, "UNAUTHORIZED"));
    assert_eq!(
        narrow.header("www-authenticate"),
        Some(
            "Bearer realm=\"http://registry.test/auth/token\",service=\"registry.test\",scope=\"repository:secret/other:pull\",error=\"insufficient_scope\""
        )
    );
    assert!(!String::from_utf8_lossy(&narrow.body).contains("may not pull"));
    assert_eq!(
        m.get("/v2/secret/other/manifests/latest", member.as_deref())
            .status,
        200
    );

    // Anonymous callers get a token too, with no actions on what they may not pull.
    let (status, body) = token_for(&m, None, "repository:secret/sbom:pull");
    assert_eq!(status, 200);
    let token = body["token"].as_str().unwrap();
    assert_eq!(claims(token)["access"][0]["actions"], serde_json::json!([]));
    let response = m.get(
        "/v2/secret/sbom/manifests/latest",
        Some(&format!("Bearer {token}")),
    );
    assert_eq!(outcome(&response), error(401, "UNAUTHORIZED"));
    let (_, body) = token_for(&m, None, "repository:open/sbom:pull");
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        claims(token)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );

    // A non-member asking for a private repository gets an empty grant, not an error.
    let (status, body) = token_for(&m, m.callers[2].1.as_deref(), "repository:secret/sbom:pull");
    assert_eq!(status, 200);
    assert_eq!(
        claims(body["token"].as_str().unwrap())["access"][0]["actions"],
        serde_json::json!([])
    );
}

#[test]
fn wrong_credentials_are_refused_then_rate_limited() {
    let m = matrix();
    let wrong = basic("ann", "not-the-password");
    for attempt in 0..buildgrid_access::LOGIN_ATTEMPTS {
        let (status, body) = token_for(&m, Some(&wrong), "repository:secret/sbom:pull");
        assert_eq!(status, 401, "attempt {attempt}: {body}");
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
        assert!(!body.to_string().contains("not-the-password"));
    }
    // The guessing client is refused even the right password, and told how long to wait.
    let member = m.callers[1].1.as_deref().unwrap();
    let response = m.app.send(
        TestRequest::get()
            .uri("/v2/secret/sbom/tags/list")
            .peer_addr(([10, 0, 0, 100], 40000).into())
            .insert_header((header::AUTHORIZATION, member)),
    );
    assert_eq!(outcome(&response), error(429, "TOOMANYREQUESTS"));
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The name's owner, from a client that has not failed, still pulls.
    let response = m.get("/v2/secret/sbom/tags/list", Some(member));
    assert_eq!(outcome(&response), error(200, ""));
}

#[test]
fn refused_requests_change_nothing_and_pulls_of_private_images_are_audited() {
    let m = matrix();
    m.app.registry.flush_downloads();
    let rows_before = m.app.store.db.row_counts().unwrap();
    let blobs_before = blob_files(&m);
    let uri = "/v2/secret/sbom/manifests/latest";
    for (_, authorization) in &m.callers {
        for method in ["PUT", "DELETE", "POST", "PATCH"] {
            let mut request = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(uri)
                .set_payload("{}");
            if let Some(value) = authorization {
                request = request.insert_header((header::AUTHORIZATION, value.as_str()));
            }
            assert_eq!(outcome(&m.app.send(request)), error(405, "UNSUPPORTED"));
        }
    }
    for (caller, authorization) in &m.callers {
        if !matches!(*caller, "member" | "read-only token") {
            assert!(!m.get(uri, authorization.as_deref()).status.is_success());
        }
    }
    m.app.registry.flush_downloads();
    assert_eq!(m.app.store.db.row_counts().unwrap(), rows_before);
    assert_eq!(blob_files(&m), blobs_before);

    assert_eq!(m.get(uri, m.callers[1].1.as_deref()).status, 200);
    assert_eq!(m.get("/v2/open/sbom/manifests/latest", None).status, 200);
    m.app.registry.flush_downloads();
    let audit = m.app.store.db.audit(100).unwrap();
    let pulls: Vec<_> = audit.iter().filter(|e| e.action == "pull").collect();
    assert_eq!(pulls.len(), 1, "{audit:?}");
    assert_eq!(pulls[0].actor, "ann");
    assert!(
        pulls[0].target.starts_with("secret/sbom:latest (sha256:"),
        "{:?}",
        pulls[0]
    );
}

fn blob_files(m: &Matrix) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![m.app.data_dir().join("blobs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.display().to_string());
            }
        }
    }
    files.sort();
    files
}
