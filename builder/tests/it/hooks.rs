//! The `post-receive` hook: what a push queues and what the pusher reads.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use buildgrid_builder::hooks::{self, PushOptions, install, post_receive};
use buildgrid_core::AppRef;
use buildgrid_store::{BuildState, RetentionRule};

use crate::support::{TestStore, test_store};

const ZERO: &str = "0000000000000000000000000000000000000000";
const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "abcdef0123456789abcdef0123456789abcdef01";
const OTHER: &str = "2222222222222222222222222222222222222222";
const URL: &str = "https://grid.example.com";

/// Feeds `input` to the hook of `app` pushed with `-o nowait` (nothing here runs the builds);
/// compares what it prints and the builds it queued.
#[track_caller]
fn check(store: &TestStore, app: &str, input: &str, expected_out: &str, expected_queued: &[i64]) {
    let app = AppRef::parse(app).unwrap();
    let mut out = Vec::new();
    let options = PushOptions::parse(["nowait"]);
    let queued = post_receive(
        &store.store,
        &app,
        URL,
        None,
        &options,
        input.as_bytes(),
        &mut out,
    )
    .unwrap();
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
buildgrid: branch feature is not main, the branch acme/web builds; not building it
buildgrid: tag v1 pushed: only pushes to branch main build acme/web; not building it
buildgrid: branch main deleted; retention stops keeping its builds in 7 days (pinned and deployed ones stay)
buildgrid: a deletion builds nothing
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
         (pinned and deployed ones stay)\nbuildgrid: a deletion builds nothing",
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
buildgrid: a deletion builds nothing
buildgrid: branch feature/x is back; retention keeps its builds again
buildgrid: branch feature/x is not main, the branch acme/web builds; not building it
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
buildgrid: branch main is not release, the branch acme/web builds; not building it
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

/// Without `-o nowait` the hook prints the build's log as it is stored, a line while the build
/// is quiet, and the result; here the store plays the worker's part.
#[test]
fn a_push_shows_its_build_until_it_ends() {
    let store = test_store();
    store.create_app("acme/web", "main");
    let app = AppRef::parse("acme/web").unwrap();
    let mut out = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let db = &store.store.db;
            while db.build(1).unwrap().is_none() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            db.set_build_state(1, BuildState::Building).unwrap();
            let line = |seq: i64, line: &str| buildgrid_store::LogLine {
                seq,
                at_ms: 0,
                step: Some("1/2".into()),
                line: line.into(),
            };
            // Line 1 is the queuing request's.
            db.append_logs(1, &[line(2, "Step 1/2 : FROM base"), line(3, "slow")])
                .unwrap();
            std::thread::sleep(hooks::KEEPALIVE + std::time::Duration::from_millis(500));
            db.finish_build(1, BuildState::Failed, Some("a RUN step failed"), None)
                .unwrap();
        });
        let queued = post_receive(
            &store.store,
            &app,
            URL,
            Some(&buildgrid_core::RequestId::parse("push-1").unwrap()),
            &PushOptions::default(),
            format!("{OLD} {NEW} refs/heads/main\n").as_bytes(),
            &mut out,
        )
        .unwrap();
        assert_eq!(queued, [1]);
    });
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "buildgrid: build 1 queued for abcdef012345 (main)",
            "buildgrid: watch it at https://grid.example.com/builds/1",
            "buildgrid: its log follows until it ends (`git push -o nowait` returns at once)",
            "requested by request push-1",
            "Step 1/2 : FROM base",
            "slow",
        ],
        "{out}"
    );
    assert!(
        lines[6].starts_with("buildgrid: ... still building (step 1/2, "),
        "{out}"
    );
    assert_eq!(
        lines[7..],
        [
            "buildgrid: build 1 FAILED: a RUN step failed",
            "buildgrid: the commit is pushed, but no image was made from it; fix the build and push again",
            "buildgrid: build page https://grid.example.com/builds/1",
        ],
        "{out}"
    );

    // A commit built before: only the result of its build is shown.
    check(
        &store,
        "acme/web",
        &format!("{OLD} {OTHER} refs/heads/main\n"),
        "
buildgrid: build 2 queued for 222222222222 (main)
buildgrid: watch it at https://grid.example.com/builds/2
buildgrid: or run: buildgrid build-log 2 --follow
",
        &[2],
    );
    let digest = buildgrid_core::Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    let image = format!("grid.example.com/acme/web.demo:{OTHER}");
    store
        .store
        .db
        .finish_build(2, BuildState::Succeeded, None, Some((&image, &digest)))
        .unwrap();
    let mut out = Vec::new();
    post_receive(
        &store.store,
        &app,
        URL,
        None,
        &PushOptions::parse(["verbose"]),
        format!("{OLD} {OTHER} refs/heads/main\n").as_bytes(),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        format!(
            "
buildgrid: push option \"verbose\" is not one buildgrid knows (nowait); ignored
buildgrid: 222222222222 is already built by build 2
buildgrid: watch it at https://grid.example.com/builds/2
buildgrid: build 2 succeeded
buildgrid: image {image}
buildgrid: build page https://grid.example.com/builds/2
"
        )
        .trim()
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
