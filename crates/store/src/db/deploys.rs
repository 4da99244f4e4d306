//! Servers, services, deploys and their logs.

use rusqlite::{OptionalExtension, Row, params};

use super::Db;
use super::builds::now_ms;
use crate::{Lease, Secrets, StoreError, now};

#[derive(Debug, Clone)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub docker_url: String,
    /// Connects with TLS and the client files in `<data>/servers/<name>/`.
    pub tls: bool,
    /// Connects over SSH with the key `<data>/servers/<name>/ssh_key`.
    pub ssh_key: bool,
    pub engine_version: String,
    pub api_version: String,
}

/// What reaching a server needs beside its URL (see [`Server`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerAccess {
    pub tls: bool,
    pub ssh_key: bool,
}

#[derive(Debug, Clone)]
pub struct ServiceRow {
    pub id: i64,
    pub app_id: i64,
    pub name: String,
    /// JSON, read by the deploy crate. The values of its `secret_env` pairs are sealed in the
    /// database (`secrets.rs`) and plain here.
    pub spec: String,
}

/// What services' secret env values are sealed for.
const SECRET_ENV: &str = "service secret env";

/// `spec` with the value of each `secret_env` pair replaced by `change(value)` (`None` keeps
/// it), and how many changed. A spec that is not such JSON is kept as it is.
fn map_secret_env(
    spec: &str,
    change: impl Fn(&str) -> Result<Option<String>, StoreError>,
) -> Result<(String, usize), StoreError> {
    let Ok(mut json) = serde_json::from_str::<serde_json::Value>(spec) else {
        return Ok((spec.to_owned(), 0));
    };
    let Some(pairs) = json.get_mut("secret_env").and_then(|v| v.as_array_mut()) else {
        return Ok((spec.to_owned(), 0));
    };
    let mut changed = 0;
    for pair in pairs {
        let Some(value) = pair.get_mut(1) else {
            continue;
        };
        let Some(text) = value.as_str() else {
            continue;
        };
        if let Some(new) = change(text)? {
            *value = serde_json::Value::String(new);
            changed += 1;
        }
    }
    if changed == 0 {
        return Ok((spec.to_owned(), 0));
    }
    Ok((json.to_string(), changed))
}

#[derive(Debug, Clone)]
pub struct Deploy {
    pub id: i64,
    pub app_id: i64,
    pub build_id: i64,
    pub trigger: String,
    pub state: String,
    pub reason: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// What one service of a deploy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployImage {
    pub deploy_id: i64,
    pub service: String,
    pub build_id: i64,
    pub image_ref: String,
    pub digest: String,
}

/// A line of a deploy's log, and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployLine {
    pub seq: i64,
    pub at_ms: i64,
    pub server: Option<String>,
    pub service: Option<String>,
    pub container: Option<String>,
    /// `deploy`, `health`, `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// Which lines of a deploy's log: each given field must match.
#[derive(Debug, Clone, Default)]
pub struct DeployLogFilter {
    pub server: Option<String>,
    pub service: Option<String>,
    pub container: Option<String>,
}

/// Why a deploy whose lease lapsed was interrupted.
const LAPSED: &str = "interrupted: the process running it stopped (its lease lapsed)";

fn mark_interrupted(conn: &rusqlite::Connection, id: i64, reason: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE deploys SET state = 'interrupted', finished_at = ?2, reason = ?3 WHERE id = ?1",
        params![id, now(), reason],
    )?;
    Ok(())
}

fn server_row(row: &Row<'_>) -> rusqlite::Result<Server> {
    Ok(Server {
        id: row.get(0)?,
        name: row.get(1)?,
        docker_url: row.get(2)?,
        engine_version: row.get(3)?,
        api_version: row.get(4)?,
        tls: row.get(5)?,
        ssh_key: row.get(6)?,
    })
}

fn deploy_row(row: &Row<'_>) -> rusqlite::Result<Deploy> {
    Ok(Deploy {
        id: row.get(0)?,
        app_id: row.get(1)?,
        build_id: row.get(2)?,
        trigger: row.get(3)?,
        state: row.get(4)?,
        reason: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
    })
}

const DEPLOY_COLUMNS: &str =
    "id, app_id, build_id, trigger, state, reason, started_at, finished_at";

impl Db {
    pub fn add_server(
        &self,
        name: &str,
        docker_url: &str,
        access: ServerAccess,
        engine_version: &str,
        api_version: &str,
    ) -> Result<Server, StoreError> {
        self.with(|conn| {
            let inserted = conn.execute(
                "INSERT INTO servers
                     (name, docker_url, tls, ssh_key, engine_version, api_version, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING",
                params![
                    name,
                    docker_url,
                    access.tls,
                    access.ssh_key,
                    engine_version,
                    api_version,
                    now()
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "server {name} exists already"
                )));
            }
            Ok(Server {
                id: conn.last_insert_rowid(),
                name: name.to_owned(),
                docker_url: docker_url.to_owned(),
                tls: access.tls,
                ssh_key: access.ssh_key,
                engine_version: engine_version.to_owned(),
                api_version: api_version.to_owned(),
            })
        })
    }

    pub fn servers(&self) -> Result<Vec<Server>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, name, docker_url, engine_version, api_version, tls, ssh_key
                 FROM servers ORDER BY name",
            )?;
            let rows = stmt.query_map([], server_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Stores a service; the values of its spec's `secret_env` are sealed first.
    pub fn add_service(&self, app_id: i64, name: &str, spec: &str) -> Result<i64, StoreError> {
        let (spec, _) =
            map_secret_env(spec, |value| self.secrets.seal(SECRET_ENV, value).map(Some))?;
        self.with(|conn| {
            let inserted = conn.execute(
                "INSERT INTO services (app_id, name, spec, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app_id, name) DO NOTHING",
                params![app_id, name, spec, now()],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "service {name} exists already"
                )));
            }
            Ok(conn.last_insert_rowid())
        })
    }

    pub fn services(&self, app_id: i64) -> Result<Vec<ServiceRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, app_id, name, spec FROM services WHERE app_id = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map([app_id], |row| {
                Ok(ServiceRow {
                    id: row.get(0)?,
                    app_id: row.get(1)?,
                    name: row.get(2)?,
                    spec: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?
        .into_iter()
        .map(|mut row| {
            row.spec = map_secret_env(&row.spec, |value| match Secrets::is_sealed(value) {
                true => self.secrets.open(SECRET_ENV, value).map(Some),
                false => Ok(None),
            })?
            .0;
            Ok(row)
        })
        .collect()
    }

    /// Seals the secret env values of services stored in plain text by an earlier buildgrid,
    /// erasing the plain text from the database file and its write-ahead log.
    pub(crate) fn seal_plain_service_secrets(&self) -> Result<(), StoreError> {
        let rows: Vec<(i64, String)> = self.with(|conn| {
            let mut stmt = conn.prepare("SELECT id, spec FROM services")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let mut sealed = Vec::new();
        for (id, spec) in rows {
            let (spec, changed) = map_secret_env(&spec, |value| match Secrets::is_sealed(value) {
                true => Ok(None),
                false => self.secrets.seal(SECRET_ENV, value).map(Some),
            })?;
            if changed > 0 {
                sealed.push((id, spec, changed));
            }
        }
        if sealed.is_empty() {
            return Ok(());
        }
        self.with(|conn| {
            // Overwrite the old rows' bytes rather than leaving them on free pages.
            conn.pragma_update(None, "secure_delete", "ON")?;
            let tx = conn.transaction()?;
            for (id, spec, _) in &sealed {
                tx.execute(
                    "UPDATE services SET spec = ?1 WHERE id = ?2",
                    params![spec, id],
                )?;
            }
            tx.commit()?;
            // Copy the new pages into the database and empty the log that held the old ones.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })?;
        let values: usize = sealed.iter().map(|(_, _, changed)| changed).sum();
        tracing::info!(
            services = sealed.len(),
            values,
            "sealed the plain-text secret env values of services"
        );
        Ok(())
    }

    /// Starts a deploy of `build_id` holding `lease`, unless one of the same app is running
    /// with a live lease: `Err(Conflict)`. A running one whose lease lapsed is marked
    /// interrupted first; its containers are the next deploy's old ones.
    pub fn start_deploy(
        &self,
        app_id: i64,
        build_id: i64,
        trigger: &str,
        lease: &Lease,
    ) -> Result<Deploy, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now_ms = now_ms();
            let running: Option<(i64, Option<i64>)> = tx
                .query_row(
                    "SELECT id, lease_until FROM deploys WHERE app_id = ?1 AND state = 'running'",
                    [app_id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some((id, until)) = running {
                if until.is_some_and(|until| until > now_ms) {
                    return Err(StoreError::Conflict(format!(
                        "deploy {id} of this app is running: deploys of one app run one at a time"
                    )));
                }
                mark_interrupted(&tx, id, LAPSED)?;
            }
            let at = now();
            tx.execute(
                "INSERT INTO deploys (app_id, build_id, trigger, state, started_at, lease_owner,
                    lease_until)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
                params![
                    app_id,
                    build_id,
                    trigger,
                    at,
                    lease.owner,
                    lease.until(now_ms)
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Deploy {
                id,
                app_id,
                build_id,
                trigger: trigger.to_owned(),
                state: "running".into(),
                reason: None,
                started_at: at,
                finished_at: None,
            })
        })
    }

    /// Renews the lease of running deploy `id` for another term of `lease`; false when the
    /// deploy no longer runs under this owner's lease (it ended, or was judged interrupted).
    pub fn renew_deploy_lease(&self, id: i64, lease: &Lease) -> Result<bool, StoreError> {
        self.with(|conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE deploys SET lease_until = ?3
                     WHERE id = ?1 AND state = 'running' AND lease_owner = ?2",
                )?
                .execute(params![id, lease.owner, lease.until(now_ms())])?;
            Ok(changed == 1)
        })
    }

    /// Marks every running deploy whose lease lapsed interrupted, and returns them: what a
    /// stopped or lost process left running.
    pub fn interrupt_lapsed_deploys(&self) -> Result<Vec<Deploy>, StoreError> {
        self.interrupt_deploys_where("ifnull(lease_until, 0) <= ?1", &now_ms(), LAPSED)
    }

    /// Marks the running deploys held by `owner` interrupted with `reason`, and returns them:
    /// what a process that stops does with its own.
    pub fn interrupt_deploys_of(
        &self,
        owner: &str,
        reason: &str,
    ) -> Result<Vec<Deploy>, StoreError> {
        self.interrupt_deploys_where("lease_owner = ?1", &owner, reason)
    }

    fn interrupt_deploys_where(
        &self,
        condition: &str,
        value: &dyn rusqlite::ToSql,
        reason: &str,
    ) -> Result<Vec<Deploy>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<i64> = {
                let sql = format!("SELECT id FROM deploys WHERE state = 'running' AND {condition}");
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map([value], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut interrupted = Vec::new();
            for id in ids {
                mark_interrupted(&tx, id, reason)?;
                let sql = format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id = ?1");
                interrupted.push(tx.query_row(&sql, [id], deploy_row)?);
            }
            tx.commit()?;
            Ok(interrupted)
        })
    }

    pub fn finish_deploy(
        &self,
        id: i64,
        state: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE deploys SET state = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1",
                params![id, state, reason, now()],
            )?;
            Ok(())
        })
    }

    pub fn deploy(&self, id: i64) -> Result<Option<Deploy>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], deploy_row)
                .optional()?)
        })
    }

    /// The newest deploys of an app, newest first.
    pub fn deploys_of_app(&self, app_id: i64, limit: usize) -> Result<Vec<Deploy>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE app_id = ?1 ORDER BY id DESC LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![app_id, limit as i64], deploy_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The newest deploy of each of these builds of app `app_id`, by deploy id; builds never
    /// deployed, and other apps' builds, are left out.
    pub fn newest_deploys_of_builds(
        &self,
        app_id: i64,
        builds: &[i64],
    ) -> Result<Vec<Deploy>, StoreError> {
        if builds.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|conn| {
            let marks = vec!["?"; builds.len()].join(",");
            let sql = format!(
                "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id IN
                    (SELECT MAX(id) FROM deploys WHERE app_id = ? AND build_id IN ({marks})
                     GROUP BY build_id)
                 ORDER BY id"
            );
            let mut stmt = conn.prepare(&sql)?;
            let values = std::iter::once(app_id).chain(builds.iter().copied());
            let rows = stmt.query_map(rusqlite::params_from_iter(values), deploy_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Per deployed app, its newest succeeded deploy (what runs) and, when a later one has not
    /// succeeded (running, failed, interrupted), that one too; by app, then by id.
    pub fn deployed_per_app(&self) -> Result<Vec<Deploy>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id IN
                    (SELECT MAX(id) FROM deploys WHERE state = 'succeeded' GROUP BY app_id
                     UNION SELECT MAX(id) FROM deploys GROUP BY app_id)
                 ORDER BY app_id, id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([], deploy_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Where services run: `(app id, service, servers)` for every service, by app and name,
    /// read from the specs' `servers` without opening their secrets.
    pub fn service_servers(&self) -> Result<Vec<(i64, String, Vec<String>)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT app_id, name, spec FROM services ORDER BY app_id, name")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut services = Vec::new();
            for row in rows {
                let (app_id, name, spec) = row?;
                let servers = serde_json::from_str::<serde_json::Value>(&spec)
                    .ok()
                    .and_then(|spec| {
                        let names = spec.get("servers")?.as_array()?;
                        Some(
                            names
                                .iter()
                                .filter_map(|n| n.as_str().map(str::to_owned))
                                .collect(),
                        )
                    })
                    .unwrap_or_default();
                services.push((app_id, name, servers));
            }
            Ok(services)
        })
    }

    /// Records what each service of a deploy runs.
    pub fn record_deploy_images(&self, images: &[DeployImage]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            for image in images {
                tx.execute(
                    "INSERT OR REPLACE INTO deploy_images
                        (deploy_id, service, build_id, image_ref, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        image.deploy_id,
                        image.service,
                        image.build_id,
                        image.image_ref,
                        image.digest
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// What the services of these deploys run, by deploy and service.
    pub fn deploy_images(&self, deploys: &[i64]) -> Result<Vec<DeployImage>, StoreError> {
        if deploys.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|conn| {
            let marks = vec!["?"; deploys.len()].join(",");
            let sql = format!(
                "SELECT deploy_id, service, build_id, image_ref, digest FROM deploy_images
                 WHERE deploy_id IN ({marks}) ORDER BY deploy_id, service"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(deploys), |row| {
                Ok(DeployImage {
                    deploy_id: row.get(0)?,
                    service: row.get(1)?,
                    build_id: row.get(2)?,
                    image_ref: row.get(3)?,
                    digest: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn append_deploy_line(&self, deploy_id: i64, line: &DeployLine) -> Result<i64, StoreError> {
        self.with(|conn| {
            let seq: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM deploy_log WHERE deploy_id = ?1")?
                .query_row([deploy_id], |row| row.get(0))?;
            conn.prepare_cached(
                "INSERT INTO deploy_log (deploy_id, seq, at_ms, server, service, container, stream, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                deploy_id,
                seq,
                line.at_ms,
                line.server,
                line.service,
                line.container,
                line.stream,
                line.line
            ])?;
            Ok(seq)
        })
    }

    /// Lines after `after` that match `filter`, oldest first.
    pub fn deploy_log(
        &self,
        deploy_id: i64,
        after: i64,
        filter: &DeployLogFilter,
        limit: usize,
    ) -> Result<Vec<DeployLine>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at_ms, server, service, container, stream, line FROM deploy_log
                 WHERE deploy_id = ?1 AND seq > ?2
                   AND (?3 IS NULL OR server = ?3)
                   AND (?4 IS NULL OR service = ?4)
                   AND (?5 IS NULL OR container = ?5)
                 ORDER BY seq LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![
                    deploy_id,
                    after,
                    filter.server,
                    filter.service,
                    filter.container,
                    limit as i64
                ],
                |row| {
                    Ok(DeployLine {
                        seq: row.get(0)?,
                        at_ms: row.get(1)?,
                        server: row.get(2)?,
                        service: row.get(3)?,
                        container: row.get(4)?,
                        stream: row.get(5)?,
                        line: row.get(6)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
