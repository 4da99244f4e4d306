//! `buildgrid backup` and `restore`: a consistent copy of a data directory taken while it
//! serves, builds and deploys, and its return into an empty directory.
//!
//! The database is copied first, with SQLite's online backup (one snapshot). The blobs copied
//! are those the snapshot's `blobs` table lists: a blob is on disk before its row commits and
//! never changes, so each is there, whole, and is checked against its digest on the way. Then
//! come `git/` (in each directory, refs before objects, so a copied ref never names an object
//! left behind), `servers/`, `ssh/` (without its sockets) and `secret.key`. A backup is
//! complete when its last file, [`MARK`], is written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use buildgrid_core::{Digest, Sha256Writer};

use crate::{Store, StoreError, db, private_dir};

/// The file a complete backup ends with.
pub const MARK: &str = "buildgrid-backup.txt";
/// What a backup holds besides the database and the blobs, when the data directory has it.
const EXTRA: [&str; 4] = ["git", "servers", "ssh", crate::secrets::KEY_FILE];

/// What a backup or restore copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Blobs, and their bytes.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Other files (git repositories, servers' keys, …).
    pub files: u64,
}

impl Store {
    /// Writes a backup into `target`, which must not exist or be empty. With `link`, blobs are
    /// hard links to the data directory's (same file system only; a blob never changes, but a
    /// disk failure then takes both): otherwise they are copied and checked. Blobs in an object
    /// store are copied into the backup's own `blobs/` directory.
    pub fn backup(&self, target: &Path, link: bool) -> Result<Copied, StoreError> {
        prepare_empty(target)?;
        // Garbage collection waits until the blobs the snapshot lists are copied (it could
        // delete one of them); ingests share the lock and go on.
        let _collection_off = self.ingest_lock()?;
        let database = target.join("buildgrid.db");
        self.db.backup_to(&database)?;
        let mut copied = Copied::default();
        for row in db::blobs_in_file(&database)? {
            let to = blob_path(target, &row.digest);
            create_parent(&to)?;
            let local = self.blobs.backend().local_path(&row.digest);
            let size = match local {
                Some(from) if link => linked(&from, &to, &row.digest)?,
                _ => copy_checked(self.blobs.reader(&row.digest)?, &to, &row.digest)?,
            };
            if size != row.size {
                return Err(damaged(
                    &row.digest,
                    format!("{size} bytes, {} in its row", row.size),
                ));
            }
            copied.blobs += 1;
            copied.blob_bytes += size;
        }
        for name in EXTRA {
            copied.files += copy_tree(&self.root.join(name), &target.join(name))?;
        }
        let mark = target.join(MARK);
        let mut file = File::create(&mark).map_err(|e| StoreError::io(&mark, e))?;
        write!(
            file,
            "buildgrid backup\ncreated {}\nblobs {}\nblob bytes {}\nfiles {}\n",
            crate::now(),
            copied.blobs,
            copied.blob_bytes,
            copied.files
        )
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&mark, e))?;
        Ok(copied)
    }
}

/// Copies the backup at `backup` into the data directory `data`, which must not exist or be
/// empty, and checks each blob against its digest. The result opens like any data directory.
pub fn restore(backup: &Path, data: &Path) -> Result<Copied, StoreError> {
    if !backup.join(MARK).is_file() {
        return Err(StoreError::Conflict(format!(
            "{} is not a complete buildgrid backup (it has no {MARK}): use a directory `buildgrid backup` finished writing",
            backup.display()
        )));
    }
    prepare_empty(data)?;
    let database = backup.join("buildgrid.db");
    let mut copied = Copied::default();
    copy_file(&database, &data.join("buildgrid.db"))?;
    for row in db::blobs_in_file(&database)? {
        let to = blob_path(data, &row.digest);
        create_parent(&to)?;
        let from = blob_path(backup, &row.digest);
        let source = File::open(&from).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobMissing(row.digest.clone()),
            _ => StoreError::io(&from, e),
        })?;
        copied.blob_bytes += copy_checked(source, &to, &row.digest)?;
        copied.blobs += 1;
    }
    for name in EXTRA {
        copied.files += copy_tree(&backup.join(name), &data.join(name))?;
    }
    Ok(copied)
}

/// Creates `dir` (private to this user) or accepts an empty one; refuses one with anything in it.
fn prepare_empty(dir: &Path) -> Result<(), StoreError> {
    if let Ok(mut entries) = fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(StoreError::Conflict(format!(
            "{} is not empty: give a new or empty directory",
            dir.display()
        )));
    }
    private_dir::prepare(dir)
}

fn blob_path(root: &Path, digest: &Digest) -> std::path::PathBuf {
    let hex = digest.hex();
    root.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().expect("blob paths have a parent");
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))
}

fn damaged(digest: &Digest, what: String) -> StoreError {
    StoreError::Conflict(format!(
        "blob {digest} in the data directory is damaged ({what}): run `buildgrid fsck`"
    ))
}

/// Copies a blob, hashing it on the way; a blob whose bytes are not its digest's is refused.
fn copy_checked(mut source: impl Read, to: &Path, digest: &Digest) -> Result<u64, StoreError> {
    let mut target = File::create(to).map_err(|e| StoreError::io(to, e))?;
    let mut both = Tee {
        file: &mut target,
        hash: Sha256Writer::new(),
    };
    io::copy(&mut source, &mut both).map_err(|e| StoreError::io(to, e))?;
    let (actual, size) = both.hash.finish();
    if actual != *digest {
        let _ = fs::remove_file(to);
        return Err(damaged(digest, format!("its bytes hash to {actual}")));
    }
    target.sync_all().map_err(|e| StoreError::io(to, e))?;
    Ok(size)
}

/// A hard link to the blob, or a checked copy where links cannot go (another file system).
fn linked(from: &Path, to: &Path, digest: &Digest) -> Result<u64, StoreError> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::metadata(to)
            .map(|m| m.len())
            .map_err(|e| StoreError::io(to, e)),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let source = File::open(from).map_err(|e| StoreError::io(from, e))?;
            copy_checked(source, to, digest)
        }
        Err(e) => Err(StoreError::io(to, e)),
    }
}

struct Tee<'a> {
    file: &'a mut File,
    hash: Sha256Writer,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<u64, StoreError> {
    fs::copy(from, to).map_err(|e| StoreError::io(from, e))
}

/// Copies a file or directory tree that others may be changing: files that vanish on the way
/// are skipped, and so are sockets, pipes and git's lock files (a copied lock would block the
/// copy's next push). In each directory `HEAD`, `packed-refs` and `refs` go first. Returns how
/// many files it copied.
fn copy_tree(from: &Path, to: &Path) -> Result<u64, StoreError> {
    let metadata = match fs::symlink_metadata(from) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(from, e)),
    };
    let kind = metadata.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(from).map_err(|e| StoreError::io(from, e))?;
        std::os::unix::fs::symlink(target, to).map_err(|e| StoreError::io(to, e))?;
        return Ok(1);
    }
    if kind.is_file() {
        if from.extension().is_some_and(|e| e == "lock") {
            return Ok(0);
        }
        return match fs::copy(from, to) {
            Ok(_) => Ok(1),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(from, e)),
        };
    }
    if !kind.is_dir() {
        return Ok(0);
    }
    fs::create_dir_all(to).map_err(|e| StoreError::io(to, e))?;
    let mut names: Vec<_> = match fs::read_dir(from) {
        Ok(entries) => entries.flatten().map(|e| e.file_name()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(from, e)),
    };
    let later =
        |name: &std::ffi::OsString| !matches!(name.to_str(), Some("HEAD" | "packed-refs" | "refs"));
    names.sort_by_key(|name| (later(name), name.clone()));
    let mut copied = 0;
    for name in names {
        copied += copy_tree(&from.join(&name), &to.join(&name))?;
    }
    Ok(copied)
}
