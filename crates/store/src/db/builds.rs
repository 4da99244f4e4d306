//! Builds, their queue and their logs, and webhook deliveries.

use buildgrid_core::{Digest, RequestId};
use rusqlite::{OptionalExtension, Row, params};

use super::Db;
use crate::{Lease, StoreError, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    Queued,
    Fetching,
    Building,
    Storing,
    Succeeded,
    Failed,
    Cancelled,
    /// Never started: superseded by a newer push, or its commit was built already.
    Skipped,
}

impl BuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Fetching => "fetching",
            BuildState::Building => "building",
            BuildState::Storing => "storing",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
            BuildState::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> BuildState {
        match text {
            "queued" => BuildState::Queued,
            "fetching" => BuildState::Fetching,
            "building" => BuildState::Building,
            "storing" => BuildState::Storing,
            "succeeded" => BuildState::Succeeded,
            "cancelled" => BuildState::Cancelled,
            "skipped" => BuildState::Skipped,
            _ => BuildState::Failed,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            BuildState::Succeeded
                | BuildState::Failed
                | BuildState::Cancelled
                | BuildState::Skipped
        )
    }
}

impl std::fmt::Display for BuildState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Build {
    pub id: i64,
    pub app_id: i64,
    pub git_ref: String,
    pub commit_id: Option<String>,
    pub trigger: String,
    pub state: BuildState,
    pub reason: Option<String>,
    pub force: bool,
    pub cancel_requested: bool,
    pub commit_message: Option<String>,
    pub commit_author: Option<String>,
    pub image_ref: Option<String>,
    pub image_digest: Option<String>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The source built, when not the app's own repository.
    pub source_id: Option<i64>,
    /// Collection removed its image: retention did not keep it. The row and log stay.
    pub image_removed: bool,
}

#[derive(Debug, Clone)]
pub struct NewBuild {
    pub app_id: i64,
    /// A branch name, or whatever ref the trigger named.
    pub git_ref: String,
    /// Known when a push or webhook names it; resolved by the builder otherwise.
    pub commit_id: Option<String>,
    pub trigger: String,
    /// Build even when this commit was built already.
    pub force: bool,
}

/// The outcome of queuing a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    New(i64),
    /// The same commit of the same app is queued, running or built already.
    Existing(i64),
}

impl Queued {
    pub fn id(self) -> i64 {
        match self {
            Queued::New(id) | Queued::Existing(id) => id,
        }
    }
}

pub(super) const BUILD_COLUMNS: &str =
    "id, app_id, git_ref, commit_id, trigger, state, reason, force,
    cancel_requested, commit_message, commit_author, image_ref, image_digest, queued_at,
    started_at, finished_at, source_id, image_removed";

pub(super) fn build_row(row: &Row<'_>) -> rusqlite::Result<Build> {
    Ok(Build {
        id: row.get(0)?,
        app_id: row.get(1)?,
        git_ref: row.get(2)?,
        commit_id: row.get(3)?,
        trigger: row.get(4)?,
        state: BuildState::parse(&row.get::<_, String>(5)?),
        reason: row.get(6)?,
        force: row.get(7)?,
        cancel_requested: row.get(8)?,
        commit_message: row.get(9)?,
        commit_author: row.get(10)?,
        image_ref: row.get(11)?,
        image_digest: row.get(12)?,
        queued_at: row.get(13)?,
        started_at: row.get(14)?,
        finished_at: row.get(15)?,
        source_id: row.get(16)?,
        image_removed: row.get(17)?,
    })
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Queues a build, unless the same commit of the app is queued, running or built already
    /// (and `force` is off).
    pub fn enqueue_build(&self, new: &NewBuild) -> Result<Queued, StoreError> {
        self.enqueue_source_build(new, None)
    }

    /// Queues a build of source `source` of the app (its own repository when `None`).
    pub fn enqueue_source_build(
        &self,
        new: &NewBuild,
        source: Option<i64>,
    ) -> Result<Queued, StoreError> {
        self.enqueue_requested_build(new, source, None)
    }

    /// Queues a build as `enqueue_source_build` does; a new build's first log line names the
    /// HTTP request that queued it (`requested by request <id>`), written in the same
    /// transaction so the worker's lines follow it.
    pub fn enqueue_requested_build(
        &self,
        new: &NewBuild,
        source: Option<i64>,
        request: Option<&RequestId>,
    ) -> Result<Queued, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let queued = enqueue(&tx, new, source, request)?;
            tx.commit()?;
            Ok(queued)
        })
    }

    /// Records a webhook delivery and queues its build in one transaction; `None` when the
    /// delivery was seen before.
    pub fn enqueue_delivered_build(
        &self,
        delivery: Option<&str>,
        new: &NewBuild,
        source: Option<i64>,
        request: Option<&RequestId>,
    ) -> Result<Option<Queued>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(delivery) = delivery
                && !first_delivery(&tx, new.app_id, delivery)?
            {
                return Ok(None);
            }
            let queued = enqueue(&tx, new, source, request)?;
            tx.commit()?;
            Ok(Some(queued))
        })
    }

    /// Takes the oldest queued build and marks it fetching, under this process's lease (see
    /// [`Db::claim_next_build_leased`]).
    pub fn claim_next_build(&self) -> Result<Option<Build>, StoreError> {
        self.claim_next_build_leased(&Lease::this_process())
    }

    /// Takes the oldest queued build and marks it fetching, holding `lease`. Queued builds of
    /// the same app and ref that a newer queued build supersedes are marked skipped on the way.
    pub fn claim_next_build_leased(&self, lease: &Lease) -> Result<Option<Build>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let queued: Vec<Build> = {
                let sql = format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE state = 'queued' ORDER BY id"
                );
                let mut stmt = tx.prepare_cached(&sql)?;
                let rows = stmt.query_map([], build_row)?;
                rows.collect::<Result<_, _>>()?
            };
            let mut claimed = None;
            for build in &queued {
                let newer = queued.iter().rev().find(|other| {
                    other.id > build.id
                        && other.app_id == build.app_id
                        && other.git_ref == build.git_ref
                        && other.source_id == build.source_id
                        && !build.force
                });
                if let Some(newer) = newer {
                    tx.execute(
                        "UPDATE builds SET state = 'skipped', reason = ?2, finished_at = ?3
                         WHERE id = ?1",
                        params![build.id, format!("superseded by build {}", newer.id), now()],
                    )?;
                    continue;
                }
                tx.execute(
                    "UPDATE builds SET state = 'fetching', started_at = ?2, lease_owner = ?3,
                        lease_until = ?4
                     WHERE id = ?1",
                    params![build.id, now(), lease.owner, lease.until(now_ms())],
                )?;
                let mut build = build.clone();
                build.state = BuildState::Fetching;
                claimed = Some(build);
                break;
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    pub fn set_build_state(&self, id: i64, state: BuildState) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached("UPDATE builds SET state = ?2 WHERE id = ?1")?
                .execute(params![id, state.as_str()])?;
            Ok(())
        })
    }

    pub fn set_build_commit(
        &self,
        id: i64,
        commit: &str,
        message: &str,
        author: &str,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "UPDATE builds SET commit_id = ?2, commit_message = ?3, commit_author = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, commit, message, author])?;
            Ok(())
        })
    }

    /// An older build of the same commit that is running or succeeded. Only older builds
    /// count, so that two builds that learn their commit at once never both give way.
    pub fn other_build_of_commit(
        &self,
        app_id: i64,
        commit: &str,
        except: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id FROM builds WHERE app_id = ?1 AND commit_id = ?2 AND id < ?3
                     AND source_id IS (SELECT source_id FROM builds WHERE id = ?3)
                     AND state NOT IN ('failed', 'cancelled', 'skipped', 'queued')
                     ORDER BY id LIMIT 1",
                )?
                .query_row(params![app_id, commit, except], |row| row.get(0))
                .optional()?)
        })
    }

    pub fn finish_build(
        &self,
        id: i64,
        state: BuildState,
        reason: Option<&str>,
        image: Option<(&str, &Digest)>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "UPDATE builds SET state = ?2, reason = ?3, image_ref = ?4, image_digest = ?5,
                    finished_at = ?6
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                state.as_str(),
                reason,
                image.map(|(r, _)| r),
                image.map(|(_, d)| d.to_string()),
                now()
            ])?;
            Ok(())
        })
    }

    pub fn build(&self, id: i64) -> Result<Option<Build>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], build_row)
                .optional()?)
        })
    }

    /// The newest builds of an app first.
    pub fn builds_of_app(&self, app_id: i64, limit: usize) -> Result<Vec<Build>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE app_id = ?1 ORDER BY id DESC LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![app_id, limit as i64], build_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Asks a build to stop: a queued one is cancelled at once, one fetching or building is
    /// flagged for its worker, one storing its image is left alone. Returns the state after the
    /// request, or `None` for an unknown build.
    pub fn request_cancel(&self, id: i64) -> Result<Option<BuildState>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let state: Option<String> = tx
                .query_row("SELECT state FROM builds WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()?;
            let Some(state) = state.map(|s| BuildState::parse(&s)) else {
                return Ok(None);
            };
            let after = match state {
                BuildState::Queued => {
                    tx.execute(
                        "UPDATE builds SET state = 'cancelled', reason = 'cancelled before it started',
                            finished_at = ?2 WHERE id = ?1",
                        params![id, now()],
                    )?;
                    BuildState::Cancelled
                }
                // Storing is not interrupted: the image is stored whole or not at all.
                state if state.is_finished() || state == BuildState::Storing => state,
                state => {
                    tx.execute(
                        "UPDATE builds SET cancel_requested = 1 WHERE id = ?1",
                        [id],
                    )?;
                    state
                }
            };
            tx.commit()?;
            Ok(Some(after))
        })
    }

    pub fn cancel_requested(&self, id: i64) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT cancel_requested FROM builds WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?
                .unwrap_or(false))
        })
    }

    /// Renews the lease of running build `id` for another term of `lease`; false when the
    /// build no longer runs under this owner's lease (it ended, or was judged interrupted).
    pub fn renew_build_lease(&self, id: i64, lease: &Lease) -> Result<bool, StoreError> {
        self.with(|conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE builds SET lease_until = ?3
                     WHERE id = ?1 AND lease_owner = ?2
                       AND state IN ('fetching', 'building', 'storing')",
                )?
                .execute(params![id, lease.owner, lease.until(now_ms())])?;
            Ok(changed == 1)
        })
    }

    /// Marks every running build whose lease lapsed (its process stopped or was lost) as
    /// failed with `reason`; returns their ids.
    pub fn interrupt_lapsed_builds(&self, reason: &str) -> Result<Vec<i64>, StoreError> {
        self.interrupt_builds_where("ifnull(lease_until, 0) <= ?1", &now_ms(), reason)
    }

    /// Marks the running builds held by `owner` as failed with `reason`; returns their ids:
    /// what a process that stops does with its own that its workers did not end.
    pub fn interrupt_builds_of(&self, owner: &str, reason: &str) -> Result<Vec<i64>, StoreError> {
        self.interrupt_builds_where("lease_owner = ?1", &owner, reason)
    }

    fn interrupt_builds_where(
        &self,
        condition: &str,
        value: &dyn rusqlite::ToSql,
        reason: &str,
    ) -> Result<Vec<i64>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<i64> = {
                let sql = format!(
                    "SELECT id FROM builds
                     WHERE state IN ('fetching', 'building', 'storing') AND {condition}"
                );
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map([value], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for id in &ids {
                let seq: i64 = tx.query_row(
                    "SELECT coalesce(max(seq), 0) + 1 FROM build_log WHERE build_id = ?1",
                    [id],
                    |row| row.get(0),
                )?;
                tx.execute(
                    "INSERT INTO build_log (build_id, seq, at_ms, step, line)
                     VALUES (?1, ?2, ?3, NULL, ?4)",
                    params![id, seq, now_ms(), format!("build failed: {reason}")],
                )?;
                tx.execute(
                    "UPDATE builds SET state = 'failed', reason = ?2, finished_at = ?3
                     WHERE id = ?1",
                    params![id, reason, now()],
                )?;
            }
            tx.commit()?;
            Ok(ids)
        })
    }
}

/// Queues a build in `tx`, unless the same commit of the app is queued, running or built already
/// (and `force` is off).
fn enqueue(
    tx: &rusqlite::Transaction<'_>,
    new: &NewBuild,
    source: Option<i64>,
    request: Option<&RequestId>,
) -> Result<Queued, StoreError> {
    if let (Some(commit), false) = (&new.commit_id, new.force) {
        let existing = tx
            .prepare_cached(
                "SELECT id FROM builds WHERE app_id = ?1 AND commit_id = ?2 AND source_id IS ?3
                 AND state NOT IN ('failed', 'cancelled', 'skipped')
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![new.app_id, commit, source], |row| row.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(Queued::Existing(id));
        }
    }
    tx.execute(
        "INSERT INTO builds (app_id, git_ref, commit_id, trigger, state, force, queued_at,
            source_id)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
        params![
            new.app_id,
            new.git_ref,
            new.commit_id,
            new.trigger,
            new.force,
            now(),
            source
        ],
    )?;
    let id = tx.last_insert_rowid();
    if let Some(request) = request {
        tx.execute(
            "INSERT INTO build_log (build_id, seq, at_ms, step, line)
             VALUES (?1, 1, ?2, NULL, ?3)",
            params![id, now_ms(), format!("requested by request {request}")],
        )?;
    }
    Ok(Queued::New(id))
}

/// Records webhook delivery `delivery` of app `app_id`; whether it is the first time.
pub(super) fn first_delivery(
    tx: &rusqlite::Transaction<'_>,
    app_id: i64,
    delivery: &str,
) -> Result<bool, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO webhook_deliveries (app_id, delivery, received_at)
             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![app_id, delivery, now()])?;
    Ok(inserted > 0)
}
