//! What the build log page reads: windows of lines around a line number, filtered by text and
//! by step, the steps of a build, and its first error. A window is a range of the primary key
//! (or of the step index), so a page of a long log costs the same as one of a short log.

use rusqlite::{Connection, ToSql, params, params_from_iter};

use super::{Db, LogLine};
use crate::StoreError;

/// Which lines of a build's log a page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only lines containing this text, ignoring ASCII case.
    pub text: Option<String>,
    /// Only lines of this build step.
    pub step: Option<String>,
}

/// A build step and its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStep {
    pub step: String,
    pub first_seq: i64,
    pub first_line: String,
}

impl Db {
    /// Whether a namespace publishes its build logs, deploy logs and running containers to
    /// everyone who may read it; by default (and for a namespace without a row) only to members.
    pub fn namespace_logs_public(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM namespaces WHERE name = ?1 AND logs_public = 1")?
                .exists([name])?)
        })
    }

    /// Publishes a namespace's logs or stops publishing them; a namespace not known yet is
    /// recorded (private).
    pub fn set_namespace_logs_public(&self, name: &str, public: bool) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO namespaces (name, public, logs_public, created_at)
                 VALUES (?1, 0, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET logs_public = excluded.logs_public",
                params![name, public, crate::now()],
            )?;
            Ok(())
        })
    }

    /// Up to `limit` lines after line `after` that pass `filter`, in order.
    pub fn log_after(
        &self,
        build_id: i64,
        after: i64,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.with(|conn| query_window(conn, build_id, filter, Window::After(after), limit))
    }

    /// The last `limit` lines before line `before` that pass `filter`, in order.
    pub fn log_before(
        &self,
        build_id: i64,
        before: i64,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.with(|conn| {
            let mut lines = query_window(conn, build_id, filter, Window::Before(before), limit)?;
            lines.reverse();
            Ok(lines)
        })
    }

    /// The build's steps in the order they started. Each step costs one seek in the step index,
    /// however many lines it has.
    pub fn log_steps(&self, build_id: i64) -> Result<Vec<LogStep>, StoreError> {
        self.with(|conn| {
            let mut steps = Vec::new();
            let mut next = conn.prepare_cached(
                "SELECT step, seq, line FROM build_log
                 WHERE build_id = ?1 AND step > ?2 ORDER BY step, seq LIMIT 1",
            )?;
            let mut last = String::new();
            while let Some(step) = next
                .query_map(params![build_id, last], |row| {
                    Ok(LogStep {
                        step: row.get(0)?,
                        first_seq: row.get(1)?,
                        first_line: row.get(2)?,
                    })
                })?
                .next()
                .transpose()?
            {
                last = step.step.clone();
                steps.push(step);
            }
            steps.sort_by_key(|step| step.first_seq);
            Ok(steps)
        })
    }

    /// The number of the first line matching one of `patterns` (SQL `LIKE` patterns, which
    /// ignore ASCII case), if any.
    pub fn first_log_match(
        &self,
        build_id: i64,
        patterns: &[&str],
    ) -> Result<Option<i64>, StoreError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        self.with(|conn| {
            let matches = vec!["line LIKE ?"; patterns.len()].join(" OR ");
            let sql = format!(
                "SELECT seq FROM build_log WHERE build_id = ? AND ({matches}) ORDER BY seq LIMIT 1"
            );
            let mut values: Vec<&dyn ToSql> = vec![&build_id];
            values.extend(patterns.iter().map(|p| p as &dyn ToSql));
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query_map(params_from_iter(values), |row| row.get(0))?;
            Ok(rows.next().transpose()?)
        })
    }
}

enum Window {
    After(i64),
    Before(i64),
}

fn query_window(
    conn: &Connection,
    build_id: i64,
    filter: &LogFilter,
    window: Window,
    limit: usize,
) -> Result<Vec<LogLine>, StoreError> {
    let mut sql = String::from("SELECT seq, at_ms, step, line FROM build_log WHERE build_id = ?");
    let mut values: Vec<Box<dyn ToSql>> = vec![Box::new(build_id)];
    if let Some(step) = &filter.step {
        sql.push_str(" AND step = ?");
        values.push(Box::new(step.clone()));
    }
    if let Some(text) = &filter.text {
        sql.push_str(r" AND line LIKE ? ESCAPE '\'");
        values.push(Box::new(like_pattern(text)));
    }
    match window {
        Window::After(after) => {
            sql.push_str(" AND seq > ? ORDER BY seq LIMIT ?");
            values.push(Box::new(after));
        }
        Window::Before(before) => {
            sql.push_str(" AND seq < ? ORDER BY seq DESC LIMIT ?");
            values.push(Box::new(before));
        }
    }
    values.push(Box::new(limit as i64));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values.iter()), |row| {
        Ok(LogLine {
            seq: row.get(0)?,
            at_ms: row.get(1)?,
            step: row.get(2)?,
            line: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A `LIKE` pattern matching lines that contain `text` literally.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
