//! Random access to the members of a tar archive on disk, without unpacking it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::IngestError;

/// Metadata files (`manifest.json`, `index.json`, configs, manifests) above this size are refused.
const JSON_LIMIT: u64 = 64 << 20;

pub(crate) struct Archive {
    path: PathBuf,
    file: File,
    files: HashMap<String, Member>,
    /// Members whose content the archive file does not hold, by offset (see `fill_holes`).
    holes: HashMap<u64, Substitute>,
}

/// Where the content of a member that is a hole in the archive file is found instead: the layer
/// blob compressed from it while the archive was spooled.
pub(crate) struct Substitute {
    pub path: PathBuf,
    pub gzip: bool,
}

#[derive(Clone, Debug)]
enum Member {
    File { offset: u64, size: u64 },
    Symlink(String),
    Hardlink(String),
}

impl Archive {
    pub(crate) fn open(path: &Path) -> Result<Archive, IngestError> {
        let mut file = File::open(path).map_err(|source| IngestError::Open {
            path: path.to_owned(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| IngestError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        let not_tar = |reason: String| IngestError::NotAnArchive {
            path: path.to_owned(),
            reason,
        };
        let mut magic = [0u8; 2];
        if file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
            return Err(not_tar(
                "it is gzip-compressed; decompress it first (gunzip)".into(),
            ));
        }
        if len < 512 {
            return Err(not_tar(format!("it is only {len} bytes long")));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| not_tar(e.to_string()))?;
        let mut tar = tar::Archive::new(BufReader::new(&file));
        let mut files = HashMap::new();
        // Where the last entry's data ends, padded to a block: tar's end marker follows.
        let mut end_of_entries = 0u64;
        let truncated = |member: String, end: u64| IngestError::Truncated {
            path: path.to_owned(),
            member,
            end,
            len,
        };
        let entries = tar
            .entries_with_seek()
            .map_err(|e| not_tar(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                if end_of_entries > 0 && e.to_string().contains("entire block") {
                    truncated("the next entry".into(), end_of_entries + 512)
                } else {
                    not_tar(e.to_string())
                }
            })?;
            end_of_entries =
                end_of_entries.max(entry.raw_file_position() + entry.size().div_ceil(512) * 512);
            let name = entry.path().map_err(|e| not_tar(e.to_string()))?;
            let name = normalize(&name.to_string_lossy());
            let kind = entry.header().entry_type();
            let member = if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| not_tar(e.to_string()))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if kind.is_symlink() {
                    Member::Symlink(target)
                } else {
                    Member::Hardlink(normalize(&target))
                }
            } else if kind.is_file() {
                let offset = entry.raw_file_position();
                let size = entry.size();
                if offset + size > len {
                    return Err(truncated(name, offset + size));
                }
                Member::File { offset, size }
            } else {
                continue;
            };
            files.insert(name, member);
        }
        if files.is_empty() {
            return Err(not_tar("it holds no files".into()));
        }
        // A tar ends with zero blocks; without them the file was cut between two entries.
        let mut marker = [0u8; 512];
        let has_marker = (&file)
            .seek(SeekFrom::Start(end_of_entries))
            .and_then(|_| (&file).read_exact(&mut marker))
            .is_ok()
            && marker.iter().all(|&b| b == 0);
        if !has_marker {
            return Err(truncated(
                "the end-of-archive marker".into(),
                end_of_entries + 1024,
            ));
        }
        Ok(Archive {
            path: path.to_owned(),
            file,
            files,
            holes: HashMap::new(),
        })
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    /// The offset and size of a regular file, following links inside the archive.
    fn resolve(&self, name: &str) -> Result<(u64, u64), IngestError> {
        let mut name = normalize(name);
        for _ in 0..16 {
            match self.files.get(&name) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Hardlink(target)) => name = target.clone(),
                Some(Member::Symlink(target)) => {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    name = normalize(&format!("{dir}/{target}"));
                }
                None => break,
            }
        }
        Err(IngestError::MissingMember {
            path: self.path.clone(),
            member: name,
        })
    }

    pub(crate) fn size(&self, name: &str) -> Result<u64, IngestError> {
        Ok(self.resolve(name)?.1)
    }

    /// Says where to read the members at these offsets, which the archive file holds as holes.
    pub(crate) fn fill_holes(&mut self, holes: HashMap<u64, Substitute>) {
        self.holes = holes;
    }

    pub(crate) fn reader(&self, name: &str) -> Result<Box<dyn BufRead>, IngestError> {
        let (offset, size) = self.resolve(name)?;
        if let Some(substitute) = self.holes.get(&offset) {
            let file = File::open(&substitute.path).map_err(|source| IngestError::Open {
                path: substitute.path.clone(),
                source,
            })?;
            let file = BufReader::with_capacity(1 << 20, file);
            return Ok(if substitute.gzip {
                let decoder = flate2::bufread::MultiGzDecoder::new(file);
                Box::new(BufReader::with_capacity(1 << 20, decoder.take(size)))
            } else {
                Box::new(file.take(size))
            });
        }
        let mut file = self.file.try_clone().map_err(|source| IngestError::Open {
            path: self.path.clone(),
            source,
        })?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|source| IngestError::Open {
                path: self.path.clone(),
                source,
            })?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, file.take(size))))
    }

    /// A small metadata file, whole.
    pub(crate) fn read_json_file(&self, name: &str) -> Result<Vec<u8>, IngestError> {
        let size = self.size(name)?;
        if size > JSON_LIMIT {
            return Err(IngestError::Invalid(format!(
                "{name} is {size} bytes, more than the {JSON_LIMIT} bytes a metadata file may have"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        self.reader(name)?
            .read_to_end(&mut bytes)
            .map_err(|source| IngestError::Open {
                path: self.path.clone(),
                source,
            })?;
        Ok(bytes)
    }
}

/// `./a//b/../c` → `a/c`; never climbs above the archive root.
pub(crate) fn normalize(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
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

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_member_names() {
        assert_eq!(normalize("./manifest.json"), "manifest.json");
        assert_eq!(normalize("abc/../def/layer.tar"), "def/layer.tar");
        assert_eq!(normalize("../../etc/passwd"), "etc/passwd");
        assert_eq!(normalize("blobs//sha256/x"), "blobs/sha256/x");
    }
}
