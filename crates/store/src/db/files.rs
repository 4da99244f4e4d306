//! File lists of layers, file trees of images, and checksums of image archives.

use buildgrid_core::{Digest, RepoName};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Db, digest_column};
use crate::StoreError;

/// The encoded file list of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFilesRow {
    pub diff_id: Digest,
    pub entries: u64,
    pub data: Vec<u8>,
}

/// What the final file tree of an image manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFilesRow {
    /// The image manifest.
    pub digest: Digest,
    /// Its layers, lowest first.
    pub diff_ids: Vec<Digest>,
    /// Entries that are not directories.
    pub files: u64,
    /// Bytes of regular files.
    pub size: u64,
    /// The content of the tree's `etc/os-release` (or `usr/lib/os-release`).
    pub os_release: Option<String>,
}

/// The size and checksums (lowercase hex) of an image archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveChecksums {
    pub size: u64,
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
    pub sha512: String,
}

/// Records file lists and trees, inside the transaction that records their image.
pub(super) fn insert(
    tx: &Transaction<'_>,
    layers: &[LayerFilesRow],
    images: &[ImageFilesRow],
) -> Result<(), StoreError> {
    for layer in layers {
        tx.prepare_cached(
            "INSERT INTO layer_files (diff_id, entries, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (diff_id) DO NOTHING",
        )?
        .execute(params![
            layer.diff_id.to_string(),
            layer.entries,
            layer.data
        ])?;
    }
    for image in images {
        let diff_ids: Vec<String> = image.diff_ids.iter().map(Digest::to_string).collect();
        tx.prepare_cached(
            "INSERT INTO image_files (digest, diff_ids, files, size, os_release)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (digest) DO NOTHING",
        )?
        .execute(params![
            image.digest.to_string(),
            diff_ids.join("\n"),
            image.files,
            image.size,
            image.os_release
        ])?;
    }
    Ok(())
}

impl Db {
    pub fn has_layer_files(&self, diff_id: &Digest) -> Result<bool, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT 1 FROM layer_files WHERE diff_id = ?1")?;
            Ok(stmt.exists([diff_id.to_string()])?)
        })
    }

    /// The encoded file list of a layer, if ingest listed it.
    pub fn layer_files(&self, diff_id: &Digest) -> Result<Option<LayerFilesRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT diff_id, entries, data FROM layer_files WHERE diff_id = ?1",
            )?;
            Ok(stmt
                .query_row([diff_id.to_string()], |row| {
                    Ok(LayerFilesRow {
                        diff_id: digest_column(row, 0)?,
                        entries: row.get(1)?,
                        data: row.get(2)?,
                    })
                })
                .optional()?)
        })
    }

    /// The file tree summary of the manifest `digest` of `repo`; `None` when the repository has
    /// no such manifest or its files were not collected.
    pub fn image_files(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ImageFilesRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.digest, f.diff_ids, f.files, f.size, f.os_release
                 FROM repositories r
                 JOIN manifests m ON m.repo_id = r.id
                 JOIN image_files f ON f.digest = m.digest
                 WHERE r.name = ?1 AND m.digest = ?2",
            )?;
            let row = stmt
                .query_row(params![repo.as_str(), digest.to_string()], |row| {
                    let diff_ids: String = row.get(1)?;
                    let diff_ids = diff_ids
                        .lines()
                        .map(Digest::parse)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                1,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?;
                    Ok(ImageFilesRow {
                        digest: digest_column(row, 0)?,
                        diff_ids,
                        files: row.get(2)?,
                        size: row.get(3)?,
                        os_release: row.get(4)?,
                    })
                })
                .optional()?;
            Ok(row)
        })
    }

    /// When the manifest `digest` was stored in `repo` (seconds since the epoch).
    pub fn manifest_stored_at(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<i64>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.created_at FROM repositories r JOIN manifests m ON m.repo_id = r.id
                 WHERE r.name = ?1 AND m.digest = ?2",
            )?;
            Ok(stmt
                .query_row(params![repo.as_str(), digest.to_string()], |row| row.get(0))
                .optional()?)
        })
    }

    /// Checksums of the archive of manifest `digest` named `repo_tag` (`""`: unnamed).
    pub fn archive_checksums(
        &self,
        digest: &Digest,
        repo_tag: &str,
    ) -> Result<Option<ArchiveChecksums>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT size, md5, sha1, sha256, sha512 FROM archive_checksums
                 WHERE digest = ?1 AND repo_tag = ?2",
            )?;
            Ok(stmt
                .query_row(params![digest.to_string(), repo_tag], |row| {
                    Ok(ArchiveChecksums {
                        size: row.get(0)?,
                        md5: row.get(1)?,
                        sha1: row.get(2)?,
                        sha256: row.get(3)?,
                        sha512: row.get(4)?,
                    })
                })
                .optional()?)
        })
    }

    pub fn add_archive_checksums(
        &self,
        digest: &Digest,
        repo_tag: &str,
        sums: &ArchiveChecksums,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "INSERT INTO archive_checksums (digest, repo_tag, size, md5, sha1, sha256, sha512)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                digest.to_string(),
                repo_tag,
                sums.size,
                sums.md5,
                sums.sha1,
                sums.sha256,
                sums.sha512
            ])?;
            Ok(())
        })
    }
}
