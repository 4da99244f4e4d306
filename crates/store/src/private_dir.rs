//! The data directory is private to the user buildgrid runs as: it holds the bearer-token
//! signing key, webhook secrets, the key of sealed secrets, git URLs with credentials and every
//! private app's source. The directory is 0700 and the files buildgrid makes are 0600.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::StoreError;

/// Files in the data directory's top level that hold secrets themselves, kept 0600 even though
/// the directory's 0700 already protects them (a copied or moved database keeps its mode).
const PRIVATE_FILES: [&str; 4] = [
    "buildgrid.db",
    "buildgrid.db-wal",
    "buildgrid.db-shm",
    crate::secrets::KEY_FILE,
];

/// Makes every file and directory this process creates from now on private to its user
/// (umask 0077). Every command calls it first; git and other subprocesses inherit it.
pub fn keep_new_files_private() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates the data directory (0700) if needed, refuses one that another user owns, and makes
/// an existing one private: the directory 0700 and the files of [`PRIVATE_FILES`] 0600. Below
/// the top level nothing is walked: a 0700 directory closes everything under it.
pub(crate) fn prepare(root: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| StoreError::io(root, e))?;
    let metadata = fs::metadata(root).map_err(|e| StoreError::io(root, e))?;
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(StoreError::ForeignOwner {
            path: root.to_owned(),
            owner: metadata.uid(),
            me,
        });
    }
    make_private(root, &metadata, 0o700)?;
    for name in PRIVATE_FILES {
        make_file_private(&root.join(name))?;
    }
    Ok(())
}

/// Sets the file's mode to 0600 if it exists and others may read it.
pub(crate) fn make_file_private(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() => make_private(path, &metadata, 0o600),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn make_private(path: &Path, metadata: &fs::Metadata, mode: u32) -> Result<(), StoreError> {
    let old = metadata.mode() & 0o7777;
    if old & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io(path, e))?;
    tracing::warn!(
        path = %path.display(),
        "{} was open to other users (mode {old:04o}): set to {mode:04o}",
        path.display()
    );
    Ok(())
}
