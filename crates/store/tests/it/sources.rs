//! An app's sources: one build definition per repository, and builds queued per source.

use std::collections::BTreeMap;

use buildgrid_core::AppRef;
use buildgrid_store::{NewApp, NewBuild, NewSource, Queued, StoreError};

use crate::support::test_store;

const APP_GIT: &str = "https://git.example.com/acme/shop.git";
const API_GIT: &str = "https://git.example.com/acme/api.git";

#[test]
fn one_build_definition_per_repository_and_builds_queued_per_source() {
    let test = test_store();
    let db = &test.store.db;
    let name = AppRef::parse("acme/shop").unwrap();
    let app = db
        .create_app(&NewApp {
            image_repo: name.image_repo(APP_GIT).unwrap(),
            app: name.clone(),
            git_url: APP_GIT.into(),
            branch: "main".into(),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            build_args: BTreeMap::new(),
            webhook_secret: "s".into(),
        })
        .unwrap();
    let source = |git: &str, dockerfile: &str| NewSource {
        image_repo: name.image_repo(git).unwrap(),
        git_url: git.into(),
        branch: "main".into(),
        dockerfile: dockerfile.into(),
        context: ".".into(),
    };
    // The app's own repository built its way is no source of its own.
    assert_eq!(
        db.add_source(&app, &source(APP_GIT, "Dockerfile")).unwrap(),
        None
    );
    let api = db
        .add_source(&app, &source(API_GIT, "Dockerfile"))
        .unwrap()
        .unwrap();
    assert_eq!(
        api.image_repo.as_str(),
        "acme/shop.git-example-com-acme-api"
    );
    assert_eq!(
        db.add_source(&app, &source(API_GIT, "Dockerfile")).unwrap(),
        Some(api.clone()),
        "a second service of the repository shares its source"
    );
    for (git, dockerfile) in [(API_GIT, "Other.Dockerfile"), (APP_GIT, "Other.Dockerfile")] {
        match db.add_source(&app, &source(git, dockerfile)) {
            Err(StoreError::Conflict(message)) => {
                assert!(message.contains("two build definitions"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    // The same commit id is queued once per source, and a newer build of a branch supersedes
    // only the builds of the same source.
    let build = |commit: Option<&str>| NewBuild {
        app_id: app.id,
        git_ref: "main".into(),
        commit_id: commit.map(str::to_owned),
        trigger: "test".into(),
        force: false,
    };
    let commit = "ab".repeat(20);
    let first = db
        .enqueue_source_build(&build(Some(&commit)), None)
        .unwrap();
    let of_api = db
        .enqueue_source_build(&build(Some(&commit)), Some(api.id))
        .unwrap();
    assert!(matches!(of_api, Queued::New(_)));
    assert_eq!(
        db.enqueue_source_build(&build(Some(&commit)), Some(api.id))
            .unwrap(),
        Queued::Existing(of_api.id())
    );
    let claimed = db.claim_next_build().unwrap().unwrap();
    assert_eq!((claimed.id, claimed.source_id), (first.id(), None));
    let claimed = db.claim_next_build().unwrap().unwrap();
    assert_eq!((claimed.id, claimed.source_id), (of_api.id(), Some(api.id)));
}
