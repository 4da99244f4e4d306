//! The build queue in the store, as the builder uses it: dedupe, supersede, cancel, recover, logs.

use buildgrid_store::{BuildState, Db, NewBuild, Queued};

use crate::support::test_store;

fn enqueue(db: &Db, app_id: i64, git_ref: &str, commit: Option<&str>, force: bool) -> Queued {
    db.enqueue_build(&NewBuild {
        app_id,
        git_ref: git_ref.into(),
        commit_id: commit.map(str::to_owned),
        trigger: "manual".into(),
        force,
    })
    .unwrap()
}

/// The state and reason of each build, by id.
#[track_caller]
fn check_states(db: &Db, expected: &[(i64, BuildState, Option<&str>)]) {
    let actual: Vec<_> = expected
        .iter()
        .map(|(id, _, _)| {
            let build = db.build(*id).unwrap().unwrap();
            (build.id, build.state, build.reason)
        })
        .collect();
    let expected: Vec<_> = expected
        .iter()
        .map(|(id, state, reason)| (*id, *state, reason.map(str::to_owned)))
        .collect();
    assert_eq!(actual, expected);
}

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const C3: &str = "3333333333333333333333333333333333333333";
const C4: &str = "4444444444444444444444444444444444444444";

#[test]
fn enqueue_dedupes_a_commit_unless_forced() {
    let test = test_store();
    let db = &test.store.db;
    let web = test.create_app("acme/web", "main").id;
    let api = test.create_app("acme/api", "main").id;
    assert_eq!(enqueue(db, web, "main", Some(C1), false), Queued::New(1));
    assert_eq!(
        enqueue(db, web, "main", Some(C1), false),
        Queued::Existing(1)
    );
    // Whatever the ref that names it.
    assert_eq!(
        enqueue(db, web, "v1.0", Some(C1), false),
        Queued::Existing(1)
    );
    // Another app with the same commit is another build.
    assert_eq!(enqueue(db, api, "main", Some(C1), false), Queued::New(2));
    assert_eq!(enqueue(db, web, "main", Some(C1), true), Queued::New(3));
    // The newest build of the commit is the one named.
    assert_eq!(
        enqueue(db, web, "main", Some(C1), false),
        Queued::Existing(3)
    );
    // Builds whose commit the builder resolves later are never deduped.
    assert_eq!(enqueue(db, web, "main", None, false), Queued::New(4));
    assert_eq!(enqueue(db, web, "main", None, false), Queued::New(5));
    let build = db.build(3).unwrap().unwrap();
    assert!(build.force);
    assert_eq!(build.state, BuildState::Queued);
    assert_eq!(build.trigger, "manual");
    assert!(build.started_at.is_none() && build.finished_at.is_none());

    // A commit whose builds failed, were cancelled or skipped is queued again.
    assert_eq!(enqueue(db, web, "main", Some(C2), false), Queued::New(6));
    db.finish_build(6, BuildState::Failed, Some("boom"), None)
        .unwrap();
    assert_eq!(enqueue(db, web, "main", Some(C2), false), Queued::New(7));
    assert_eq!(db.request_cancel(7).unwrap(), Some(BuildState::Cancelled));
    assert_eq!(enqueue(db, web, "main", Some(C2), false), Queued::New(8));
    // A succeeded build counts.
    db.finish_build(8, BuildState::Succeeded, None, None)
        .unwrap();
    assert_eq!(
        enqueue(db, web, "main", Some(C2), false),
        Queued::Existing(8)
    );
}

#[test]
fn claim_skips_superseded_builds_and_takes_the_newest() {
    let test = test_store();
    let db = &test.store.db;
    let web = test.create_app("acme/web", "main").id;
    let api = test.create_app("acme/api", "main").id;
    assert_eq!(db.claim_next_build().unwrap().map(|b| b.id), None);
    enqueue(db, web, "main", Some(C1), false); // 1
    enqueue(db, api, "main", Some(C1), false); // 2
    enqueue(db, web, "main", Some(C2), false); // 3
    enqueue(db, web, "feature", Some(C3), false); // 4
    enqueue(db, web, "main", Some(C4), false); // 5

    let claimed = db.claim_next_build().unwrap().unwrap();
    // Build 1 of web/main is superseded by 5, the newest of web/main; api's build 2 is next.
    assert_eq!(claimed.id, 2);
    assert_eq!(claimed.state, BuildState::Fetching);
    check_states(
        db,
        &[
            (1, BuildState::Skipped, Some("superseded by build 5")),
            (2, BuildState::Fetching, None),
            (3, BuildState::Queued, None),
            (4, BuildState::Queued, None),
            (5, BuildState::Queued, None),
        ],
    );
    let stored = db.build(2).unwrap().unwrap();
    assert!(stored.started_at.is_some());
    assert!(db.build(1).unwrap().unwrap().finished_at.is_some());

    assert_eq!(db.claim_next_build().unwrap().unwrap().id, 4);
    assert_eq!(db.claim_next_build().unwrap().unwrap().id, 5);
    check_states(
        db,
        &[
            (3, BuildState::Skipped, Some("superseded by build 5")),
            (4, BuildState::Fetching, None),
            (5, BuildState::Fetching, None),
        ],
    );
    assert!(db.claim_next_build().unwrap().is_none());
    // The skipped commit may be queued again.
    assert_eq!(enqueue(db, web, "main", Some(C2), false), Queued::New(6));
}

#[test]
fn forced_builds_are_not_superseded() {
    let test = test_store();
    let db = &test.store.db;
    let web = test.create_app("acme/web", "main").id;
    enqueue(db, web, "main", Some(C1), true); // 1
    enqueue(db, web, "main", Some(C2), false); // 2
    assert_eq!(db.claim_next_build().unwrap().unwrap().id, 1);
    assert_eq!(db.claim_next_build().unwrap().unwrap().id, 2);
    check_states(
        db,
        &[
            (1, BuildState::Fetching, None),
            (2, BuildState::Fetching, None),
        ],
    );
}

#[test]
fn cancel_stops_queued_builds_and_flags_running_ones() {
    let test = test_store();
    let db = &test.store.db;
    let web = test.create_app("acme/web", "main").id;
    enqueue(db, web, "main", Some(C1), false); // 1
    enqueue(db, web, "feature", Some(C2), false); // 2
    assert_eq!(db.claim_next_build().unwrap().unwrap().id, 1);

    assert_eq!(db.request_cancel(2).unwrap(), Some(BuildState::Cancelled));
    check_states(
        db,
        &[(
            2,
            BuildState::Cancelled,
            Some("cancelled before it started"),
        )],
    );
    assert!(db.build(2).unwrap().unwrap().finished_at.is_some());
    assert!(!db.cancel_requested(2).unwrap());

    assert!(!db.cancel_requested(1).unwrap());
    assert_eq!(db.request_cancel(1).unwrap(), Some(BuildState::Fetching));
    assert!(db.cancel_requested(1).unwrap());
    let running = db.build(1).unwrap().unwrap();
    assert_eq!(running.state, BuildState::Fetching);
    assert!(running.cancel_requested);
    db.set_build_state(1, BuildState::Building).unwrap();
    assert_eq!(db.request_cancel(1).unwrap(), Some(BuildState::Building));

    // Finished builds stay as they are.
    db.finish_build(1, BuildState::Cancelled, Some("cancelled"), None)
        .unwrap();
    assert_eq!(db.request_cancel(1).unwrap(), Some(BuildState::Cancelled));
    assert_eq!(db.request_cancel(2).unwrap(), Some(BuildState::Cancelled));
    check_states(
        db,
        &[
            (1, BuildState::Cancelled, Some("cancelled")),
            (
                2,
                BuildState::Cancelled,
                Some("cancelled before it started"),
            ),
        ],
    );
    assert_eq!(db.request_cancel(99).unwrap(), None);
    assert!(!db.cancel_requested(99).unwrap());
}

#[test]
fn interrupted_builds_fail_with_the_reason_in_their_log() {
    let test = test_store();
    let db = &test.store.db;
    let web = test.create_app("acme/web", "main").id;
    enqueue(db, web, "main", Some(C1), false); // 1: fetching
    enqueue(db, web, "a", Some(C2), false); // 2: building, with a log
    enqueue(db, web, "b", Some(C3), false); // 3: storing
    enqueue(db, web, "c", None, false); // 4: succeeded
    enqueue(db, web, "d", None, false); // 5: still queued
    // Claimed by a process whose leases lapse at once (as if it stopped at once).
    let gone = buildgrid_store::Lease {
        owner: "gone".into(),
        term: std::time::Duration::ZERO,
    };
    for _ in 0..4 {
        db.claim_next_build_leased(&gone).unwrap().unwrap();
    }
    db.set_build_state(2, BuildState::Building).unwrap();
    db.append_log(2, 1, Some("build"), "Step 1/2 : FROM alpine")
        .unwrap();
    db.append_log(2, 2, Some("build"), "Step 2/2 : RUN make")
        .unwrap();
    db.set_build_state(3, BuildState::Storing).unwrap();
    db.finish_build(4, BuildState::Succeeded, None, None)
        .unwrap();

    let reason = "interrupted: buildgrid stopped while the build ran";
    let mut interrupted = db.interrupt_lapsed_builds(reason).unwrap();
    interrupted.sort();
    assert_eq!(interrupted, [1, 2, 3]);
    check_states(
        db,
        &[
            (1, BuildState::Failed, Some(reason)),
            (2, BuildState::Failed, Some(reason)),
            (3, BuildState::Failed, Some(reason)),
            (4, BuildState::Succeeded, None),
            (5, BuildState::Queued, None),
        ],
    );
    assert!(db.build(1).unwrap().unwrap().finished_at.is_some());
    let lines = |id| -> Vec<(i64, Option<String>, String)> {
        db.log_lines(id, 0, 100)
            .unwrap()
            .into_iter()
            .map(|l| (l.seq, l.step, l.line))
            .collect()
    };
    let failed = format!("build failed: {reason}");
    assert_eq!(lines(1), [(1, None, failed.clone())]);
    assert_eq!(
        lines(2),
        [
            (1, Some("build".into()), "Step 1/2 : FROM alpine".into()),
            (2, Some("build".into()), "Step 2/2 : RUN make".into()),
            (3, None, failed.clone()),
        ]
    );
    assert!(lines(4).is_empty());
    // Nothing is left running.
    assert!(db.interrupt_lapsed_builds(reason).unwrap().is_empty());
}

#[track_caller]
fn check_log(db: &Db, build: i64, after: i64, limit: usize, expected: &[&str]) {
    let lines = db.log_lines(build, after, limit).unwrap();
    let actual: Vec<String> = lines
        .iter()
        .map(|l| format!("{} {} {}", l.seq, l.step.as_deref().unwrap_or("-"), l.line))
        .collect();
    assert_eq!(
        actual, expected,
        "build {build} after {after} limit {limit}"
    );
}

#[test]
fn log_lines_after_a_sequence_number() {
    let test = test_store();
    let db = &test.store.db;
    let web = test.create_app("acme/web", "main").id;
    enqueue(db, web, "main", Some(C1), false);
    enqueue(db, web, "other", Some(C2), false);
    db.append_log(1, 1, Some("fetch"), "fetching").unwrap();
    db.append_log(1, 2, Some("build"), "Step 1/1 : FROM alpine")
        .unwrap();
    db.append_log(1, 3, None, "").unwrap();
    db.append_log(2, 1, None, "another build").unwrap();

    check_log(
        db,
        1,
        0,
        100,
        &["1 fetch fetching", "2 build Step 1/1 : FROM alpine", "3 - "],
    );
    check_log(db, 1, 1, 100, &["2 build Step 1/1 : FROM alpine", "3 - "]);
    check_log(db, 1, 1, 1, &["2 build Step 1/1 : FROM alpine"]);
    check_log(db, 1, 3, 100, &[]);
    check_log(db, 2, 0, 100, &["1 - another build"]);
    check_log(db, 3, 0, 100, &[]);
    // A line number is written once.
    assert!(db.append_log(1, 2, None, "again").is_err());
    let before = db.log_lines(1, 0, 100).unwrap();
    assert!(before.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
}
