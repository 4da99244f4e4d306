//! Spooling an image archive that arrives as a stream (the Docker engine's export) to a file,
//! compressing its new layers on the way, so that compression overlaps the transfer instead of
//! following it. The content of a layer compressed on the way is not written to the spool: the
//! file keeps its size, with a hole where the layer was, and the import takes the layer from
//! what was compressed.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use buildgrid_core::Digest;

use super::IngestError;
use super::archive::normalize;
use super::compress::compress_layer;
use crate::image::LayerFiles;
use crate::{LayerRow, StagedBlob, Store};

/// Entries smaller than this are not worth compressing ahead.
const SMALL: u64 = 1 << 20;

/// Layers compressed ahead, by diff id; `import_archive_with` uses those the image needs.
#[derive(Default)]
pub struct Prepared {
    pub(crate) layers: HashMap<Digest, PreparedLayer>,
    _dir: Option<tempfile::TempDir>,
}

/// A layer compressed ahead, with its files.
pub(crate) struct PreparedLayer {
    /// Where its content starts in the archive; the spool holds a hole there.
    pub offset: u64,
    pub row: LayerRow,
    pub blob: StagedBlob,
    pub files: Option<LayerFiles>,
}

impl Prepared {
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// Copies the archive read from `input` to `spool`, compressing each new uncompressed layer it
/// holds on the way. `diff_ids` are the image's layers, if known (`docker inspect`). A layer the
/// store has already is passed over without compressing it, where the archive says which layer
/// an entry is before its content. What is prepared is only a head start: the import checks
/// every layer again.
pub fn spool_archive(
    store: &Store,
    input: impl Read,
    spool: &Path,
    diff_ids: &[Digest],
) -> Result<Prepared, IngestError> {
    let io_error = |e: io::Error| {
        IngestError::from_io(&spool.display().to_string(), e, |source| {
            IngestError::Open {
                path: spool.to_owned(),
                source,
            }
        })
    };
    let dir = store.blobs.scratch()?;
    let mut file = BufWriter::with_capacity(4 << 20, File::create(spool).map_err(io_error)?);
    let mut layers = HashMap::new();
    let skipping = Cell::new(false);
    {
        let tee = SpoolTee {
            inner: input,
            file: &mut file,
            skipping: &skipping,
        };
        let mut archive = tar::Archive::new(tee);
        // When the store has every layer of the image, there is nothing to compress.
        let mut all_known = !diff_ids.is_empty();
        for diff_id in diff_ids {
            all_known &= store.db.layer_by_diff_id(diff_id)?.is_some();
        }
        let entries = archive.entries().map_err(io_error)?;
        for entry in entries {
            let mut entry = entry.map_err(io_error)?;
            let name = normalize(&entry.path().map_err(io_error)?.to_string_lossy());
            if all_known || !entry.header().entry_type().is_file() || entry.size() < SMALL {
                continue;
            }
            // The layer's diff id, where the archive tells it before the content: OCI blobs
            // are named by digest, and `docker save` paths were seen in earlier imports.
            let expected = if name.ends_with("/layer.tar") {
                store.db.legacy_layer_path(&name)?
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                Digest::parse(&format!("sha256:{hex}")).ok()
            } else {
                continue;
            };
            if let Some(expected) = &expected
                && store.db.layer_by_diff_id(expected)?.is_some()
            {
                continue;
            }
            let offset = entry.raw_file_position();
            // A plain tar says `ustar` at byte 257; compressed layers and configs do not.
            let mut head = vec![0u8; 512];
            entry.read_exact(&mut head).map_err(io_error)?;
            if &head[257..262] != b"ustar" {
                continue;
            }
            let mut content = BufReader::with_capacity(1 << 20, io::Cursor::new(head).chain(entry));
            skipping.set(true);
            let compressed = compress_layer(dir.path(), &name, &mut content);
            skipping.set(false);
            let (row, blob, files) = compressed?;
            layers.insert(
                row.diff_id.clone(),
                PreparedLayer {
                    offset,
                    row,
                    blob,
                    files,
                },
            );
        }
        // Whatever follows the last entry (the end-of-archive blocks) belongs in the spool too.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(io_error)?;
    }
    file.flush().map_err(io_error)?;
    Ok(Prepared {
        layers,
        _dir: Some(dir),
    })
}

/// Reads the archive and copies what it read into the spool, except while `skipping`: then it
/// moves the spool's end forward, leaving a hole that takes no disk space and no writing.
struct SpoolTee<'a, R> {
    inner: R,
    file: &'a mut BufWriter<File>,
    skipping: &'a Cell<bool>,
}

impl<R: Read> Read for SpoolTee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.skipping.get() {
            self.file.seek(SeekFrom::Current(n as i64))?;
        } else {
            self.file.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}
