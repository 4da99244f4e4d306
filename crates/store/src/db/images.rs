//! Repositories, manifests, blobs, layers, tags and downloads.

use buildgrid_core::{Digest, RepoName, Tag};
use rusqlite::{OptionalExtension, params};

use super::files::{ImageFilesRow, LayerFilesRow};
use super::{Db, digest_column};
use crate::{StoreError, now};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// JSON object, as stored in the manifest.
    pub annotations: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<String>,
}

/// Everything one ingested image adds, written in one transaction.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub repo: RepoName,
    pub tag: Option<Tag>,
    /// Every blob the manifests reference (configs, layers) and the manifests themselves.
    pub blobs: Vec<BlobRow>,
    /// Digests of the configs and layers the repository may serve.
    pub repo_blobs: Vec<Digest>,
    pub layers: Vec<LayerRow>,
    /// Children first, the tagged manifest last.
    pub manifests: Vec<ManifestRecord>,
    /// `docker save` layer paths (`<v1 id>/layer.tar`) and their diff ids.
    pub legacy_paths: Vec<(String, Digest)>,
    /// File lists of layers listed by this ingest.
    pub layer_files: Vec<LayerFilesRow>,
    /// The final file trees of the image manifests whose every layer is listed.
    pub image_files: Vec<ImageFilesRow>,
}

/// A tag of a repository as its page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub name: String,
    pub digest: Digest,
    /// When the tag was made or last moved (seconds since the epoch).
    pub updated_at: i64,
    /// For a branch's moving tag: the branch, and the build it points at.
    pub branch: Option<String>,
    pub build_id: Option<i64>,
}

/// What moving a branch's tag did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagMove {
    /// The tag now names the build's image.
    Moved,
    /// A newer build of the branch holds the tag already.
    Newer(i64),
    /// The tag is not this branch's: a tag an import made, or another branch's whose name maps
    /// to the same tag. It is left as it is.
    Taken { branch: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DownloadCount {
    pub repo: RepoName,
    pub digest: Digest,
    pub count: u64,
}

impl Db {
    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT 1 FROM repositories WHERE name = ?1")?;
            Ok(stmt.exists([repo.as_str()])?)
        })
    }

    pub fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.digest, m.media_type, b.size
                 FROM repositories r
                 JOIN tags t ON t.repo_id = r.id
                 JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest
                 JOIN blobs b ON b.digest = m.digest
                 WHERE r.name = ?1 AND t.name = ?2",
            )?;
            Ok(stmt
                .query_row(params![repo.as_str(), tag.as_str()], manifest_row)
                .optional()?)
        })
    }

    pub fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.digest, m.media_type, b.size
                 FROM repositories r
                 JOIN manifests m ON m.repo_id = r.id
                 JOIN blobs b ON b.digest = m.digest
                 WHERE r.name = ?1 AND m.digest = ?2",
            )?;
            Ok(stmt
                .query_row(params![repo.as_str(), digest.to_string()], manifest_row)
                .optional()?)
        })
    }

    /// A config or layer blob the repository may serve.
    pub fn repo_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT b.digest, b.size
                 FROM repositories r
                 JOIN repo_blobs rb ON rb.repo_id = r.id
                 JOIN blobs b ON b.digest = rb.digest
                 WHERE r.name = ?1 AND rb.digest = ?2",
            )?;
            Ok(stmt
                .query_row(params![repo.as_str(), digest.to_string()], |row| {
                    Ok(BlobRow {
                        digest: digest_column(row, 0)?,
                        size: row.get(1)?,
                    })
                })
                .optional()?)
        })
    }

    /// Up to `limit` tags of `repo` after `last`, in lexical (byte) order.
    pub fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id
                 WHERE r.name = ?1 AND t.name > ?2
                 ORDER BY t.name LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![repo.as_str(), last.unwrap_or(""), limit as i64],
                |row| row.get(0),
            )?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }

    /// Up to `limit` tags of `repo`, newest first (made or moved last; of tags of one second,
    /// branch tags first, since a build moves its branch's tag after it tags its commit), then by
    /// name, starting after `before`: the last tag of the previous page, as its `updated_at`,
    /// whether it is a branch's tag, and its name.
    pub fn tags_newest_first(
        &self,
        repo: &RepoName,
        before: Option<(i64, bool, &str)>,
        limit: usize,
    ) -> Result<Vec<TagRow>, StoreError> {
        let (at, untracked, name) = match before {
            Some((at, branch, name)) => (at, !branch, name),
            None => (i64::MAX, false, ""),
        };
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.name, t.digest, t.updated_at, t.branch, t.build_id
                 FROM tags t JOIN repositories r ON r.id = t.repo_id
                 WHERE r.name = ?1 AND (t.updated_at < ?2 OR (t.updated_at = ?2 AND (
                     (t.branch IS NULL) > ?3 OR ((t.branch IS NULL) = ?3 AND t.name > ?4))))
                 ORDER BY t.updated_at DESC, t.branch IS NULL, t.name LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![repo.as_str(), at, untracked, name, limit as i64],
                tag_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The moving tags of `repo` (one per branch built), in tag order.
    pub fn branch_tags(&self, repo: &RepoName) -> Result<Vec<TagRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.name, t.digest, t.updated_at, t.branch, t.build_id
                 FROM tags t JOIN repositories r ON r.id = t.repo_id
                 WHERE r.name = ?1 AND t.branch IS NOT NULL ORDER BY t.name",
            )?;
            let rows = stmt.query_map([repo.as_str()], tag_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Points the moving tag `tag` of `branch` at the image `digest` that build `build_id`
    /// stored in `repo`, unless a newer build of the branch holds it already or the tag is not
    /// the branch's (an imported tag, another branch's). In one transaction; the manifest must
    /// be stored.
    pub fn move_branch_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        branch: &str,
        build_id: i64,
        digest: &Digest,
    ) -> Result<TagMove, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let repo_id: i64 = tx.query_row(
                "SELECT id FROM repositories WHERE name = ?1",
                [repo.as_str()],
                |row| row.get(0),
            )?;
            let held: Option<(Option<String>, Option<i64>)> = tx
                .query_row(
                    "SELECT branch, build_id FROM tags WHERE repo_id = ?1 AND name = ?2",
                    params![repo_id, tag.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let outcome = match held {
                Some((Some(holder), _)) if holder != branch => TagMove::Taken {
                    branch: Some(holder),
                },
                Some((None, _)) => TagMove::Taken { branch: None },
                Some((_, Some(newer))) if newer > build_id => TagMove::Newer(newer),
                _ => {
                    tx.execute(
                        "INSERT INTO tags (repo_id, name, digest, updated_at, branch, build_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (repo_id, name) DO UPDATE SET digest = ?3, updated_at = ?4,
                            branch = ?5, build_id = ?6",
                        params![
                            repo_id,
                            tag.as_str(),
                            digest.to_string(),
                            now(),
                            branch,
                            build_id
                        ],
                    )?;
                    TagMove::Moved
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// Up to `limit` repository names after `last`, in lexical order.
    pub fn repositories(
        &self,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
            )?;
            let rows =
                stmt.query_map(params![last.unwrap_or(""), limit as i64], |row| row.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }

    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.digest, m.media_type, b.size, m.artifact_type, m.annotations
                 FROM repositories r
                 JOIN manifests m ON m.repo_id = r.id
                 JOIN blobs b ON b.digest = m.digest
                 WHERE r.name = ?1 AND m.subject = ?2
                   AND (?3 IS NULL OR m.artifact_type = ?3)
                 ORDER BY m.created_at, m.digest",
            )?;
            let rows = stmt.query_map(
                params![repo.as_str(), subject.to_string(), artifact_type],
                |row| {
                    Ok(ReferrerRow {
                        digest: digest_column(row, 0)?,
                        media_type: row.get(1)?,
                        size: row.get(2)?,
                        artifact_type: row.get(3)?,
                        annotations: row.get(4)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The stored blob holding the layer with this uncompressed digest, if any.
    pub fn layer_by_diff_id(&self, diff_id: &Digest) -> Result<Option<LayerRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT l.diff_id, l.digest, b.size, l.media_type
                 FROM layers l JOIN blobs b ON b.digest = l.digest
                 WHERE l.diff_id = ?1",
            )?;
            Ok(stmt
                .query_row([diff_id.to_string()], |row| {
                    Ok(LayerRow {
                        diff_id: digest_column(row, 0)?,
                        digest: digest_column(row, 1)?,
                        size: row.get(2)?,
                        media_type: row.get(3)?,
                    })
                })
                .optional()?)
        })
    }

    /// The diff id of the layer `docker save` wrote at `path`, if an import saw it before.
    pub fn legacy_layer_path(&self, path: &str) -> Result<Option<Digest>, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT diff_id FROM legacy_layer_paths WHERE path = ?1")?
                .query_row([path], |row| digest_column(row, 0))
                .optional()?)
        })
    }

    /// Records an ingested image. Its blobs must already be published.
    pub fn commit_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        let at = now();
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)
                 ON CONFLICT (name) DO NOTHING",
                params![image.repo.as_str(), at],
            )?;
            tx.execute(
                "INSERT INTO namespaces (name, public, created_at) VALUES (?1, 0, ?2)
                 ON CONFLICT (name) DO NOTHING",
                params![image.repo.namespace(), at],
            )?;
            let repo_id: i64 = tx.query_row(
                "SELECT id FROM repositories WHERE name = ?1",
                [image.repo.as_str()],
                |row| row.get(0),
            )?;
            for blob in &image.blobs {
                tx.prepare_cached(
                    "INSERT INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (digest) DO NOTHING",
                )?
                .execute(params![blob.digest.to_string(), blob.size, at])?;
            }
            for layer in &image.layers {
                tx.prepare_cached(
                    "INSERT INTO layers (diff_id, digest, media_type) VALUES (?1, ?2, ?3)
                     ON CONFLICT (diff_id) DO NOTHING",
                )?
                .execute(params![
                    layer.diff_id.to_string(),
                    layer.digest.to_string(),
                    layer.media_type
                ])?;
            }
            for digest in &image.repo_blobs {
                tx.prepare_cached(
                    "INSERT INTO repo_blobs (repo_id, digest) VALUES (?1, ?2)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![repo_id, digest.to_string()])?;
            }
            for manifest in &image.manifests {
                tx.prepare_cached(
                    "INSERT INTO manifests
                       (repo_id, digest, media_type, artifact_type, subject, annotations, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    repo_id,
                    manifest.digest.to_string(),
                    manifest.media_type,
                    manifest.artifact_type,
                    manifest.subject.as_ref().map(Digest::to_string),
                    manifest.annotations,
                    at
                ])?;
            }
            for (path, diff_id) in &image.legacy_paths {
                tx.prepare_cached(
                    "INSERT INTO legacy_layer_paths (path, diff_id) VALUES (?1, ?2)
                     ON CONFLICT (path) DO NOTHING",
                )?
                .execute(params![path, diff_id.to_string()])?;
            }
            super::files::insert(&tx, &image.layer_files, &image.image_files)?;
            if let (Some(tag), Some(top)) = (&image.tag, image.manifests.last()) {
                tx.execute(
                    "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (repo_id, name)
                     DO UPDATE SET digest = ?3, updated_at = ?4, branch = NULL, build_id = NULL",
                    params![repo_id, tag.as_str(), top.digest.to_string(), at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Adds download counts; counts of manifests no longer stored are dropped.
    pub fn add_downloads(&self, counts: &[DownloadCount]) -> Result<(), StoreError> {
        let at = now();
        self.with(|conn| {
            let tx = conn.transaction()?;
            for c in counts {
                tx.prepare_cached(
                    "INSERT INTO downloads (repo_id, digest, count, last_at)
                     SELECT m.repo_id, m.digest, ?3, ?4
                     FROM manifests m JOIN repositories r ON r.id = m.repo_id
                     WHERE r.name = ?1 AND m.digest = ?2
                     ON CONFLICT (repo_id, digest)
                     DO UPDATE SET count = count + ?3, last_at = ?4",
                )?
                .execute(params![
                    c.repo.as_str(),
                    c.digest.to_string(),
                    c.count,
                    at
                ])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Counts one whole download of the image archive of `digest` (the web's `/archives/…`).
    pub fn add_archive_download(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "INSERT INTO downloads (repo_id, digest, count, last_at, archives)
                 SELECT m.repo_id, m.digest, 0, ?3, 1
                 FROM manifests m JOIN repositories r ON r.id = m.repo_id
                 WHERE r.name = ?1 AND m.digest = ?2
                 ON CONFLICT (repo_id, digest)
                 DO UPDATE SET archives = archives + 1, last_at = ?3",
            )?
            .execute(params![repo.as_str(), digest.to_string(), now()])?;
            Ok(())
        })
    }

    /// Whole downloads of the image archive of `digest` from `repo`.
    pub fn archive_downloads(&self, repo: &RepoName, digest: &Digest) -> Result<u64, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.archives FROM downloads d JOIN repositories r ON r.id = d.repo_id
                 WHERE r.name = ?1 AND d.digest = ?2",
            )?;
            Ok(stmt
                .query_row(params![repo.as_str(), digest.to_string()], |row| row.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    /// Pulls of `digest` from `repo`: the manifest GETs the registry answered (HEADs, which
    /// only check a manifest, are not counted).
    pub fn downloads(&self, repo: &RepoName, digest: &Digest) -> Result<u64, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.count FROM downloads d JOIN repositories r ON r.id = d.repo_id
                 WHERE r.name = ?1 AND d.digest = ?2",
            )?;
            Ok(stmt
                .query_row(params![repo.as_str(), digest.to_string()], |row| row.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    /// Counts rows of every table: a cheap fingerprint of the metadata, for checks that a
    /// refused request changed nothing.
    pub fn row_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|conn| {
            let mut counts = Vec::new();
            for table in [
                "blobs",
                "layers",
                "repositories",
                "manifests",
                "repo_blobs",
                "tags",
                "downloads",
                "image_bases",
                "layer_files",
                "image_files",
                "archive_checksums",
            ] {
                let n: i64 =
                    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                        row.get(0)
                    })?;
                counts.push((table.to_owned(), n));
            }
            Ok(counts)
        })
    }
}

fn tag_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TagRow> {
    Ok(TagRow {
        name: row.get(0)?,
        digest: digest_column(row, 1)?,
        updated_at: row.get(2)?,
        branch: row.get(3)?,
        build_id: row.get(4)?,
    })
}

fn manifest_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestRow> {
    Ok(ManifestRow {
        digest: digest_column(row, 0)?,
        media_type: row.get(1)?,
        size: row.get(2)?,
    })
}

impl Db {
    /// Records the base images of a stored image.
    pub fn add_image_bases(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bases: &[String],
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            for base in bases {
                tx.prepare_cached(
                    "INSERT INTO image_bases (repo_id, digest, base)
                     SELECT id, ?2, ?3 FROM repositories WHERE name = ?1
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![repo.as_str(), digest.to_string(), base])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn image_bases(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT b.base FROM image_bases b JOIN repositories r ON r.id = b.repo_id
                 WHERE r.name = ?1 AND b.digest = ?2 ORDER BY b.base",
            )?;
            let rows =
                stmt.query_map(params![repo.as_str(), digest.to_string()], |row| row.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

impl Db {
    /// Every namespace buildgrid knows (a namespace row, an app, or a stored repository) and
    /// whether it is public (no row means private).
    pub fn known_namespaces(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, public != 0 FROM namespaces
                 UNION SELECT namespace, 0 FROM apps
                   WHERE namespace NOT IN (SELECT name FROM namespaces)
                 UNION SELECT CASE WHEN instr(name, '/') > 0
                                THEN substr(name, 1, instr(name, '/') - 1) ELSE name END, 0
                   FROM repositories
                   WHERE (CASE WHEN instr(name, '/') > 0
                           THEN substr(name, 1, instr(name, '/') - 1) ELSE name END)
                         NOT IN (SELECT name FROM namespaces)",
            )?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The namespaces of the repositories that serve blob `digest` (an image's config: its
    /// image id in an engine that pulled it).
    pub fn blob_namespaces(&self, digest: &Digest) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT CASE WHEN instr(r.name, '/') > 0
                                 THEN substr(r.name, 1, instr(r.name, '/') - 1) ELSE r.name END
                 FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id
                 WHERE b.digest = ?1",
            )?;
            let rows = stmt.query_map([digest.to_string()], |row| row.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
