//! The `post-receive` hook of an app's repository: a push to the app's branch queues a build
//! and shows it until it ends; what the hook prints reaches the pusher as `remote:` lines.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use buildgrid_core::{AppRef, RequestId};
use buildgrid_store::{App, Build, BuildState, NewBuild, Queued, Store};

use crate::follow::{self, Follow, FollowError, HandOver, Seen};

/// Writes the hook that calls `exe hook post-receive` for this app.
pub fn install(git_dir: &Path, exe: &Path, data: &Path, app: &AppRef) -> std::io::Result<()> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\n# Written by buildgrid: queues a build of each push to the app's branch.\nexec {} hook post-receive --data {} --app '{app}'\n",
        quote(exe),
        quote(data),
    );
    let hooks = git_dir.join("hooks");
    std::fs::create_dir_all(&hooks)?;
    let path = hooks.join("post-receive");
    if std::fs::read_to_string(&path).is_ok_and(|old| old == script) {
        return Ok(());
    }
    // A temporary file of its own, so that two requests installing at once never mix.
    let mut temporary = tempfile::Builder::new()
        .prefix("post-receive.")
        .tempfile_in(&hooks)?;
    std::io::Write::write_all(&mut temporary, script.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    temporary
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))?;
    temporary.persist(&path).map_err(|e| e.error)?;
    Ok(())
}

/// What the pusher asked for with `git push -o <option>` (git hands the options to the hook as
/// `GIT_PUSH_OPTION_COUNT` and `GIT_PUSH_OPTION_<i>`; buildgrid's repositories advertise them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushOptions {
    /// `-o nowait`: say which build was queued and return, instead of showing its log until it
    /// ends.
    pub nowait: bool,
    /// Options buildgrid does not know, to say so.
    pub unknown: Vec<String>,
}

impl PushOptions {
    pub fn parse<'a>(options: impl IntoIterator<Item = &'a str>) -> PushOptions {
        let mut parsed = PushOptions::default();
        for option in options {
            match option {
                "nowait" => parsed.nowait = true,
                other => parsed.unknown.push(other.to_owned()),
            }
        }
        parsed
    }

    /// The options of the push whose hook this process is.
    pub fn from_env() -> PushOptions {
        let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
            .ok()
            .and_then(|count| count.parse().ok())
            .unwrap_or(0);
        let options: Vec<String> = (0..count)
            .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
            .collect();
        PushOptions::parse(options.iter().map(String::as_str))
    }
}

/// Without a line from the build for this long, the hook says it is still going: under git's
/// and proxies' idle timeouts, with a margin for the follower's 200 ms polling.
pub const KEEPALIVE: Duration = Duration::from_secs(4);

/// Reads `<old> <new> <ref>` lines and queues a build for a push to the app's branch; its log
/// names `request`, the HTTP request of the push, when there is one. A push that deletes a
/// branch records the deletion (retention lets the branch's builds go `drop_deleted_after` days
/// later), and a push of a deleted branch brings it back. Unless the push says `-o nowait`, the
/// hook then prints the build's log until the build ends, and its result: what the hook prints
/// reaches the pusher as `remote:` lines while the push waits. Returns the builds it queued.
pub fn post_receive(
    store: &Store,
    app: &AppRef,
    public_url: &str,
    request: Option<&RequestId>,
    options: &PushOptions,
    input: impl BufRead,
    mut out: impl Write,
) -> Result<Vec<i64>, FollowError> {
    for option in &options.unknown {
        writeln!(
            out,
            "buildgrid: push option {option:?} is not one buildgrid knows (nowait); ignored"
        )?;
    }
    let Some(app) = store.db.app(app)? else {
        writeln!(
            out,
            "buildgrid: app {app} is not registered; nothing to build"
        )?;
        return Ok(Vec::new());
    };
    let mut queued = Vec::new();
    let mut to_follow = None;
    for line in input.lines().map_while(Result::ok) {
        let mut parts = line.split_whitespace();
        let (Some(_old), Some(new), Some(git_ref)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(result) = queue_push(store, &app, request, new, git_ref, &mut out)? else {
            continue;
        };
        let short = &new[..new.len().min(12)];
        let id = result.id();
        match result {
            Queued::New(id) => {
                writeln!(
                    out,
                    "buildgrid: build {id} queued for {short} ({})",
                    app.branch
                )?;
                queued.push(id);
            }
            Queued::Existing(id) => {
                writeln!(out, "buildgrid: {short} is already built by build {id}")?;
            }
        }
        writeln!(out, "buildgrid: watch it at {public_url}/builds/{id}")?;
        if options.nowait {
            writeln!(out, "buildgrid: or run: buildgrid build-log {id} --follow")?;
        } else {
            to_follow = Some(result);
        }
    }
    if let Some(result) = to_follow {
        out.flush()?;
        follow_push(store, public_url, result, &mut out)?;
    }
    Ok(queued)
}

/// Queues the build of one pushed ref when it is the app's branch; otherwise says why nothing
/// is built (and records a deleted branch, or one that is back).
fn queue_push(
    store: &Store,
    app: &App,
    request: Option<&RequestId>,
    new: &str,
    git_ref: &str,
    out: &mut impl Write,
) -> Result<Option<Queued>, FollowError> {
    let deleted = new.bytes().all(|b| b == b'0');
    let builds = format!("only pushes to branch {} build {}", app.branch, app.app);
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        let what = match git_ref.strip_prefix("refs/tags/") {
            Some(tag) if deleted => format!("tag {tag} deleted"),
            Some(tag) => format!("tag {tag} pushed"),
            None => format!("{git_ref} is not a branch"),
        };
        writeln!(out, "buildgrid: {what}: {builds}; not building it")?;
        return Ok(None);
    };
    if deleted {
        store
            .db
            .branch_deleted(app.id, None, branch, buildgrid_store::now(), None)?;
        let days = store
            .db
            .effective_retention(app.app.namespace(), Some(app.app.app()))?
            .drop_deleted_after;
        let when = match days {
            0 => "from now on".to_owned(),
            1 => "in 1 day".to_owned(),
            days => format!("in {days} days"),
        };
        writeln!(
            out,
            "buildgrid: branch {branch} deleted; retention stops keeping its builds \
             {when} (pinned and deployed ones stay)"
        )?;
        writeln!(out, "buildgrid: a deletion builds nothing")?;
        return Ok(None);
    }
    if store.db.branch_pushed(app.id, None, branch)? {
        writeln!(
            out,
            "buildgrid: branch {branch} is back; retention keeps its builds again"
        )?;
    }
    if branch != app.branch {
        writeln!(
            out,
            "buildgrid: branch {branch} is not {}, the branch {} builds; not building it",
            app.branch, app.app
        )?;
        return Ok(None);
    }
    let new_build = NewBuild {
        app_id: app.id,
        git_ref: app.branch.clone(),
        commit_id: Some(new.to_owned()),
        trigger: "push".into(),
        force: false,
    };
    Ok(Some(
        store
            .db
            .enqueue_requested_build(&new_build, None, request)?,
    ))
}

/// Shows the pushed commit's build until it ends, then its result. Only that build: a build of
/// the same commit it hands over to, never a newer push's (that one's own pusher sees it). A
/// build of the commit that had ended before this push shows only its result.
fn follow_push(
    store: &Store,
    public_url: &str,
    queued: Queued,
    out: &mut impl Write,
) -> Result<(), FollowError> {
    let id = queued.id();
    let ended_before = match queued {
        Queued::New(_) => None,
        Queued::Existing(id) => store.db.build(id)?.filter(|b| b.state.is_finished()),
    };
    let build = match ended_before {
        Some(build) => build,
        None => {
            writeln!(
                out,
                "buildgrid: its log follows until it ends (`git push -o nowait` returns at once)"
            )?;
            let how = Follow {
                quiet: KEEPALIVE,
                hand_over: HandOver::SameCommit,
            };
            follow::follow(store, id, how, |seen| match seen {
                Seen::Line(line) => writeln!(out, "{}", line.line),
                Seen::Quiet { build, step } => {
                    writeln!(out, "buildgrid: ... {}", still(build, step))
                }
                Seen::HandedOver { skipped, to } => writeln!(
                    out,
                    "buildgrid: build {} skipped ({}): build {to} builds this commit; following it",
                    skipped.id,
                    skipped.reason.as_deref().unwrap_or("")
                ),
            })?
        }
    };
    let id = build.id;
    let reason = build.reason.as_deref().unwrap_or("no reason recorded");
    match build.state {
        BuildState::Succeeded => {
            writeln!(
                out,
                "buildgrid: build {id} succeeded{}",
                took(&build).map_or(String::new(), |s| format!(" in {s} s"))
            )?;
            if build.image_removed {
                writeln!(out, "buildgrid: its image was removed by retention")?;
            } else if let Some(image) = &build.image_ref {
                writeln!(out, "buildgrid: image {image}")?;
            }
        }
        BuildState::Failed => {
            writeln!(out, "buildgrid: build {id} FAILED: {reason}")?;
            writeln!(
                out,
                "buildgrid: the commit is pushed, but no image was made from it; fix the build and push again"
            )?;
        }
        BuildState::Cancelled => writeln!(out, "buildgrid: build {id} was CANCELLED: {reason}")?,
        BuildState::Skipped => writeln!(
            out,
            "buildgrid: build {id} was SKIPPED: {reason}; a newer push of the branch is built instead"
        )?,
        // `follow` returns ended builds only.
        state => writeln!(out, "buildgrid: build {id} is {state}")?,
    }
    writeln!(out, "buildgrid: build page {public_url}/builds/{id}")?;
    Ok(())
}

/// What a build that prints nothing is doing, and for how long: `still building (step 3/8,
/// 25 s)`.
fn still(build: &Build, step: Option<&str>) -> String {
    let now = buildgrid_store::now();
    let since = |at: i64| (now - at).max(0);
    let running = build.started_at.map_or(0, since);
    match build.state {
        BuildState::Queued => format!(
            "build {} still queued ({} s)",
            build.id,
            since(build.queued_at)
        ),
        BuildState::Fetching => format!("still fetching the commit ({running} s)"),
        BuildState::Building => match step {
            Some(step) => format!("still building (step {step}, {running} s)"),
            None => format!("still building ({running} s)"),
        },
        BuildState::Storing => format!("still storing the image ({running} s)"),
        state => format!("build {} {state}", build.id),
    }
}

/// Seconds from the build's start to its end.
fn took(build: &Build) -> Option<i64> {
    Some(build.finished_at? - build.started_at?)
}
