//! Leases of running deploys and builds: a live lease refuses a second deploy of the app, its
//! process renews it, and once it lapses the work is interrupted and a new deploy starts.

use std::collections::BTreeMap;
use std::time::Duration;

use buildgrid_core::AppRef;
use buildgrid_store::{
    App, BuildState, Db, LEASE_RENEW_EVERY, LEASE_TERM, Lease, NewApp, NewBuild, Queued, StoreError,
};

use crate::support::test_store;

fn lease(owner: &str, term_ms: u64) -> Lease {
    Lease {
        owner: owner.into(),
        term: Duration::from_millis(term_ms),
    }
}

fn app(db: &Db, name: &str) -> App {
    let name = AppRef::parse(name).unwrap();
    let git = format!("https://git.example.com/{}.git", name.app());
    db.create_app(&NewApp {
        image_repo: name.image_repo(&git).unwrap(),
        app: name.clone(),
        git_url: git,
        branch: "main".into(),
        dockerfile: "Dockerfile".into(),
        context: ".".into(),
        build_args: BTreeMap::new(),
        webhook_secret: "s".into(),
    })
    .unwrap()
}

/// Queues a build of `commit` (two hex digits, repeated) and returns its id.
fn queue(db: &Db, app: &App, commit: &str) -> i64 {
    match db
        .enqueue_build(&NewBuild {
            app_id: app.id,
            git_ref: format!("branch-{commit}"),
            commit_id: Some(commit.repeat(20)),
            trigger: "test".into(),
            force: false,
        })
        .unwrap()
    {
        Queued::New(id) => id,
        other => panic!("{other:?}"),
    }
}

#[track_caller]
fn refused(result: Result<buildgrid_store::Deploy, StoreError>, running: i64) {
    match result {
        Err(StoreError::Conflict(message)) => assert!(
            message.contains(&format!("deploy {running} of this app is running")),
            "{message}"
        ),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_live_lease_refuses_a_second_deploy_and_a_lapsed_one_is_interrupted_by_the_next() {
    let test = test_store();
    let db = &test.store.db;
    let shop = app(db, "acme/shop");
    let build = queue(db, &shop, "aa");
    let first = lease("first", 600);
    let second = lease("second", 60_000);
    let one = db.start_deploy(shop.id, build, "cli", &first).unwrap();
    refused(db.start_deploy(shop.id, build, "cli", &second), one.id);

    // Renewed before it lapses, the lease outlives its first term.
    std::thread::sleep(Duration::from_millis(400));
    assert!(db.renew_deploy_lease(one.id, &first).unwrap());
    std::thread::sleep(Duration::from_millis(400));
    refused(db.start_deploy(shop.id, build, "cli", &second), one.id);
    assert!(db.interrupt_lapsed_deploys().unwrap().is_empty());
    assert_eq!(db.deploy(one.id).unwrap().unwrap().state, "running");
    // Only its owner renews it.
    assert!(!db.renew_deploy_lease(one.id, &second).unwrap());

    // Not renewed, it lapses: the next deploy marks it interrupted and starts.
    std::thread::sleep(Duration::from_millis(700));
    let two = db.start_deploy(shop.id, build, "cli", &second).unwrap();
    let interrupted = db.deploy(one.id).unwrap().unwrap();
    assert_eq!(interrupted.state, "interrupted");
    assert!(interrupted.finished_at.is_some());
    assert_eq!(
        interrupted.reason.as_deref(),
        Some("interrupted: the process running it stopped (its lease lapsed)")
    );
    // Its process, were it still there, learns it lost the deploy.
    assert!(!db.renew_deploy_lease(one.id, &first).unwrap());
    assert!(db.renew_deploy_lease(two.id, &second).unwrap());
    refused(db.start_deploy(shop.id, build, "cli", &first), two.id);
    db.finish_deploy(two.id, "succeeded", None).unwrap();
    assert!(!db.renew_deploy_lease(two.id, &second).unwrap());
    db.start_deploy(shop.id, build, "cli", &first).unwrap();
}

#[test]
fn the_reaper_interrupts_only_lapsed_deploys_and_a_stopping_process_its_own() {
    let test = test_store();
    let db = &test.store.db;
    let (shop, blog, wiki) = (
        app(db, "acme/shop"),
        app(db, "acme/blog"),
        app(db, "acme/wiki"),
    );
    let lapsed = db
        .start_deploy(shop.id, queue(db, &shop, "aa"), "cli", &lease("gone", 0))
        .unwrap();
    let live = db
        .start_deploy(
            blog.id,
            queue(db, &blog, "bb"),
            "cli",
            &lease("here", 60_000),
        )
        .unwrap();
    let other = db
        .start_deploy(
            wiki.id,
            queue(db, &wiki, "cc"),
            "auto",
            &lease("there", 60_000),
        )
        .unwrap();

    let reaped: Vec<i64> = db
        .interrupt_lapsed_deploys()
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(reaped, [lapsed.id]);
    assert_eq!(db.deploy(lapsed.id).unwrap().unwrap().state, "interrupted");
    assert!(db.interrupt_lapsed_deploys().unwrap().is_empty(), "once");

    let stopped = db
        .interrupt_deploys_of("here", "interrupted: the process running it stopped")
        .unwrap();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].id, live.id);
    assert_eq!(stopped[0].state, "interrupted");
    assert_eq!(
        stopped[0].reason.as_deref(),
        Some("interrupted: the process running it stopped")
    );
    assert_eq!(db.deploy(other.id).unwrap().unwrap().state, "running");
}

#[test]
fn running_builds_hold_leases_their_process_renews() {
    let test = test_store();
    let db = &test.store.db;
    let shop = app(db, "acme/shop");
    let (one, two, three) = (
        queue(db, &shop, "aa"),
        queue(db, &shop, "bb"),
        queue(db, &shop, "cc"),
    );
    let gone = lease("gone", 0);
    let here = lease("here", 60_000);
    let short = lease("short", 600);
    assert_eq!(db.claim_next_build_leased(&gone).unwrap().unwrap().id, one);
    assert_eq!(db.claim_next_build_leased(&here).unwrap().unwrap().id, two);
    assert_eq!(
        db.claim_next_build_leased(&short).unwrap().unwrap().id,
        three
    );

    let reason = "interrupted: buildgrid stopped while the build ran";
    assert_eq!(db.interrupt_lapsed_builds(reason).unwrap(), [one]);
    let failed = db.build(one).unwrap().unwrap();
    assert_eq!(failed.state, BuildState::Failed);
    assert_eq!(failed.reason.as_deref(), Some(reason));
    assert!(!db.renew_build_lease(one, &gone).unwrap(), "it ended");
    assert!(!db.renew_build_lease(two, &short).unwrap(), "not its owner");

    // Renewed, the short lease outlives its first term; left alone, it lapses.
    std::thread::sleep(Duration::from_millis(400));
    assert!(db.renew_build_lease(three, &short).unwrap());
    std::thread::sleep(Duration::from_millis(400));
    assert!(db.interrupt_lapsed_builds(reason).unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(db.interrupt_lapsed_builds(reason).unwrap(), [three]);

    // A stopping process ends its own build, and only its own.
    assert!(db.interrupt_builds_of("gone", reason).unwrap().is_empty());
    assert_eq!(db.interrupt_builds_of("here", reason).unwrap(), [two]);
    assert_eq!(db.build(two).unwrap().unwrap().state, BuildState::Failed);
}

#[test]
fn this_process_has_one_random_owner_and_renews_well_within_the_term() {
    let lease = Lease::this_process();
    assert_eq!(lease, Lease::this_process());
    assert_eq!(lease.owner.len(), 32);
    assert!(lease.owner.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(lease.term, LEASE_TERM);
    assert!(
        LEASE_RENEW_EVERY * 2 < LEASE_TERM,
        "a renewal may be late once without the lease lapsing"
    );
}
