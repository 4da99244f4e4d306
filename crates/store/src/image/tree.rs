//! An image's final file tree: its layers applied in order, with OCI whiteouts.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::collect::normalize;
use super::{FileEntry, FileKind, LayerEntry, LayerFiles};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The final file tree of an image, indexed by directory.
#[derive(Debug, Default)]
pub struct FileTree {
    /// Directory path (`""` for the root, `usr/lib`) → its entries, sorted by name.
    dirs: HashMap<String, Vec<FileEntry>>,
    files: u64,
    size: u64,
    os_release: Option<String>,
}

impl FileTree {
    /// The entries of directory `path` (`/`, `usr/lib`, `/usr/lib/`), sorted by name; `None`
    /// when there is no such directory.
    pub fn dir(&self, path: &str) -> Option<&[FileEntry]> {
        self.dirs.get(&normalize(path)).map(Vec::as_slice)
    }

    /// How many entries are not directories (files, links and devices).
    pub fn files(&self) -> u64 {
        self.files
    }

    /// The sum of the sizes of regular files (a hard link's data is counted once, at its target).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The content of the final tree's `etc/os-release` (or `usr/lib/os-release`).
    pub fn os_release(&self) -> Option<&str> {
        self.os_release.as_deref()
    }

    /// How many entries the tree holds, directories included: what it costs to keep.
    pub(crate) fn entries(&self) -> usize {
        self.dirs.values().map(Vec::len).sum()
    }
}

/// A surviving entry: the layer that put it there, and the entry.
type Merged<'a> = BTreeMap<&'a str, (usize, &'a LayerEntry)>;

/// Applies `layers` (lowest first) one on the other: in each, whiteouts (`.wh.name`) delete a
/// lower path and what lies under it, an opaque marker (`.wh..wh..opq`) hides everything lower
/// layers put in its directory, and a non-directory replaces a lower directory whole.
pub(crate) fn merge(layers: &[&LayerFiles]) -> FileTree {
    let mut merged: Merged<'_> = BTreeMap::new();
    for (index, layer) in layers.iter().enumerate() {
        // Deletions apply to lower layers only: all of them first, then the layer's entries.
        for entry in &layer.entries {
            let (parent, name) = split(&entry.path);
            if name == OPAQUE {
                remove_under(&mut merged, parent);
            } else if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                let path = join(parent, hidden);
                merged.remove(path.as_str());
                remove_under(&mut merged, &path);
            }
        }
        for entry in &layer.entries {
            if split(&entry.path).1.starts_with(WHITEOUT) {
                continue;
            }
            let replaced = merged.insert(&entry.path, (index, entry));
            if let Some((_, old)) = replaced
                && old.kind == FileKind::Dir
                && entry.kind != FileKind::Dir
            {
                remove_under(&mut merged, &entry.path);
            }
        }
    }
    let os_release = os_release(&merged, layers);
    index(&merged, os_release)
}

/// Removes every path strictly under `dir` (everything, for the root).
fn remove_under(merged: &mut Merged<'_>, dir: &str) {
    if dir.is_empty() {
        merged.clear();
        return;
    }
    let start = format!("{dir}/");
    let end = format!("{dir}0"); // '0' follows '/'
    let doomed: Vec<&str> = merged
        .range::<str, _>((
            Bound::Included(start.as_str()),
            Bound::Excluded(end.as_str()),
        ))
        .map(|(path, _)| *path)
        .collect();
    for path in doomed {
        merged.remove(path);
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Builds the directory index, with the directories no layer lists but whose children exist
/// (a layer may put `a/b/c` without `a/b`, or over a lower file `a/b`).
fn index(merged: &Merged<'_>, os_release: Option<String>) -> FileTree {
    let mut dirs: HashMap<String, Vec<FileEntry>> = HashMap::new();
    dirs.insert(String::new(), Vec::new());
    for (path, (_, entry)) in merged {
        let (parent, name) = split(path);
        if !dirs.contains_key(parent) {
            make_dirs(&mut dirs, parent);
        }
        if entry.kind == FileKind::Dir {
            dirs.entry((*path).to_owned()).or_default();
        }
        dirs.get_mut(parent).expect("made above").push(FileEntry {
            name: name.to_owned(),
            kind: entry.kind,
            size: entry.size,
            mode: entry.mode,
            link: entry.link.clone(),
            children: 0,
        });
    }
    let counts: HashMap<String, u64> = dirs
        .iter()
        .map(|(path, entries)| (path.clone(), entries.len() as u64))
        .collect();
    let (mut files, mut size) = (0, 0);
    for (path, entries) in &mut dirs {
        for entry in entries.iter() {
            files += u64::from(entry.kind != FileKind::Dir);
            size += if entry.kind == FileKind::File {
                entry.size
            } else {
                0
            };
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for entry in entries.iter_mut().filter(|e| e.kind == FileKind::Dir) {
            entry.children = counts.get(&join(path, &entry.name)).copied().unwrap_or(0);
        }
    }
    FileTree {
        dirs,
        files,
        size,
        os_release,
    }
}

/// Adds directory `path` and its missing ancestors; an entry of the same name that is not a
/// directory becomes one (its children show that it is).
fn make_dirs(dirs: &mut HashMap<String, Vec<FileEntry>>, path: &str) {
    let (parent, name) = split(path);
    if !dirs.contains_key(parent) {
        make_dirs(dirs, parent);
    }
    let siblings = dirs.get_mut(parent).expect("made above");
    match siblings.iter_mut().rev().find(|e| e.name == name) {
        Some(entry) => {
            entry.kind = FileKind::Dir;
            entry.size = 0;
            entry.link = None;
        }
        None => siblings.push(FileEntry {
            name: name.to_owned(),
            kind: FileKind::Dir,
            size: 0,
            mode: 0o755,
            link: None,
            children: 0,
        }),
    }
    dirs.insert(path.to_owned(), Vec::new());
}

/// The content of `etc/os-release` as the final tree has it (following a symlink, as Debian's
/// points to `../usr/lib/os-release`), else of `usr/lib/os-release`.
fn os_release(merged: &Merged<'_>, layers: &[&LayerFiles]) -> Option<String> {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|path| content(merged, layers, path))
}

fn content(merged: &Merged<'_>, layers: &[&LayerFiles], path: &str) -> Option<String> {
    let mut path = path.to_owned();
    for _ in 0..8 {
        let (layer, entry) = merged.get(path.as_str())?;
        if entry.kind != FileKind::Symlink {
            let captured = layers[*layer].captured.iter().find(|(p, _)| *p == path)?;
            return Some(String::from_utf8_lossy(&captured.1).into_owned());
        }
        let target = entry.link.as_deref().unwrap_or("");
        path = if target.starts_with('/') {
            normalize(target)
        } else {
            normalize(&join(split(&path).0, target))
        };
    }
    None
}
