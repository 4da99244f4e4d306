//! The `post-receive` hook: what a push queues and what the pusher reads.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use buildgrid_builder::hooks::{install, post_receive};
use buildgrid_core::AppRef;
use buildgrid_store::{BuildState, RetentionRule};

use crate::support::{TestStore, test_store};

const ZERO: &str = "0000000000000000000000000000000000000000";
const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "abcdef0123456789abcdef0123456789abcdef01";
const OTHER: &str = "2222222222222222222222222222222222222222";
const URL: &str = "https://grid.example.com";

/// Feeds `input` to the hook of `app`; compares what it prints and the builds it queued.
#[track_caller]
fn check(store: &TestStore, app: &str, input: &str, expected_out: &str, expected_queued: &[i64]) {
    let app = AppRef::parse(app).unwrap();
    let mut out = Vec::new();
    let queued = post_receive(&store.store, &app, URL, None, input.as_bytes(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out.trim(),
        expected_out.trim(),
        "\n--- actual ---\n{out}\n--- expected ---\n{expected_out}\n"
    );
    assert_eq!(queued, expected_queued);
}

#[test]
fn a_push_to_the_branch_queues_one_build_per_commit() {
    let store = test_store();
    let app = store.create_app("acme/web", "main");
    check(
        &store,
        "acme/web",
        &format!("{OLD} {NEW} refs/heads/main\n"),
        "
buildgrid: build 1 queued for abcdef012345 (main)
buildgrid: watch it at https://grid.example.com/builds/1
buildgrid: or run: buildgrid build-log 1 --follow
",
        &[1],
    );
    let build = store.store.db.build(1).unwrap().unwrap();
    assert_eq!(build.app_id, app.id);
    assert_eq!(build.state, BuildState::Queued);
    assert_eq!(build.commit_id.as_deref(), Some(NEW));
    assert_eq!(build.git_ref, "main");
    assert_eq!(build.trigger, "push");
    assert!(!build.force);

    // The same push again (e.g. pushed to a second remote URL): the build that exists is named.
    check(
        &store,
        "acme/web",
        &format!("{OLD} {NEW} refs/heads/main\n"),
        "
buildgrid: abcdef012345 is already built by build 1
buildgrid: watch it at https://grid.example.com/builds/1
buildgrid: or run: buildgrid build-log 1 --follow
",
        &[],
    );
    assert_eq!(store.store.db.builds_of_app(app.id, 10).unwrap().len(), 1);
}

#[test]
fn other_refs_deletions_and_noise_queue_nothing() {
    let store = test_store();
    let app = store.create_app("acme/web", "main");
    check(
        &store,
        "acme/web",
        &format!(
            "{OLD} {NEW} refs/heads/feature\n\
             {ZERO} {NEW} refs/tags/v1\n\
             {OLD} {ZERO} refs/heads/main\n\
             \n\
             garbage\n\
             {OLD} {NEW}\n"
        ),
        "
buildgrid: refs/heads/feature is not refs/heads/main, the branch acme/web builds; not building it
buildgrid: refs/tags/v1 is not refs/heads/main, the branch acme/web builds; not building it
buildgrid: branch main deleted; retention stops keeping its builds in 7 days (pinned and deployed ones stay)
",
        &[],
    );
    assert!(store.store.db.builds_of_app(app.id, 10).unwrap().is_empty());
}

#[test]
fn a_deleted_branch_is_recorded_until_a_push_brings_it_back() {
    let store = test_store();
    let app = store.create_app("acme/web", "main");
    let before = buildgrid_store::now();
    check(
        &store,
        "acme/web",
        &format!("{OLD} {ZERO} refs/heads/feature/x\n"),
        "buildgrid: branch feature/x deleted; retention stops keeping its builds in 7 days \
         (pinned and deployed ones stay)",
        &[],
    );
    let deleted = store.store.db.deleted_branches(app.id).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (deleted[0].source_id, deleted[0].branch.as_str()),
        (None, "feature/x")
    );
    assert!(deleted[0].deleted_at >= before && deleted[0].deleted_at <= buildgrid_store::now());

    let rule = RetentionRule {
        drop_deleted_after: Some(0),
        ..RetentionRule::default()
    };
    store.store.db.set_retention_rule("acme/web", rule).unwrap();
    check(
        &store,
        "acme/web",
        &format!("{OLD} {ZERO} refs/heads/old\n{ZERO} {NEW} refs/heads/feature/x\n"),
        "
buildgrid: branch old deleted; retention stops keeping its builds from now on (pinned and deployed ones stay)
buildgrid: branch feature/x is back; retention keeps its builds again
buildgrid: refs/heads/feature/x is not refs/heads/main, the branch acme/web builds; not building it
",
        &[],
    );
    let deleted = store.store.db.deleted_branches(app.id).unwrap();
    let names: Vec<&str> = deleted.iter().map(|d| d.branch.as_str()).collect();
    assert_eq!(names, ["old"]);
}

#[test]
fn several_lines_in_one_push() {
    let store = test_store();
    let app = store.create_app("acme/web", "release");
    // A new branch (old is zeros) is built; another branch in the same push is not.
    check(
        &store,
        "acme/web",
        &format!("{ZERO} {OTHER} refs/heads/release\n{ZERO} {NEW} refs/heads/main\n"),
        "
buildgrid: build 1 queued for 222222222222 (release)
buildgrid: watch it at https://grid.example.com/builds/1
buildgrid: or run: buildgrid build-log 1 --follow
buildgrid: refs/heads/main is not refs/heads/release, the branch acme/web builds; not building it
",
        &[1],
    );
    check(
        &store,
        "acme/web",
        &format!("{OTHER} {NEW} refs/heads/release\n"),
        "
buildgrid: build 2 queued for abcdef012345 (release)
buildgrid: watch it at https://grid.example.com/builds/2
buildgrid: or run: buildgrid build-log 2 --follow
",
        &[2],
    );
    let builds = store.store.db.builds_of_app(app.id, 10).unwrap();
    let commits: Vec<_> = builds.iter().map(|b| b.commit_id.as_deref()).collect();
    assert_eq!(commits, [Some(NEW), Some(OTHER)]);
}

#[test]
fn an_unregistered_app_builds_nothing() {
    let store = test_store();
    store.create_app("acme/web", "main");
    check(
        &store,
        "acme/api",
        &format!("{OLD} {NEW} refs/heads/main\n"),
        "buildgrid: app acme/api is not registered; nothing to build",
        &[],
    );
}

fn hook_text(git_dir: &Path) -> String {
    std::fs::read_to_string(git_dir.join("hooks/post-receive")).unwrap()
}

#[test]
fn install_writes_an_executable_hook_once() {
    let dir = tempfile::tempdir().unwrap();
    let git_dir = dir.path().join("git/acme/web.git");
    let exe = Path::new("/usr/local/bin/buildgrid");
    let data = dir.path().join("data");
    let app = AppRef::parse("acme/web").unwrap();
    install(&git_dir, exe, &data, &app).unwrap();
    let path = git_dir.join("hooks/post-receive");
    let text = hook_text(&git_dir);
    assert_eq!(
        text,
        format!(
            "#!/bin/sh\n\
             # Written by buildgrid: queues a build of each push to the app's branch.\n\
             exec '/usr/local/bin/buildgrid' hook post-receive --data '{}' --app 'acme/web'\n",
            data.display()
        )
    );
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o755);

    // The same hook again: the file is left alone.
    install(&git_dir, exe, &data, &app).unwrap();
    let again = std::fs::metadata(&path).unwrap();
    assert_eq!(again.ino(), metadata.ino(), "the hook was rewritten");
    assert_eq!(hook_text(&git_dir), text);
    assert!(!git_dir.join("hooks/post-receive.new").exists());

    // Another executable (buildgrid moved): the hook follows.
    install(&git_dir, Path::new("/opt/buildgrid"), &data, &app).unwrap();
    assert!(hook_text(&git_dir).contains("exec '/opt/buildgrid' hook post-receive"));
    let moved = std::fs::metadata(&path).unwrap();
    assert_eq!(moved.permissions().mode() & 0o777, 0o755);
}

#[test]
fn installed_hook_passes_awkward_paths_intact() {
    // Run the hook with a stand-in executable that prints its arguments one per line.
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("it's $HOME `x`");
    std::fs::create_dir_all(&tools).unwrap();
    let exe = tools.join("buildgrid");
    std::fs::write(
        &exe,
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data dir 'quoted'");
    let git_dir = dir.path().join("web.git");
    let app = AppRef::parse("acme/web").unwrap();
    install(&git_dir, &exe, &data, &app).unwrap();
    let output = std::process::Command::new(git_dir.join("hooks/post-receive"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let arguments = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        arguments,
        format!(
            "hook\npost-receive\n--data\n{}\n--app\nacme/web\n",
            data.display()
        )
    );
}
