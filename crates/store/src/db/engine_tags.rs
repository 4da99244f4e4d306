//! The names builds left in the Docker engine whose images collection removed: each is removed
//! from the engine once (`builds.engine_tag_removed`).

use super::Db;
use crate::StoreError;

/// A build whose image collection removed and whose engine name is still to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedEngineTag {
    pub build_id: i64,
    pub app_id: i64,
    pub source_id: Option<i64>,
    pub commit_id: String,
    /// Another build of the same commit, not collected, names the same engine image: the name
    /// stays in the engine.
    pub still_used: bool,
}

impl Db {
    /// Builds whose image collection removed, or will remove (`collecting`: what a dry run
    /// would collect), and whose engine name was not removed yet.
    pub fn collected_engine_tags(
        &self,
        collecting: &[i64],
    ) -> Result<Vec<CollectedEngineTag>, StoreError> {
        // A JSON array of numbers, for `json_each`.
        let collecting = format!(
            "[{}]",
            collecting
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT b.id, b.app_id, b.source_id, b.commit_id,
                        EXISTS (SELECT 1 FROM builds k
                                WHERE k.app_id = b.app_id AND k.source_id IS b.source_id
                                  AND k.commit_id = b.commit_id AND k.image_removed = 0
                                  AND k.id NOT IN (SELECT value FROM json_each(?1))
                                  AND k.state NOT IN ('failed', 'cancelled', 'skipped'))
                 FROM builds b
                 WHERE (b.image_removed = 1 OR b.id IN (SELECT value FROM json_each(?1)))
                   AND b.engine_tag_removed = 0
                   AND b.commit_id IS NOT NULL
                 ORDER BY b.id",
            )?;
            let rows = stmt.query_map([&collecting], |row| {
                Ok(CollectedEngineTag {
                    build_id: row.get(0)?,
                    app_id: row.get(1)?,
                    source_id: row.get(2)?,
                    commit_id: row.get(3)?,
                    still_used: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Records that build `id`'s engine name is gone (or is another build's now).
    pub fn engine_tag_removed(&self, id: i64) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached("UPDATE builds SET engine_tag_removed = 1 WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        })
    }
}
