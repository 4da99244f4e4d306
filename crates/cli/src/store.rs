//! `--blob-store` and `buildgrid store copy`: blobs in an S3-compatible object store.

use std::sync::Arc;

use anyhow::{Context, bail};
use buildgrid_s3::S3Blobs;
use buildgrid_store::{BlobBackend, Store};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy every blob of the data directory (or of `--blob-store`) to an object store,
    /// checking each digest; run it again after stopping buildgrid to copy what arrived
    /// meanwhile (only missing blobs are copied), then restart with `--blob-store`.
    Copy {
        /// The object store, `s3://<bucket>[/<prefix>]` (credentials from AWS_* variables).
        #[arg(long)]
        to: String,
    },
}

/// The object store at `url`, checked: it answers, takes the credentials, has the bucket.
pub fn connect(url: &str) -> anyhow::Result<Arc<dyn BlobBackend>> {
    let backend = S3Blobs::from_env(url).map_err(|e| anyhow::anyhow!("--blob-store: {e}"))?;
    if let Err(error) = backend.check() {
        bail!("cannot use the blob store: {error}");
    }
    Ok(Arc::new(backend))
}

pub fn run(store: &Store, command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy { to } => {
            let target = connect(&to)?;
            println!(
                "copying the blobs of {} to {}",
                store.blobs.describe(),
                target.describe()
            );
            let mut shown = std::time::Instant::now();
            let report = store
                .copy_blobs(target.as_ref(), |report| {
                    if shown.elapsed().as_secs() >= 5 {
                        shown = std::time::Instant::now();
                        eprintln!(
                            "{} blobs ({} bytes) copied so far",
                            report.copied, report.copied_bytes
                        );
                    }
                })
                .context("the copy stopped")?;
            println!(
                "copied {} blobs ({} bytes); {} were there already",
                report.copied, report.copied_bytes, report.present
            );
            if report.gone > 0 {
                println!("{} blobs were collected while the copy ran", report.gone);
            }
            println!(
                "restart with: buildgrid --data {} --blob-store {to} serve … (or BUILDGRID_BLOB_STORE={to}); run this copy once more after stopping buildgrid to copy what arrived meanwhile",
                store.root().display()
            );
            Ok(())
        }
    }
}
