//! API tokens: secrets, their hashes, and who may build.

use actix_web::http::header;
use actix_web::test::TestRequest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use buildgrid_builder::auth::{
    create_admin_token, may_build, new_secret, request_token, token_hash,
};

use crate::support::test_store;

#[test]
fn secrets_are_bg_and_64_hex_characters() {
    let secret = new_secret();
    let hex = secret.strip_prefix("bg_").expect(&secret);
    assert_eq!(hex.len(), 64, "{secret}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{secret}"
    );
    assert_ne!(new_secret(), secret);
}

#[test]
fn token_hash_is_the_hex_sha256_of_the_secret() {
    assert_eq!(
        token_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let secret = new_secret();
    assert_eq!(token_hash(&secret), token_hash(&secret));
    assert_ne!(token_hash(&secret), token_hash(&new_secret()));
}

#[track_caller]
fn check_may_build(store: &buildgrid_store::Store, token: Option<&str>, expected: bool) {
    assert_eq!(
        may_build(store, token).unwrap(),
        expected,
        "token {token:?}"
    );
}

#[test]
fn only_live_tokens_with_a_build_scope_may_build() {
    let test = test_store();
    let store = &test.store;
    assert!(!store.db.has_tokens().unwrap());
    let admin = create_admin_token(store, "ci").unwrap();
    assert!(store.db.has_tokens().unwrap());
    // Only the hash is stored: the secret is in no file of the data directory (WAL included).
    for entry in std::fs::read_dir(store.root()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(admin.len()).any(|w| w == admin.as_bytes());
            assert!(
                !found,
                "the secret is stored in the clear in {}",
                path.display()
            );
        }
    }

    let builder = new_secret();
    store
        .db
        .create_token("deploy", &token_hash(&builder), "pull,build")
        .unwrap();
    let reader = new_secret();
    store
        .db
        .create_token("viewer", &token_hash(&reader), "pull")
        .unwrap();

    check_may_build(store, Some(&admin), true);
    check_may_build(store, Some(&builder), true);
    check_may_build(store, Some(&reader), false);
    check_may_build(store, Some("bg_wrong"), false);
    check_may_build(store, Some(""), false);
    check_may_build(store, Some(&token_hash(&admin)), false);
    check_may_build(store, None, false);
}

#[track_caller]
fn check_request_token(authorization: Option<&str>, expected: Option<&str>) {
    let mut request = TestRequest::default();
    if let Some(value) = authorization {
        request = request.insert_header((header::AUTHORIZATION, value));
    }
    let request = request.to_http_request();
    assert_eq!(
        request_token(&request).as_deref(),
        expected,
        "Authorization: {authorization:?}"
    );
}

#[test]
fn request_token_reads_bearer_and_basic_passwords() {
    check_request_token(None, None);
    check_request_token(Some("Bearer bg_abc"), Some("bg_abc"));
    check_request_token(Some("Bearer  bg_abc "), Some("bg_abc"));
    // What git and docker send: the token is the password, the user name is anything.
    check_request_token(Some(&basic("git:bg_abc")), Some("bg_abc"));
    check_request_token(Some(&basic(":bg_abc")), Some("bg_abc"));
    check_request_token(Some(&basic("user:pass:word")), Some("pass:word"));
    check_request_token(Some(&basic("no-colon")), None);
    check_request_token(Some("Basic !!!"), None);
    check_request_token(Some("Token bg_abc"), None);
}

fn basic(user_and_password: &str) -> String {
    format!("Basic {}", STANDARD.encode(user_and_password))
}
