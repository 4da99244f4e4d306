//! Listing a layer's files in the same pass that hashes and compresses it.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use super::{FileKind, LayerEntry, LayerFiles};

/// Files captured whole when a layer holds them (at most `CAPTURE_LIMIT` bytes each).
pub(crate) const CAPTURED: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];
const CAPTURE_LIMIT: u64 = 64 << 10;
/// As large as the archive reader's buffer, so that reads of big files bypass it (no copy).
const READ_BUFFER: usize = 1 << 20;

/// Reads the layer tar `input` to its very end, writing every byte read into `copy` (the diff id
/// hash, the compressor), and lists its entries on the way. A layer whose tar cannot be parsed
/// still passes through whole, unlisted (`None`): the listing never changes what is stored.
pub(crate) fn read_layer(
    input: &mut dyn Read,
    copy: &mut dyn Write,
) -> io::Result<Option<LayerFiles>> {
    let mut tee = Tee {
        inner: input,
        copy,
        error: None,
    };
    let listed = list_entries(&mut tee);
    if let Some(error) = tee.error.take() {
        return Err(error);
    }
    if let Err(error) = &listed {
        tracing::warn!(%error, "a layer is not a tar that can be listed; its files are not shown");
    }
    // Whatever follows the entries (end-of-archive blocks, padding) belongs to the layer too.
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        match tee.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(tee.error.take().unwrap_or(error)),
        }
    }
    Ok(listed.ok())
}

/// Reads from `inner`, writes what it read into `copy`, and keeps the first I/O error of either
/// side, so that it is told apart from a tar that does not parse.
struct Tee<'a> {
    inner: &'a mut dyn Read,
    copy: &'a mut dyn Write,
    error: Option<io::Error>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self
            .inner
            .read(buf)
            .and_then(|n| self.copy.write_all(&buf[..n]).map(|()| n));
        match result {
            Err(error) if error.kind() != io::ErrorKind::Interrupted => {
                let echo = io::Error::new(error.kind(), error.to_string());
                self.error.get_or_insert(error);
                Err(echo)
            }
            other => other,
        }
    }
}

fn list_entries(input: &mut dyn Read) -> io::Result<LayerFiles> {
    let mut archive = tar::Archive::new(input);
    let mut files = LayerFiles::default();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut hardlinks = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                FileKind::File
            }
            tar::EntryType::Directory => FileKind::Dir,
            tar::EntryType::Symlink => FileKind::Symlink,
            tar::EntryType::Link => FileKind::Hardlink,
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            _ => FileKind::Other,
        };
        let mode = header.mode().unwrap_or(0) & 0o7777;
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let link = match kind {
            FileKind::Symlink | FileKind::Hardlink => entry
                .link_name_bytes()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            _ => None,
        };
        let size = if kind == FileKind::File {
            entry.size()
        } else {
            0
        };
        if kind == FileKind::File && size <= CAPTURE_LIMIT && CAPTURED.contains(&path.as_str()) {
            let mut content = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut content)?;
            files.captured.push((path.clone(), content));
        } else {
            while entry.read(&mut buf)? > 0 {}
        }
        if path.is_empty() {
            continue;
        }
        hardlinks |= kind == FileKind::Hardlink;
        files.entries.push(LayerEntry {
            path,
            kind,
            size,
            mode,
            link,
        });
    }
    if hardlinks {
        resolve_hardlinks(&mut files);
    }
    Ok(files)
}

/// A hard link shares its target's data: it gets the target's size (the target is an earlier
/// entry of the same tar), and a captured target is captured under the link's path too.
fn resolve_hardlinks(files: &mut LayerFiles) {
    let sizes: HashMap<String, u64> = files
        .entries
        .iter()
        .filter(|e| e.kind == FileKind::File)
        .map(|e| (e.path.clone(), e.size))
        .collect();
    let mut captured = Vec::new();
    for entry in &mut files.entries {
        if entry.kind != FileKind::Hardlink {
            continue;
        }
        let target = normalize(entry.link.as_deref().unwrap_or(""));
        entry.size = sizes.get(&target).copied().unwrap_or(0);
        if CAPTURED.contains(&entry.path.as_str())
            && let Some((_, content)) = files.captured.iter().find(|(p, _)| *p == target)
        {
            captured.push((entry.path.clone(), content.clone()));
        }
    }
    files.captured.extend(captured);
}

/// `./usr//bin/../lib/` → `usr/lib`; the root is the empty path; never climbs above the root.
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}
