//! Services' secret env values are sealed in the database: neither the database file nor its
//! write-ahead log holds them, values stored in plain text earlier are sealed on open, and
//! reading a service gives them back.

use std::collections::BTreeMap;
use std::path::Path;

use buildgrid_core::AppRef;
use buildgrid_store::{NewApp, Store};
use serde_json::{Value, json};

const SECRET: &str = "s3cret-value-8d1f0c2e";

fn spec() -> String {
    json!({
        "command": null,
        "ports": [],
        "env": [["PLAIN", "visible"]],
        "secret_env": [["API_KEY", SECRET]],
        "replicas": 1,
    })
    .to_string()
}

fn app(store: &Store) -> i64 {
    let name = AppRef::parse("acme/shop").unwrap();
    let git = "https://git.example.com/acme/shop.git";
    store
        .db
        .create_app(&NewApp {
            image_repo: name.image_repo(git).unwrap(),
            app: name,
            git_url: git.into(),
            branch: "main".into(),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            build_args: BTreeMap::new(),
            webhook_secret: "s".into(),
        })
        .unwrap()
        .id
}

/// Every file of the database (`buildgrid.db`, `-wal`, `-shm`) that holds `needle`.
fn files_holding(root: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for name in ["buildgrid.db", "buildgrid.db-wal", "buildgrid.db-shm"] {
        let Ok(bytes) = std::fs::read(root.join(name)) else {
            continue;
        };
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(name.to_owned());
        }
    }
    found
}

fn secret_env(store: &Store, app_id: i64) -> Value {
    let services = store.db.services(app_id).unwrap();
    let spec: Value = serde_json::from_str(&services[0].spec).unwrap();
    spec["secret_env"].clone()
}

#[test]
fn secret_env_is_sealed_in_the_database_and_plain_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let store = Store::open_with_key(&root, None).unwrap();
    let app_id = app(&store);
    store.db.add_service(app_id, "web", &spec()).unwrap();
    assert_eq!(secret_env(&store, app_id), json!([["API_KEY", SECRET]]));
    // Only the secret is sealed.
    assert_eq!(files_holding(&root, "visible").len(), 1);
    assert_eq!(files_holding(&root, SECRET), Vec::<String>::new());
    drop(store);
    assert_eq!(files_holding(&root, SECRET), Vec::<String>::new());
    // Another process with the same key file reads it.
    let store = Store::open_with_key(&root, None).unwrap();
    assert_eq!(secret_env(&store, app_id), json!([["API_KEY", SECRET]]));
    drop(store);
    // Without its key it cannot.
    std::fs::remove_file(root.join("secret.key")).unwrap();
    let store = Store::open_with_key(&root, None).unwrap();
    let error = store.db.services(app_id).unwrap_err().to_string();
    assert!(error.contains("secret.key, is missing"), "{error}");
}

#[test]
fn plain_secret_env_stored_earlier_is_sealed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let store = Store::open_with_key(&root, None).unwrap();
    let app_id = app(&store);
    drop(store);
    // As an earlier buildgrid wrote it.
    let conn = rusqlite::Connection::open(root.join("buildgrid.db")).unwrap();
    conn.execute(
        "INSERT INTO services (app_id, name, spec, created_at) VALUES (?1, 'web', ?2, 0)",
        rusqlite::params![app_id, spec()],
    )
    .unwrap();
    drop(conn);
    assert_eq!(files_holding(&root, SECRET), ["buildgrid.db"]);

    let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let store = Store::open_with_key(&root, Some(key.into())).unwrap();
    assert_eq!(files_holding(&root, SECRET), Vec::<String>::new());
    assert_eq!(secret_env(&store, app_id), json!([["API_KEY", SECRET]]));
    // Sealed with the key of the environment: no key file was made.
    assert!(!root.join("secret.key").exists());
    drop(store);
    let store = Store::open_with_key(&root, Some(key.into())).unwrap();
    assert_eq!(secret_env(&store, app_id), json!([["API_KEY", SECRET]]));
}
