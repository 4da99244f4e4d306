//! What the image page shows: an image's final file tree, its details, and a `docker save`
//! archive of it with stable checksums.
//!
//! Ingest lists each new layer's tar entries in the pass that hashes and compresses it and
//! stores the list once per diff id (`layer_files`), with a summary of each image's final tree
//! (`image_files`: its layers, file count, size, os-release). A tree is merged on read from its
//! layers' lists and kept in a small cache, so images sharing base layers share their storage.

mod codec;
pub(crate) mod collect;
mod details;
mod download;
mod os_release;
mod tree;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use buildgrid_core::{Digest, RepoName};

use crate::{ImageFilesRow, LayerFilesRow, Store, StoreError};
pub use details::{
    ImageDetails, LayerDetails, PlatformManifest, image_details, platform_manifests,
};
pub use download::{archive_checksums, write_image_archive};
pub use os_release::OsRelease;
pub use tree::FileTree;

/// What an entry of a layer or of an image's tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileKind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    Hardlink = 3,
    /// Devices and FIFOs.
    Other = 4,
}

impl FileKind {
    fn from_code(code: u8) -> Option<FileKind> {
        Some(match code {
            0 => FileKind::File,
            1 => FileKind::Dir,
            2 => FileKind::Symlink,
            3 => FileKind::Hardlink,
            4 => FileKind::Other,
            _ => return None,
        })
    }
}

/// An entry of a directory of an image's final tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    /// Bytes of a regular file, or of a hard link's target; 0 for the rest.
    pub size: u64,
    /// Permission bits (`0o755`), with setuid, setgid and sticky.
    pub mode: u32,
    /// A symlink's target as written, or a hard link's target path in the image.
    pub link: Option<String>,
    /// For a directory, how many entries it holds directly.
    pub children: u64,
}

/// One tar entry of a layer, as listed at ingest (whiteouts included, as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerEntry {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub link: Option<String>,
}

/// A layer's entries in tar order, and the small files captured whole (os-release).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayerFiles {
    pub entries: Vec<LayerEntry>,
    pub captured: Vec<(String, Vec<u8>)>,
}

impl LayerFiles {
    pub(crate) fn to_row(&self, diff_id: &Digest) -> LayerFilesRow {
        LayerFilesRow {
            diff_id: diff_id.clone(),
            entries: self.entries.len() as u64,
            data: codec::encode(self),
        }
    }
}

/// An image's files, when buildgrid has them.
#[derive(Debug, Clone)]
pub enum ImageFiles {
    Collected(Arc<FileTree>),
    /// The image was stored before buildgrid listed files at ingest, or one of its layers is
    /// in a format it cannot list (not a plain or gzip tar): there is no tree to show, which is
    /// not the same as an empty one.
    NotCollected,
}

/// A directory of an image's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDir {
    /// The directory's entries, sorted by name.
    Entries(Vec<FileEntry>),
    /// The image has no directory at that path.
    NotADirectory,
    /// See `ImageFiles::NotCollected`.
    NotCollected,
}

/// The final file tree of the image manifest `digest` of `repo`; `None` when the repository
/// has no such manifest or it is an index (see `platform_manifests`).
pub fn image_files(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<ImageFiles>, StoreError> {
    let Some(manifest) = store.db.manifest_by_digest(repo, digest)? else {
        return Ok(None);
    };
    if buildgrid_core::media_type::is_index(&manifest.media_type) {
        return Ok(None);
    }
    let Some(row) = store.db.image_files(repo, digest)? else {
        return Ok(Some(ImageFiles::NotCollected));
    };
    if let Some(tree) = store.trees.get(digest) {
        return Ok(Some(ImageFiles::Collected(tree)));
    }
    Ok(Some(
        match tree_of(store, &row.diff_ids, &HashMap::new())? {
            Some(tree) => ImageFiles::Collected(store.trees.put(digest, tree)),
            None => ImageFiles::NotCollected,
        },
    ))
}

/// The entries of directory `dir` (`/`, `usr/lib`) of the image manifest `digest` of `repo`;
/// `None` as for `image_files`.
pub fn image_dir(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    dir: &str,
) -> Result<Option<ImageDir>, StoreError> {
    Ok(image_files(store, repo, digest)?.map(|files| match files {
        ImageFiles::Collected(tree) => match tree.dir(dir) {
            Some(entries) => ImageDir::Entries(entries.to_vec()),
            None => ImageDir::NotADirectory,
        },
        ImageFiles::NotCollected => ImageDir::NotCollected,
    }))
}

/// The tree of layers `diff_ids`, their lists taken from `listed` or else from the database;
/// `None` when a layer has no list.
pub(crate) fn tree_of(
    store: &Store,
    diff_ids: &[Digest],
    listed: &HashMap<Digest, LayerFiles>,
) -> Result<Option<FileTree>, StoreError> {
    let mut loaded: HashMap<&Digest, LayerFiles> = HashMap::new();
    for diff_id in diff_ids {
        if listed.contains_key(diff_id) || loaded.contains_key(diff_id) {
            continue;
        }
        let Some(row) = store.db.layer_files(diff_id)? else {
            return Ok(None);
        };
        let files = codec::decode(&row.data).map_err(|reason| StoreError::FileList {
            diff_id: diff_id.clone(),
            reason,
        })?;
        loaded.insert(diff_id, files);
    }
    let layers: Vec<&LayerFiles> = diff_ids
        .iter()
        .map(|d| {
            listed
                .get(d)
                .or_else(|| loaded.get(d))
                .expect("loaded above")
        })
        .collect();
    Ok(Some(tree::merge(&layers)))
}

/// The summary row of a tree.
pub(crate) fn files_row(digest: &Digest, diff_ids: &[Digest], tree: &FileTree) -> ImageFilesRow {
    ImageFilesRow {
        digest: digest.clone(),
        diff_ids: diff_ids.to_vec(),
        files: tree.files(),
        size: tree.size(),
        os_release: tree.os_release().map(str::to_owned),
    }
}

/// Trees recently shown, newest last, up to about `TREE_CACHE_ENTRIES` entries in all (at
/// least the newest tree, whatever its size).
#[derive(Default)]
pub(crate) struct TreeCache {
    trees: Mutex<Vec<(Digest, Arc<FileTree>)>>,
}

/// About 100 bytes each: some 50 MB of trees.
const TREE_CACHE_ENTRIES: usize = 500_000;

impl TreeCache {
    fn get(&self, digest: &Digest) -> Option<Arc<FileTree>> {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        let at = trees.iter().position(|(d, _)| d == digest)?;
        let hit = trees.remove(at);
        let tree = hit.1.clone();
        trees.push(hit);
        Some(tree)
    }

    pub(crate) fn put(&self, digest: &Digest, tree: FileTree) -> Arc<FileTree> {
        let tree = Arc::new(tree);
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        trees.retain(|(d, _)| d != digest);
        trees.push((digest.clone(), tree.clone()));
        let mut total: usize = trees.iter().map(|(_, t)| t.entries()).sum();
        while trees.len() > 1 && total > TREE_CACHE_ENTRIES {
            total -= trees.remove(0).1.entries();
        }
        tree
    }
}
