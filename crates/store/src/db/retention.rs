//! Retention rules (per app, per namespace, server-wide) and pinned images.

use buildgrid_core::{Digest, RepoName, Tag};
use rusqlite::{OptionalExtension, params};

use super::{Db, digest_column};
use crate::{StoreError, now};

/// What a build's image keeps it: one value per rule, `None` where the scope inherits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionRule {
    /// Keep the newest this many successful builds of each branch.
    pub keep_last: Option<u32>,
    /// Keep builds that finished less than this many days ago (0: off).
    pub keep_days: Option<u32>,
    /// Keep the images each service ran before the one it runs now, this many.
    pub keep_deployed: Option<u32>,
    /// Stop keeping the builds of a branch deleted upstream this many days after it was
    /// deleted (0: as soon as it is).
    pub drop_deleted_after: Option<u32>,
}

/// The rule in force once every scope has been consulted: nothing inherits any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_days: u32,
    pub keep_deployed: u32,
    pub drop_deleted_after: u32,
}

/// What applies where nobody set anything: the newest 20 builds of each branch and the 3
/// images each service ran before its current one; age keeps nothing; a branch deleted
/// upstream loses its builds a week after it was deleted.
pub const DEFAULT_RETENTION: Retention = Retention {
    keep_last: 20,
    keep_days: 0,
    keep_deployed: 3,
    drop_deleted_after: 7,
};

impl RetentionRule {
    /// This rule where it says something, else `fallback`.
    pub fn over(self, fallback: Retention) -> Retention {
        Retention {
            keep_last: self.keep_last.unwrap_or(fallback.keep_last),
            keep_days: self.keep_days.unwrap_or(fallback.keep_days),
            keep_deployed: self.keep_deployed.unwrap_or(fallback.keep_deployed),
            drop_deleted_after: self
                .drop_deleted_after
                .unwrap_or(fallback.drop_deleted_after),
        }
    }
}

/// An image pinned by hand: kept whatever retention says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub repo: String,
    pub tag: String,
    pub digest: Digest,
    pub pinned_at: i64,
}

impl Db {
    /// The rules set for `scope`: `""` server-wide, `"<ns>"` a namespace, `"<ns>/<app>"` an app.
    pub fn retention_rule(&self, scope: &str) -> Result<RetentionRule, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT keep_last, keep_days, keep_deployed, drop_deleted_after
                     FROM retention WHERE scope = ?1",
                )?
                .query_row([scope], |row| rule_columns(row, 0))
                .optional()?
                .unwrap_or_default())
        })
    }

    /// Sets the values `rule` gives for `scope`, leaving the others as they were.
    pub fn set_retention_rule(&self, scope: &str, rule: RetentionRule) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO retention (scope, keep_last, keep_days, keep_deployed,
                                        drop_deleted_after)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (scope) DO UPDATE SET
                    keep_last = coalesce(?2, keep_last),
                    keep_days = coalesce(?3, keep_days),
                    keep_deployed = coalesce(?4, keep_deployed),
                    drop_deleted_after = coalesce(?5, drop_deleted_after)",
                params![
                    scope,
                    rule.keep_last,
                    rule.keep_days,
                    rule.keep_deployed,
                    rule.drop_deleted_after
                ],
            )?;
            Ok(())
        })
    }

    /// The rule in force for app `<namespace>/<app>` (`app` `None`: for a new app of the
    /// namespace): the app's values, else the namespace's, else the server's, else the defaults.
    pub fn effective_retention(
        &self,
        namespace: &str,
        app: Option<&str>,
    ) -> Result<Retention, StoreError> {
        let rules = self.retention_rules()?;
        let app = app.map(|a| format!("{namespace}/{a}")).unwrap_or_default();
        Ok(crate::gc::plan::rule_for(&rules, namespace, &app))
    }

    /// Every scope's rules, by scope.
    pub fn retention_rules(&self) -> Result<Vec<(String, RetentionRule)>, StoreError> {
        self.with(|conn| retention_rules(conn))
    }

    /// Pins the image `repo:tag` names now (the pin stays on that image when the tag moves).
    /// `Ok(None)` when the tag names nothing.
    pub fn pin_image(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Pin>, StoreError> {
        let Some(manifest) = self.manifest_by_tag(repo, tag)? else {
            return Ok(None);
        };
        let at = now();
        self.with(|conn| {
            conn.execute(
                "INSERT INTO image_pins (repo_id, tag, digest, pinned_at)
                 SELECT id, ?2, ?3, ?4 FROM repositories WHERE name = ?1
                 ON CONFLICT (repo_id, tag) DO UPDATE SET digest = ?3, pinned_at = ?4",
                params![repo.as_str(), tag.as_str(), manifest.digest.to_string(), at],
            )?;
            Ok(())
        })?;
        Ok(Some(Pin {
            repo: repo.to_string(),
            tag: tag.to_string(),
            digest: manifest.digest,
            pinned_at: at,
        }))
    }

    /// Removes the pin `repo:tag`; whether there was one.
    pub fn unpin_image(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        self.with(|conn| {
            let removed = conn.execute(
                "DELETE FROM image_pins WHERE tag = ?2
                   AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo.as_str(), tag.as_str()],
            )?;
            Ok(removed > 0)
        })
    }

    /// Whether collection removed build `id`'s image (retention did not keep it).
    pub fn image_removed(&self, id: i64) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT image_removed FROM builds WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?
                .unwrap_or(false))
        })
    }

    /// Every pin, by repository and tag.
    pub fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT r.name, p.tag, p.digest, p.pinned_at
                 FROM image_pins p JOIN repositories r ON r.id = p.repo_id
                 ORDER BY r.name, p.tag",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(Pin {
                    repo: row.get(0)?,
                    tag: row.get(1)?,
                    digest: digest_column(row, 2)?,
                    pinned_at: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

pub(super) fn retention_rules(
    conn: &rusqlite::Connection,
) -> Result<Vec<(String, RetentionRule)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT scope, keep_last, keep_days, keep_deployed, drop_deleted_after
         FROM retention ORDER BY scope",
    )?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, rule_columns(row, 1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The rule in the four columns from `first` on.
fn rule_columns(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<RetentionRule> {
    Ok(RetentionRule {
        keep_last: row.get(first)?,
        keep_days: row.get(first + 1)?,
        keep_deployed: row.get(first + 2)?,
        drop_deleted_after: row.get(first + 3)?,
    })
}
