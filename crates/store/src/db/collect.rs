//! The SQL of garbage collection: the rows it decides on, the deletions, and the tombstones of
//! blobs whose rows are gone and whose files are yet to go (see `gc`).

use std::collections::HashSet;

use buildgrid_core::Digest;
use rusqlite::{Connection, Transaction, params};

use super::{Db, digest_column};
use crate::gc::plan::{
    self, BuildNode, DeletedBranchNode, DeployNode, Graph, ManifestNode, Plan, TagNode,
};
use crate::{StoreError, now};

impl Db {
    /// Decides what to delete and, unless `dry_run`, deletes those rows and records the blobs
    /// whose rows went as tombstones, in one transaction that also read the rows decided on.
    /// `read` gives a manifest's bytes. The caller holds the collection lock (`gc`).
    pub(crate) fn collect_rows(
        &self,
        read: &dyn Fn(&Digest) -> Result<Vec<u8>, StoreError>,
        dry_run: bool,
    ) -> Result<(Graph, Plan), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let graph = read_graph(&tx, read)?;
            let plan = plan::plan(&graph);
            if !dry_run {
                delete(&tx, &plan)?;
                tx.commit()?;
            }
            Ok((graph, plan))
        })
    }

    /// The rows a collection would decide on now, read in one read transaction without the
    /// collection lock: what pages show of the next collection.
    pub(crate) fn collection_graph(
        &self,
        read: &dyn Fn(&Digest) -> Result<Vec<u8>, StoreError>,
    ) -> Result<Graph, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            read_graph(&tx, read)
        })
    }

    /// Up to `limit` tombstones, each with whether a blob row names its digest again.
    pub(crate) fn tombstones(&self, limit: usize) -> Result<Vec<(Digest, bool)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.digest, EXISTS (SELECT 1 FROM blobs b WHERE b.digest = t.digest)
                 FROM gc_tombstones t ORDER BY t.digest LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |row| {
                Ok((digest_column(row, 0)?, row.get(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Every tombstoned digest.
    pub(crate) fn all_tombstones(&self) -> Result<HashSet<Digest>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT digest FROM gc_tombstones")?;
            let rows = stmt.query_map([], |row| digest_column(row, 0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Removes the tombstones of blobs whose files are gone (or whose rows came back).
    pub(crate) fn drop_tombstones(&self, digests: &[Digest]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            for digest in digests {
                tx.prepare_cached("DELETE FROM gc_tombstones WHERE digest = ?1")?
                    .execute([digest.to_string()])?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

fn read_graph(
    tx: &Connection,
    read: &dyn Fn(&Digest) -> Result<Vec<u8>, StoreError>,
) -> Result<Graph, StoreError> {
    let mut graph = Graph {
        now: now(),
        rules: super::retention::retention_rules(tx)?,
        ..Graph::default()
    };
    let mut stmt = tx.prepare("SELECT id, name FROM repositories")?;
    graph.repos = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare("SELECT repo_id, digest, media_type, subject FROM manifests")?;
    let rows = stmt.query_map([], |row| {
        let subject: Option<String> = row.get(3)?;
        Ok((
            row.get::<_, i64>(0)?,
            digest_column(row, 1)?,
            subject.and_then(|s| Digest::parse(&s).ok()),
        ))
    })?;
    for row in rows {
        let (repo_id, digest, subject) = row?;
        let bytes = read(&digest)?;
        let document: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Unreadable {
                digest: digest.clone(),
                reason: e.to_string(),
            })?;
        let mut node = ManifestNode {
            repo_id,
            digest,
            subject,
            blobs: Vec::new(),
            children: Vec::new(),
        };
        for (role, reference) in crate::fsck::references(&document) {
            let Ok(reference) = Digest::parse(&reference) else {
                continue;
            };
            match role {
                "child manifest" => node.children.push(reference),
                _ => node.blobs.push(reference),
            }
        }
        graph.manifests.push(node);
    }
    let mut stmt = tx.prepare("SELECT repo_id, name, digest, branch FROM tags")?;
    graph.tags = stmt
        .query_map([], |row| {
            Ok(TagNode {
                repo_id: row.get(0)?,
                name: row.get(1)?,
                digest: digest_column(row, 2)?,
                branch: row.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare(
        "SELECT b.id, b.app_id, a.namespace, a.name, r.id, b.source_id, b.git_ref, b.state,
                b.commit_id, b.image_digest, b.finished_at, b.image_removed
         FROM builds b JOIN apps a ON a.id = b.app_id
         LEFT JOIN app_sources s ON s.id = b.source_id
         LEFT JOIN repositories r ON r.name = coalesce(s.image_repo, a.image_repo)",
    )?;
    graph.builds = stmt
        .query_map([], |row| {
            let namespace: String = row.get(2)?;
            let app: String = row.get(3)?;
            let state: String = row.get(7)?;
            let image: Option<String> = row.get(9)?;
            Ok(BuildNode {
                id: row.get(0)?,
                app_id: row.get(1)?,
                app: format!("{namespace}/{app}"),
                namespace,
                repo_id: row.get(4)?,
                source_id: row.get(5)?,
                git_ref: row.get(6)?,
                finished: !matches!(
                    state.as_str(),
                    "queued" | "fetching" | "building" | "storing"
                ),
                succeeded: state == "succeeded",
                commit_id: row.get(8)?,
                image_digest: image.and_then(|d| Digest::parse(&d).ok()),
                finished_at: row.get(10)?,
                image_removed: row.get(11)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare(
        "SELECT d.app_id, i.service, d.id, d.state = 'succeeded', i.build_id
         FROM deploy_images i JOIN deploys d ON d.id = i.deploy_id",
    )?;
    graph.deploy_images = stmt
        .query_map([], |row| {
            Ok(DeployNode {
                app_id: row.get(0)?,
                service: row.get(1)?,
                deploy_id: row.get(2)?,
                succeeded: row.get(3)?,
                build_id: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare("SELECT build_id FROM deploys WHERE state = 'running'")?;
    graph.running_deploys = stmt
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare("SELECT app_id, name, spec FROM services")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (app_id, service, spec) = row?;
        let spec: serde_json::Value = serde_json::from_str(&spec).unwrap_or_default();
        let servers = spec["servers"].as_array().into_iter().flatten();
        let servers = servers
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        graph.servers.insert((app_id, service), servers);
    }
    let mut stmt = tx.prepare(
        "SELECT d.app_id, a.namespace, a.name, d.source_id, r.id, d.branch, d.deleted_at
         FROM deleted_branches d JOIN apps a ON a.id = d.app_id
         LEFT JOIN app_sources s ON s.id = d.source_id
         LEFT JOIN repositories r ON r.name = coalesce(s.image_repo, a.image_repo)",
    )?;
    graph.deleted_branches = stmt
        .query_map([], |row| {
            let namespace: String = row.get(1)?;
            let app: String = row.get(2)?;
            Ok(DeletedBranchNode {
                app_id: row.get(0)?,
                app: format!("{namespace}/{app}"),
                namespace,
                source_id: row.get(3)?,
                repo_id: row.get(4)?,
                branch: row.get(5)?,
                deleted_at: row.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare("SELECT repo_id, digest FROM image_pins")?;
    graph.pins = stmt
        .query_map([], |row| Ok((row.get(0)?, digest_column(row, 1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare("SELECT digest, size FROM blobs")?;
    graph.blobs = stmt
        .query_map([], |row| Ok((digest_column(row, 0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = tx.prepare("SELECT repo_id, digest FROM repo_blobs")?;
    graph.repo_blobs = stmt
        .query_map([], |row| Ok((row.get(0)?, digest_column(row, 1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(graph)
}

/// Deletes the plan's rows, referring rows first, and tombstones its blobs.
fn delete(tx: &Transaction<'_>, plan: &Plan) -> Result<(), StoreError> {
    for (repo_id, name) in &plan.tags {
        tx.prepare_cached("DELETE FROM tags WHERE repo_id = ?1 AND name = ?2")?
            .execute(params![repo_id, name])?;
    }
    for (repo_id, digest) in &plan.manifests {
        let digest = digest.to_string();
        for sql in [
            "DELETE FROM downloads WHERE repo_id = ?1 AND digest = ?2",
            "DELETE FROM image_bases WHERE repo_id = ?1 AND digest = ?2",
            "DELETE FROM image_pins WHERE repo_id = ?1 AND digest = ?2",
            "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
        ] {
            tx.prepare_cached(sql)?.execute(params![repo_id, digest])?;
        }
    }
    for (repo_id, digest) in &plan.repo_blobs {
        tx.prepare_cached("DELETE FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2")?
            .execute(params![repo_id, digest.to_string()])?;
    }
    let at = now();
    for (digest, size) in &plan.blobs {
        let digest = digest.to_string();
        for sql in [
            "DELETE FROM archive_checksums WHERE digest = ?1",
            "DELETE FROM image_files WHERE digest = ?1",
            "DELETE FROM legacy_layer_paths
               WHERE diff_id IN (SELECT diff_id FROM layers WHERE digest = ?1)",
            "DELETE FROM layer_files WHERE diff_id IN (SELECT diff_id FROM layers WHERE digest = ?1)",
            "DELETE FROM layers WHERE digest = ?1",
            "DELETE FROM blobs WHERE digest = ?1",
        ] {
            tx.prepare_cached(sql)?.execute([&digest])?;
        }
        tx.prepare_cached(
            "INSERT INTO gc_tombstones (digest, size, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (digest) DO NOTHING",
        )?
        .execute(params![digest, size, at])?;
    }
    for id in &plan.builds {
        tx.prepare_cached("UPDATE builds SET image_removed = 1 WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(())
}
