//! Following a build's log until the build ends: `buildgrid build-log --follow`, `build --wait`
//! and the `post-receive` hook of a `git push` all print through this one loop. It only reads:
//! each look at the build is two short reads of the store (its row, then at most 10,000 new
//! lines), so a follower holds no lock and no transaction a build or another push needs.

use std::time::{Duration, Instant};

use buildgrid_store::{Build, BuildState, LogLine, Store, StoreError};

/// How often the follower looks for new lines.
const POLL: Duration = Duration::from_millis(200);

/// What a follower sees, in order.
pub enum Seen<'a> {
    /// The next line of the followed build's log.
    Line(&'a LogLine),
    /// No line for `Follow::quiet` (and again after each further `quiet`): the build as it is
    /// now and the step its last line was in.
    Quiet {
        build: &'a Build,
        step: Option<&'a str>,
    },
    /// `skipped` never ran; build `to` does its work and is followed from here on.
    HandedOver { skipped: &'a Build, to: i64 },
}

/// Whom a skipped build hands over to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOver {
    /// The build of the same commit that made the skipped one unnecessary.
    SameCommit,
    /// That, or else the newer build of the same branch that superseded it in the queue.
    SameCommitOrNewer,
}

#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// After this long without a line, `Seen::Quiet`.
    pub quiet: Duration,
    pub hand_over: HandOver,
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("no build {0}")]
    Missing(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The one reading stopped listening (a `git push` interrupted, a closed pipe).
    #[error("cannot print the build's log: {0}")]
    Write(#[from] std::io::Error),
}

/// Shows build `id`'s log to `seen` as it grows, from its first line, until the build ends, and
/// returns the build as it ended (a skipped build when nothing does its work under `hand_over`).
pub fn follow(
    store: &Store,
    id: i64,
    how: Follow,
    mut seen: impl FnMut(Seen<'_>) -> std::io::Result<()>,
) -> Result<Build, FollowError> {
    let mut id = id;
    let mut after = 0;
    let mut step: Option<String> = None;
    let mut last_said = Instant::now();
    loop {
        let build = store.db.build(id)?.ok_or(FollowError::Missing(id))?;
        let lines = store.db.log_lines(id, after, 10_000)?;
        for line in &lines {
            seen(Seen::Line(line))?;
            after = line.seq;
            if line.step.is_some() {
                step.clone_from(&line.step);
            }
        }
        if !lines.is_empty() {
            last_said = Instant::now();
            continue;
        }
        // The state was read before the lines: a finished build has every line stored by now.
        if build.state == BuildState::Skipped
            && let Some(other) = doing_the_work(store, &build, how.hand_over)?
        {
            seen(Seen::HandedOver {
                skipped: &build,
                to: other,
            })?;
            id = other;
            after = 0;
            step = None;
            last_said = Instant::now();
            continue;
        }
        if build.state.is_finished() {
            return Ok(build);
        }
        if last_said.elapsed() >= how.quiet {
            seen(Seen::Quiet {
                build: &build,
                step: step.as_deref(),
            })?;
            last_said = Instant::now();
        }
        std::thread::sleep(POLL);
    }
}

/// The build that does the work of skipped build `build`: the older running or succeeded build
/// of its commit, or else (when `hand_over` allows) the newest later build of its branch, which
/// superseded it in the queue. `None` when there is none to follow.
fn doing_the_work(
    store: &Store,
    build: &Build,
    hand_over: HandOver,
) -> Result<Option<i64>, StoreError> {
    if let Some(commit) = &build.commit_id
        && let Some(other) = store
            .db
            .other_build_of_commit(build.app_id, commit, build.id)?
    {
        return Ok(Some(other));
    }
    if hand_over == HandOver::SameCommit {
        return Ok(None);
    }
    let newer = store
        .db
        .builds_of_app(build.app_id, 100)?
        .into_iter()
        .find(|other| {
            other.id > build.id
                && other.git_ref == build.git_ref
                && other.source_id == build.source_id
                && other.state != BuildState::Skipped
        });
    Ok(newer.map(|other| other.id))
}
