//! The engine's export of a built image, spooled to disk by the store while the layers it has
//! not stored yet are compressed on the way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use buildgrid_store::Store;
use buildgrid_store::ingest::Prepared;
use futures_util::StreamExt;

use crate::worker::{Stop, engine_error, timed_out};

/// An export spooled to a file.
pub(crate) struct Spooled {
    /// The layers compressed on the way.
    pub prepared: Prepared,
    /// Bytes the engine sent.
    pub bytes: u64,
    /// When its first byte came, after the export was asked for.
    pub first_byte: Option<Duration>,
}

/// Spools the engine's export of `tag` to `archive_path`, unless the build's time is up first.
pub(crate) async fn spool_export(
    docker: &Docker,
    store: &Arc<Store>,
    tag: &str,
    archive_path: &Path,
    deadline: tokio::time::Instant,
    limit: Duration,
) -> Result<Spooled, Stop> {
    let started = std::time::Instant::now();
    // The layers' diff ids, so that spooling passes over layers the store has already.
    let diff_ids: Vec<buildgrid_core::Digest> = docker
        .inspect_image(tag)
        .await
        .ok()
        .and_then(|image| image.root_fs)
        .and_then(|root_fs| root_fs.layers)
        .unwrap_or_default()
        .iter()
        .filter_map(|d| buildgrid_core::Digest::parse(d).ok())
        .collect();
    // The export streams into a blocking task that spools it to disk and compresses new
    // layers as they pass.
    // Up to EXPORT_BUFFER batches wait for the spool; the export waits (without blocking a
    // thread) when the spool is behind.
    let (sender, receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(EXPORT_BUFFER);
    let spooling = {
        let store = store.clone();
        let archive_path = archive_path.to_owned();
        tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                receiver,
                current: bytes::Bytes::new(),
            };
            buildgrid_store::ingest::spool_archive(&store, reader, &archive_path, &diff_ids)
        })
    };
    let mut export = docker.export_image(tag);
    let mut exported = 0u64;
    // The engine writes the whole archive out before it sends a byte (before Docker 25).
    let mut first_byte = None;
    let mut export_error = None;
    let mut batch = bytes::BytesMut::with_capacity(EXPORT_BATCH);
    loop {
        let next = tokio::select! {
            next = export.next() => next,
            _ = tokio::time::sleep_until(deadline) => {
                export_error = Some(timed_out(limit));
                break;
            }
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                export_error = Some(engine_error(&error));
                // Closing the channel ends the spool; the error is reported below.
                break;
            }
        };
        exported += chunk.len() as u64;
        first_byte.get_or_insert_with(|| started.elapsed());
        // The export's chunks are small: they travel to the spool's thread in batches.
        batch.extend_from_slice(&chunk);
        // An error means the spool stopped; it says why below.
        if batch.len() >= EXPORT_BATCH && sender.send(batch.split().freeze()).await.is_err() {
            break;
        }
    }
    if !batch.is_empty() && export_error.is_none() {
        let _ = sender.send(batch.freeze()).await;
    }
    drop(sender);
    let prepared = spooling
        .await
        .map_err(|e| Stop::Failed(format!("internal error: {e}")))?;
    if let Some(error) = export_error {
        return Err(Stop::Failed(error));
    }
    Ok(Spooled {
        prepared: prepared?,
        bytes: exported,
        first_byte,
    })
}

/// Bytes of the engine's export handed to the spool's thread at once.
const EXPORT_BATCH: usize = 1 << 20;
/// Batches of the export waiting for the spool.
const EXPORT_BUFFER: usize = 16;

/// The export's chunks as a blocking reader, for the spool's thread.
struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
