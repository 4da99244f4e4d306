//! Users, namespaces and their members, API tokens, web sessions, the audit log and server
//! settings. Secrets arrive here already hashed; this module never sees one in the clear.

use rusqlite::{OptionalExtension, Row, params};

use super::Db;
use crate::{StoreError, now};

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    /// argon2id PHC string of the web password.
    pub password_hash: String,
    /// argon2id PHC string of the registry password; `None` until one is made.
    pub registry_password_hash: Option<String>,
    pub created_at: i64,
    /// One of buildgrid's own users (builds and deploys pull as them): listed nowhere, changed
    /// by no one.
    pub system: bool,
}

const USER_COLUMNS: &str =
    "id, name, admin, password_hash, registry_password_hash, created_at, system";

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        admin: row.get(2)?,
        password_hash: row.get(3)?,
        registry_password_hash: row.get(4)?,
        created_at: row.get(5)?,
        system: row.get(6)?,
    })
}

#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    pub public: bool,
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub user_id: i64,
    pub name: &'a str,
    /// SHA-256 of the secret, hex.
    pub hash: &'a str,
    /// Scopes separated by spaces, e.g. `pull:acme build:acme/shop`.
    pub scopes: &'a str,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: Option<i64>,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const TOKEN_COLUMNS: &str =
    "id, user_id, name, scopes, created_at, last_used_at, expires_at, revoked_at";

fn token_row(row: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        scopes: row.get(3)?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: i64,
    /// A user name, `token <id> of <user>`, or `anonymous`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub client: Option<String>,
    /// How often it happened within a few seconds from `at` (requests of one pull).
    pub count: u64,
}

impl Db {
    pub fn create_user(
        &self,
        name: &str,
        admin: bool,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "INSERT INTO users (name, admin, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO NOTHING RETURNING {USER_COLUMNS}"
            );
            conn.prepare_cached(&sql)?
                .query_row(params![name, admin, password_hash, now()], user_row)
                .optional()?
                .ok_or_else(|| StoreError::Conflict(format!("user {name} exists already")))
        })
    }

    /// The system user `name` (see [`User::system`]), made if missing; a user of that name made
    /// before becomes one. One statement, so builds and deploys starting together find one user.
    pub fn system_user(&self, name: &str, password_hash: &str) -> Result<User, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "INSERT INTO users (name, admin, password_hash, created_at, system)
                 VALUES (?1, 0, ?2, ?3, 1)
                 ON CONFLICT (name) DO UPDATE SET system = 1 RETURNING {USER_COLUMNS}"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![name, password_hash, now()], user_row)?)
        })
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([name], user_row)
                .optional()?)
        })
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], user_row)
                .optional()?)
        })
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE system = 0 ORDER BY name");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([], user_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn has_users(&self) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM users WHERE system = 0")?
                .exists([])?)
        })
    }

    /// Sets the user's web password and ends every web session of the user: a session opened
    /// with the old password does not outlive it.
    pub fn set_password_hash(&self, user_id: i64, hash: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                params![user_id, hash],
            )?;
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn set_registry_password_hash(&self, user_id: i64, hash: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE users SET registry_password_hash = ?2 WHERE id = ?1",
                params![user_id, hash],
            )?;
            Ok(())
        })
    }

    /// Records a namespace (private) if it is not known yet.
    pub fn ensure_namespace(&self, name: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "INSERT INTO namespaces (name, public, created_at) VALUES (?1, 0, ?2)
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![name, now()])?;
            Ok(())
        })
    }

    pub fn set_namespace_public(&self, name: &str, public: bool) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO namespaces (name, public, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET public = excluded.public",
                params![name, public, now()],
            )?;
            Ok(())
        })
    }

    pub fn namespace_is_public(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM namespaces WHERE name = ?1 AND public = 1")?
                .exists([name])?)
        })
    }

    pub fn namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT n.name, n.public, group_concat(u.name, ' ')
                 FROM namespaces n
                 LEFT JOIN members m ON m.namespace = n.name
                 LEFT JOIN users u ON u.id = m.user_id AND u.system = 0
                 GROUP BY n.name ORDER BY n.name",
            )?;
            let rows = stmt.query_map([], |row| {
                let members: Option<String> = row.get(2)?;
                let mut members: Vec<String> = members
                    .unwrap_or_default()
                    .split(' ')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                members.sort();
                Ok(Namespace {
                    name: row.get(0)?,
                    public: row.get(1)?,
                    members,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn add_member(&self, namespace: &str, user_id: i64) -> Result<(), StoreError> {
        self.ensure_namespace(namespace)?;
        self.with(|conn| {
            conn.execute(
                "INSERT INTO members (namespace, user_id) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
                params![namespace, user_id],
            )?;
            Ok(())
        })
    }

    /// Whether the user was a member.
    pub fn remove_member(&self, namespace: &str, user_id: i64) -> Result<bool, StoreError> {
        self.with(|conn| {
            let removed = conn.execute(
                "DELETE FROM members WHERE namespace = ?1 AND user_id = ?2",
                params![namespace, user_id],
            )?;
            Ok(removed > 0)
        })
    }

    pub fn is_member(&self, namespace: &str, user_id: i64) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM members WHERE namespace = ?1 AND user_id = ?2")?
                .exists(params![namespace, user_id])?)
        })
    }

    /// Stores a token by the hash of its secret.
    pub fn create_token(&self, new: &NewToken<'_>) -> Result<i64, StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO tokens (user_id, name, hash, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    new.user_id,
                    new.name,
                    new.hash,
                    new.scopes,
                    now(),
                    new.expires_at
                ],
            )?;
            Ok(conn.last_insert_rowid())
        })
    }

    /// A token by the hash of its secret, whether live or not: callers say why one is refused.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([hash], token_row)
                .optional()?)
        })
    }

    pub fn token_by_id(&self, id: i64) -> Result<Option<TokenRow>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], token_row)
                .optional()?)
        })
    }

    /// Tokens of one user, or of everyone but the system users; newest first.
    pub fn tokens(&self, user_id: Option<i64>) -> Result<Vec<TokenRow>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens
                 WHERE (?1 IS NULL OR user_id = ?1)
                   AND (user_id IS NULL OR user_id NOT IN (SELECT id FROM users WHERE system = 1))
                 ORDER BY id DESC"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([user_id], token_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn touch_token(&self, id: i64, at: i64) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1")?
                .execute(params![id, at])?;
            Ok(())
        })
    }

    /// Revokes a live token (of `user_id` when given); whether one was revoked.
    pub fn revoke_token(&self, id: i64, user_id: Option<i64>) -> Result<bool, StoreError> {
        self.with(|conn| {
            let revoked = conn.execute(
                "UPDATE tokens SET revoked_at = ?3
                 WHERE id = ?1 AND revoked_at IS NULL AND (?2 IS NULL OR user_id = ?2)",
                params![id, user_id, now()],
            )?;
            Ok(revoked > 0)
        })
    }

    /// Deletes a token (a build's or deploy's, when it ends); whether there was one.
    pub fn delete_token(&self, id: i64) -> Result<bool, StoreError> {
        self.with(|conn| Ok(conn.execute("DELETE FROM tokens WHERE id = ?1", [id])? > 0))
    }

    pub fn has_tokens(&self) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM tokens WHERE revoked_at IS NULL")?
                .exists([])?)
        })
    }

    /// Gives tokens made before users existed to `user_id`.
    pub fn adopt_orphan_tokens(&self, user_id: i64) -> Result<usize, StoreError> {
        self.with(|conn| {
            Ok(conn.execute(
                "UPDATE tokens SET user_id = ?1 WHERE user_id IS NULL",
                [user_id],
            )?)
        })
    }

    pub fn create_session(
        &self,
        hash: &str,
        user_id: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "DELETE FROM sessions WHERE expires_at <= ?1",
                params![now()],
            )?;
            conn.execute(
                "INSERT INTO sessions (hash, user_id, csrf, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, user_id, csrf, now(), expires_at],
            )?;
            Ok(())
        })
    }

    /// The user and CSRF secret of a live session.
    pub fn session(&self, hash: &str) -> Result<Option<(User, String)>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {}, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.hash = ?1 AND s.expires_at > ?2",
                USER_COLUMNS
                    .split(", ")
                    .map(|c| format!("u.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![hash, now()], |row| {
                    Ok((user_row(row)?, row.get(7)?))
                })
                .optional()?)
        })
    }

    pub fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute("DELETE FROM sessions WHERE hash = ?1", [hash])?;
            Ok(())
        })
    }

    pub fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.with(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO audit (at, actor, action, target, client, count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for entry in entries {
                    stmt.execute(params![
                        entry.at,
                        entry.actor,
                        entry.action,
                        entry.target,
                        entry.client,
                        entry.count as i64
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The newest audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, actor, action, target, client, count FROM audit
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |row| {
                Ok(AuditEntry {
                    at: row.get(0)?,
                    actor: row.get(1)?,
                    action: row.get(2)?,
                    target: row.get(3)?,
                    client: row.get(4)?,
                    count: row.get::<_, i64>(5)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()?)
        })
    }

    /// This install's id: random, made once and kept, so that what it creates on an engine
    /// shared with other installs is told apart from theirs.
    pub fn install_id(&self) -> Result<String, StoreError> {
        if let Some(id) = self.setting("install_id")? {
            return Ok(id);
        }
        self.setting_or_insert("install_id", || {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).expect("the operating system's random source failed");
            hex::encode(bytes)
        })
    }

    /// The value of a setting, storing `make()` first when there is none.
    pub fn setting_or_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx
                .query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()?;
            let value = match existing {
                Some(value) => value,
                None => {
                    let value = make();
                    tx.execute(
                        "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                        params![key, value],
                    )?;
                    value
                }
            };
            tx.commit()?;
            Ok(value)
        })
    }
}
