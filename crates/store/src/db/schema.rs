//! The schema: migrations applied in order, counted by `PRAGMA user_version`.

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- An uncompressed layer (by diff id) and the stored blob that holds it compressed.
CREATE TABLE layers (
    diff_id     TEXT PRIMARY KEY,
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    media_type  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE manifests (
    repo_id        INTEGER NOT NULL REFERENCES repositories(id),
    digest         TEXT NOT NULL REFERENCES blobs(digest),
    media_type     TEXT NOT NULL,
    artifact_type  TEXT,
    subject        TEXT,
    annotations    TEXT,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_by_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;

-- Blobs (configs and layers) a repository may serve.
CREATE TABLE repo_blobs (
    repo_id  INTEGER NOT NULL REFERENCES repositories(id),
    digest   TEXT NOT NULL REFERENCES blobs(digest),
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;

CREATE TABLE tags (
    repo_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests(repo_id, digest)
) WITHOUT ROWID;

CREATE TABLE downloads (
    repo_id     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    count       INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests(repo_id, digest)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE apps (
    id              INTEGER PRIMARY KEY,
    namespace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    git_url         TEXT NOT NULL,
    branch          TEXT NOT NULL,
    dockerfile      TEXT NOT NULL,
    context         TEXT NOT NULL,
    build_args      TEXT NOT NULL,   -- JSON object
    image_repo      TEXT NOT NULL,
    webhook_secret  TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (namespace, name)
);

CREATE TABLE builds (
    id                INTEGER PRIMARY KEY,
    app_id            INTEGER NOT NULL REFERENCES apps(id),
    git_ref           TEXT NOT NULL,
    commit_id         TEXT,
    trigger           TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    force             INTEGER NOT NULL DEFAULT 0,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    commit_message    TEXT,
    commit_author     TEXT,
    image_ref         TEXT,
    image_digest      TEXT,
    queued_at         INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER
);
CREATE INDEX builds_by_app ON builds(app_id, id);
CREATE INDEX builds_by_state ON builds(state, id);
CREATE INDEX builds_by_commit ON builds(app_id, commit_id);

CREATE TABLE build_log (
    build_id  INTEGER NOT NULL REFERENCES builds(id),
    seq       INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    step      TEXT,
    line      TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
) WITHOUT ROWID;

-- The base images (Dockerfile FROM lines) of a stored image.
CREATE TABLE image_bases (
    repo_id  INTEGER NOT NULL REFERENCES repositories(id),
    digest   TEXT NOT NULL,
    base     TEXT NOT NULL,
    PRIMARY KEY (repo_id, digest, base)
) WITHOUT ROWID;

CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE TABLE webhook_deliveries (
    app_id       INTEGER NOT NULL REFERENCES apps(id),
    delivery     TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, delivery)
) WITHOUT ROWID;
"#,
    r#"
-- Where `docker save` (before Docker 25) put a layer, and which layer it was: the path names the
-- layer's place in its chain, so a later export of the same chain can skip it unread.
CREATE TABLE legacy_layer_paths (
    path     TEXT PRIMARY KEY,
    diff_id  TEXT NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- People. The web password and the registry password are separate secrets, both argon2id.
CREATE TABLE users (
    id                      INTEGER PRIMARY KEY,
    name                    TEXT NOT NULL UNIQUE,
    admin                   INTEGER NOT NULL DEFAULT 0,
    password_hash           TEXT NOT NULL,
    registry_password_hash  TEXT,
    created_at              INTEGER NOT NULL
);

-- A namespace without a row is private.
CREATE TABLE namespaces (
    name        TEXT PRIMARY KEY,
    public      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE members (
    namespace  TEXT NOT NULL REFERENCES namespaces(name),
    user_id    INTEGER NOT NULL REFERENCES users(id),
    PRIMARY KEY (namespace, user_id)
) WITHOUT ROWID;

-- Tokens made before users existed belong to the first admin (see `adopt_orphan_tokens`).
ALTER TABLE tokens ADD COLUMN user_id INTEGER REFERENCES users(id);
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;

CREATE TABLE sessions (
    hash        TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Who did what: pulls of private images, logins, credential and token changes.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    client  TEXT,
    count   INTEGER NOT NULL DEFAULT 1
);

-- Server-wide values, e.g. the key that signs registry bearer tokens.
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- The files of a layer (by diff id), listed at ingest: tar entries in a compact encoding
-- (see image/codec.rs), and the small files the image page reads (os-release).
CREATE TABLE layer_files (
    diff_id  TEXT NOT NULL UNIQUE REFERENCES layers(diff_id),
    entries  INTEGER NOT NULL,
    data     BLOB NOT NULL
);

-- What an image manifest's final file tree holds, computed at ingest. An image without a row
-- was stored before file lists were collected (or has a layer buildgrid cannot list).
CREATE TABLE image_files (
    digest      TEXT PRIMARY KEY REFERENCES blobs(digest),
    diff_ids    TEXT NOT NULL,   -- the layers, lowest first, one per line
    files       INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    os_release  TEXT
) WITHOUT ROWID;

-- Checksums of the `docker save` archive of an image manifest, computed on first request;
-- the archive names the image `repo_tag` (empty: no name).
CREATE TABLE archive_checksums (
    digest    TEXT NOT NULL REFERENCES blobs(digest),
    repo_tag  TEXT NOT NULL,
    size      INTEGER NOT NULL,
    md5       TEXT NOT NULL,
    sha1      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    sha512    TEXT NOT NULL,
    PRIMARY KEY (digest, repo_tag)
) WITHOUT ROWID;
"#,
    r#"
-- The web pages: an app's timeline filtered by branch or by state, a build's log by step.
CREATE INDEX builds_by_app_ref ON builds(app_id, git_ref, id);
CREATE INDEX builds_by_app_state ON builds(app_id, state, id);
CREATE INDEX build_log_by_step ON build_log(build_id, step, seq) WHERE step IS NOT NULL;
"#,
    r#"
-- Docker engines buildgrid deploys to.
CREATE TABLE servers (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    docker_url      TEXT NOT NULL,
    engine_version  TEXT NOT NULL,
    api_version     TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);

-- What runs of an app: one image (the app's), a command each, on servers.
CREATE TABLE services (
    id          INTEGER PRIMARY KEY,
    app_id      INTEGER NOT NULL REFERENCES apps(id),
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,   -- JSON: command, ports, env, replicas, health, stop grace, servers
    created_at  INTEGER NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE deploys (
    id           INTEGER PRIMARY KEY,
    app_id       INTEGER NOT NULL REFERENCES apps(id),
    build_id     INTEGER NOT NULL REFERENCES builds(id),
    trigger      TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    pid          INTEGER NOT NULL   -- the process running it, to tell an interrupted one
);
CREATE INDEX deploys_by_app ON deploys(app_id, id);

CREATE TABLE deploy_log (
    deploy_id  INTEGER NOT NULL REFERENCES deploys(id),
    seq        INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    server     TEXT,
    service    TEXT,
    container  TEXT,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL,
    PRIMARY KEY (deploy_id, seq)
) WITHOUT ROWID;
"#,
    r#"
-- server_connection: what reaching a server needs beside its URL. The files themselves are in
-- <data>/servers/<name>/: ca.pem, cert.pem and key.pem for TLS, ssh_key for SSH.
ALTER TABLE servers ADD COLUMN tls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE servers ADD COLUMN ssh_key INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- sources: git repositories an app's services build from beside the app's own. Each builds
-- one image, <namespace>/<app>.<repo>; a build of a source names it.
CREATE TABLE app_sources (
    id         INTEGER PRIMARY KEY,
    app_id     INTEGER NOT NULL REFERENCES apps(id),
    git_url    TEXT NOT NULL,
    branch     TEXT NOT NULL,
    dockerfile TEXT NOT NULL,
    context    TEXT NOT NULL,
    image_repo TEXT NOT NULL,
    UNIQUE (app_id, image_repo)
);
ALTER TABLE builds ADD COLUMN source_id INTEGER REFERENCES app_sources(id);
"#,
    r#"
-- deploy_images: the build and image each service of a deploy runs.
CREATE TABLE deploy_images (
    deploy_id  INTEGER NOT NULL REFERENCES deploys(id),
    service    TEXT NOT NULL,
    build_id   INTEGER NOT NULL REFERENCES builds(id),
    image_ref  TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (deploy_id, service)
) WITHOUT ROWID;
"#,
    r#"
-- logs_public: whether anyone who may read a public namespace also sees its build logs, deploy
-- logs and running containers; by default only members and admins do.
ALTER TABLE namespaces ADD COLUMN logs_public INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- moving branch tags: a tag a builder moves to the newest successful build of a branch names
-- the branch and that build; tags of commits and imports have neither and never move with one.
ALTER TABLE tags ADD COLUMN branch TEXT;
ALTER TABLE tags ADD COLUMN build_id INTEGER;
-- downloads.count counts pulls (manifest GETs); archives counts image archive downloads.
ALTER TABLE downloads ADD COLUMN archives INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- system: buildgrid's own users, which builds and deploys pull as. They are listed nowhere
-- (users, members, tokens) and changed by no one; their tokens live as long as the build or
-- deploy that made them, and the revoked ones earlier versions kept go.
ALTER TABLE users ADD COLUMN system INTEGER NOT NULL DEFAULT 0;
UPDATE users SET system = 1 WHERE name IN ('buildgrid-builder', 'buildgrid-deployer');
DELETE FROM tokens WHERE revoked_at IS NOT NULL
    AND user_id IN (SELECT id FROM users WHERE system = 1);
"#,
    r#"
-- retention: how long builds' images stay, per app ('<ns>/<app>'), namespace ('<ns>') or
-- server-wide (''); a NULL value inherits from the wider scope (see gc).
CREATE TABLE retention (
    scope          TEXT PRIMARY KEY,
    keep_last      INTEGER,
    keep_days      INTEGER,
    keep_deployed  INTEGER
) WITHOUT ROWID;
-- image_pins: images kept whatever retention says: the image the tag named when it was pinned.
CREATE TABLE image_pins (
    repo_id    INTEGER NOT NULL REFERENCES repositories(id),
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    pinned_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, tag)
) WITHOUT ROWID;
-- gc_tombstones: blobs whose rows garbage collection deleted and whose files it has still to
-- delete (a collection that stopped; the next one, or serve starting, finishes it).
CREATE TABLE gc_tombstones (
    digest  TEXT PRIMARY KEY,
    size    INTEGER NOT NULL,
    at      INTEGER NOT NULL
) WITHOUT ROWID;
-- image_removed: the build's image was collected by retention; the build's row stays.
ALTER TABLE builds ADD COLUMN image_removed INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- engine_tag_removed: the name the build left in the Docker engine was removed after its image
-- was collected (or another build of its commit holds that name).
ALTER TABLE builds ADD COLUMN engine_tag_removed INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- deleted_branches: branches a push deleted upstream (to buildgrid's git or through a webhook),
-- per app and source (NULL: the app's own repository), and since when; a push of the branch
-- again removes its row. Retention stops keeping their builds drop_deleted_after days later.
CREATE TABLE deleted_branches (
    app_id      INTEGER NOT NULL REFERENCES apps(id),
    source_id   INTEGER REFERENCES app_sources(id),
    branch      TEXT NOT NULL,
    deleted_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX deleted_branches_by_branch
    ON deleted_branches(app_id, ifnull(source_id, 0), branch);
ALTER TABLE retention ADD COLUMN drop_deleted_after INTEGER;
"#,
    r#"
-- leases: a running build or deploy is alive while its lease holds. lease_owner is the token of
-- the process running it (random per process), lease_until when the lease lapses (unix ms)
-- unless that process renews it. A running row without a lease (left by an earlier version)
-- counts as lapsed. The process id deploys recorded told nothing across PID namespaces and
-- reuse, and goes.
ALTER TABLE deploys ADD COLUMN lease_owner TEXT;
ALTER TABLE deploys ADD COLUMN lease_until INTEGER;
ALTER TABLE deploys DROP COLUMN pid;
ALTER TABLE builds ADD COLUMN lease_owner TEXT;
ALTER TABLE builds ADD COLUMN lease_until INTEGER;
"#,
    r#"
-- Collection deletes a blob's layer rows by the blob's digest and their legacy paths by diff id:
-- without these, each deletion scans the whole table.
CREATE INDEX layers_by_digest ON layers(digest);
CREATE INDEX legacy_layer_paths_by_diff_id ON legacy_layer_paths(diff_id);
"#,
    r#"
-- Deleting a blob row checks the foreign keys that name it; manifests and repo_blobs are keyed
-- by repository first, so without these each check scans the whole table.
CREATE INDEX manifests_by_digest ON manifests(digest);
CREATE INDEX repo_blobs_by_digest ON repo_blobs(digest);
"#,
];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: applied,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}
