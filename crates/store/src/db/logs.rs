//! Build logs: numbered lines, stored as they arrive.

use rusqlite::params;

use super::Db;
use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub seq: i64,
    pub at_ms: i64,
    pub step: Option<String>,
    pub line: String,
}

impl Db {
    /// Appends one log line; `seq` numbers the build's lines from 1.
    pub fn append_log(
        &self,
        build_id: i64,
        seq: i64,
        step: Option<&str>,
        line: &str,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "INSERT INTO build_log (build_id, seq, at_ms, step, line)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![build_id, seq, super::builds::now_ms(), step, line])?;
            Ok(())
        })
    }

    /// Appends log lines in one transaction.
    pub fn append_logs(&self, build_id: i64, lines: &[LogLine]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            for line in lines {
                tx.prepare_cached(
                    "INSERT INTO build_log (build_id, seq, at_ms, step, line)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    build_id, line.seq, line.at_ms, line.step, line.line
                ])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Up to `limit` lines after line `after`.
    pub fn log_lines(
        &self,
        build_id: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at_ms, step, line FROM build_log
                 WHERE build_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![build_id, after, limit as i64], |row| {
                Ok(LogLine {
                    seq: row.get(0)?,
                    at_ms: row.get(1)?,
                    step: row.get(2)?,
                    line: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The number of the build's last log line, 0 when it has none.
    pub fn last_log_seq(&self, build_id: i64) -> Result<i64, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT coalesce(max(seq), 0) FROM build_log WHERE build_id = ?1")?
                .query_row([build_id], |row| row.get(0))?)
        })
    }
}
