//! Branches deleted upstream: since when a push deleted them, until a push brings them back.
//! Retention stops keeping their builds `drop_deleted_after` days after the deletion (see `gc`).

use rusqlite::params;

use super::Db;
use super::builds::first_delivery;
use crate::StoreError;

/// A branch of an app's repository (`source_id` `None`) or of one of its sources, deleted by a
/// push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedBranch {
    pub source_id: Option<i64>,
    /// Its name, without `refs/heads/`.
    pub branch: String,
    /// When the deleting push arrived, seconds since the epoch.
    pub deleted_at: i64,
}

/// A branch's name as rows keep it: `refs/heads/x` and `x` are one branch.
pub(crate) fn branch_name(git_ref: &str) -> &str {
    git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref)
}

impl Db {
    /// Records that a push deleted `branch` at `at` (seconds since the epoch); a deletion
    /// recorded before and not undone keeps its time. With `delivery`, the webhook delivery
    /// that said so is recorded in the same transaction, and `false` means it was seen before
    /// and nothing changed: a delivery sent again after the branch came back never deletes it
    /// again.
    pub fn branch_deleted(
        &self,
        app_id: i64,
        source_id: Option<i64>,
        branch: &str,
        at: i64,
        delivery: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(delivery) = delivery
                && !first_delivery(&tx, app_id, delivery)?
            {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO deleted_branches (app_id, source_id, branch, deleted_at)
                 SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (
                    SELECT 1 FROM deleted_branches
                    WHERE app_id = ?1 AND source_id IS ?2 AND branch = ?3)",
            )?
            .execute(params![app_id, source_id, branch_name(branch), at])?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Records that a push brought `branch` (back): it is not deleted any more. Whether it was.
    pub fn branch_pushed(
        &self,
        app_id: i64,
        source_id: Option<i64>,
        branch: &str,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            let removed = conn
                .prepare_cached(
                    "DELETE FROM deleted_branches
                     WHERE app_id = ?1 AND source_id IS ?2 AND branch = ?3",
                )?
                .execute(params![app_id, source_id, branch_name(branch)])?;
            Ok(removed > 0)
        })
    }

    /// The app's branches deleted upstream, its own repository's first, then by source and
    /// name.
    pub fn deleted_branches(&self, app_id: i64) -> Result<Vec<DeletedBranch>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source_id, branch, deleted_at FROM deleted_branches WHERE app_id = ?1
                 ORDER BY source_id IS NOT NULL, source_id, branch",
            )?;
            let rows = stmt.query_map([app_id], |row| {
                Ok(DeletedBranch {
                    source_id: row.get(0)?,
                    branch: row.get(1)?,
                    deleted_at: row.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
