//! `buildgrid backup`, `restore` and `fsck`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use buildgrid_store::Store;
use clap::Args;

#[derive(Args)]
pub struct BackupArgs {
    /// A new or empty directory to write the backup into.
    dir: PathBuf,
    /// Hard-link the blobs instead of copying them (the backup must be on the same file
    /// system; a disk failure then loses both).
    #[arg(long)]
    link: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A directory `buildgrid backup` wrote; restored into `--data`, which must be new or empty.
    dir: PathBuf,
}

pub fn backup(store: &Store, args: BackupArgs) -> anyhow::Result<()> {
    let copied = store
        .backup(&args.dir, args.link)
        .with_context(|| format!("backup into {} failed", args.dir.display()))?;
    println!(
        "backup in {}: {} blobs ({} bytes), {} other files",
        args.dir.display(),
        copied.blobs,
        copied.blob_bytes,
        copied.files
    );
    Ok(())
}

pub fn restore(data: &Path, args: RestoreArgs) -> anyhow::Result<()> {
    let copied = buildgrid_store::backup::restore(&args.dir, data).with_context(|| {
        format!(
            "restore of {} into {} failed",
            args.dir.display(),
            data.display()
        )
    })?;
    // The copy opens (and migrates) like any data directory.
    Store::open(data).with_context(|| {
        format!(
            "the restored data directory {} does not open",
            data.display()
        )
    })?;
    println!(
        "restored into {}: {} blobs ({} bytes), {} other files",
        data.display(),
        copied.blobs,
        copied.blob_bytes,
        copied.files
    );
    Ok(())
}

pub fn fsck(data: &Path, open: impl FnOnce() -> anyhow::Result<Store>) -> anyhow::Result<()> {
    if !data.join("buildgrid.db").is_file() {
        bail!(
            "{} holds no buildgrid database: give the data directory with --data",
            data.display()
        );
    }
    let store = open()?;
    let report = store.fsck().context("the check could not run to its end")?;
    for problem in &report.problems {
        println!("{problem}");
    }
    if report.pending_collection > 0 {
        println!(
            "{} blob files are pending collection (the next `buildgrid gc` or `serve` start deletes them)",
            report.pending_collection
        );
    }
    println!(
        "checked {} blobs ({} bytes) and {} manifests: {}",
        report.blobs,
        report.blob_bytes,
        report.manifests,
        match report.problems.len() {
            0 => "no problems".to_owned(),
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        }
    );
    if !report.problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
