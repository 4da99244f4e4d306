//! The checks every blob backend passes, run by each implementation's tests (the local one in
//! this crate, the object store's against a real server). Each check panics with what broke.

use std::io::{Read, Write};
use std::path::Path;

use buildgrid_core::Digest;

use super::{BlobBackend, BlobWriter, StagedBlob};
use crate::StoreError;

/// Runs every check against `backend`, staging in `scratch` (a local directory).
pub fn run(backend: &dyn BlobBackend, scratch: &Path) {
    missing_blobs_are_missing(backend);
    committed_blobs_read_whole_and_in_ranges(backend, scratch);
    an_empty_blob_is_a_blob(backend, scratch);
    a_write_that_stops_halfway_leaves_nothing(backend, scratch);
    a_digest_mismatch_is_refused(scratch);
    concurrent_writers_of_one_digest_agree(backend, scratch);
    delete_and_list(backend, scratch);
    backend.check().expect("the backend answers its check");
}

/// Incompressible bytes unlike any other run's.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the system has randomness");
    bytes
}

fn stage(scratch: &Path, bytes: &[u8]) -> StagedBlob {
    let mut writer = BlobWriter::create(scratch).unwrap();
    writer.write_all(bytes).unwrap();
    writer.finish(None).unwrap()
}

fn read_all(
    backend: &dyn BlobBackend,
    digest: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut reader = backend.open(digest, range.clone()).unwrap().into_reader();
    let mut bytes = Vec::new();
    match range {
        // A local file is positioned at the start; its reader runs to the file's end.
        Some(range) => {
            let mut limited = (&mut reader).take(range.end - range.start);
            limited.read_to_end(&mut bytes).unwrap();
        }
        None => {
            reader.read_to_end(&mut bytes).unwrap();
        }
    }
    bytes
}

fn missing_blobs_are_missing(backend: &dyn BlobBackend) {
    let digest = Digest::of(&random_bytes(32));
    assert_eq!(
        backend.stat(&digest).unwrap(),
        None,
        "stat of a blob never stored"
    );
    match backend.open(&digest, None) {
        Err(StoreError::BlobMissing(d)) => assert_eq!(d, digest),
        Err(other) => panic!("opening a missing blob: expected BlobMissing, got {other}"),
        Ok(_) => panic!("opening a missing blob succeeded"),
    }
    assert_eq!(
        backend.delete(&[digest]).unwrap(),
        0,
        "deleting a missing blob"
    );
}

fn committed_blobs_read_whole_and_in_ranges(backend: &dyn BlobBackend, scratch: &Path) {
    // Larger than one upload part of the object store, so that multipart uploads are covered.
    let bytes = random_bytes(21 << 20 | 12345);
    let staged = stage(scratch, &bytes);
    let digest = staged.digest.clone();
    assert_eq!(digest, Digest::of(&bytes));
    backend.commit(&[staged]).unwrap();
    assert_eq!(backend.stat(&digest).unwrap(), Some(bytes.len() as u64));
    assert!(
        read_all(backend, &digest, None) == bytes,
        "the whole blob reads back"
    );
    let len = bytes.len() as u64;
    for range in [
        0..1,
        0..4096,
        1000..5_000_000,
        len - 1..len,
        len / 2..len,
        0..len,
    ] {
        let got = read_all(backend, &digest, Some(range.clone()));
        assert!(
            got == bytes[range.start as usize..range.end as usize],
            "range {range:?} of a {len}-byte blob: {} bytes, not the right ones",
            got.len()
        );
    }
    // Committing the same digest again leaves the blob as it is.
    backend.commit(&[stage(scratch, &bytes)]).unwrap();
    assert_eq!(backend.stat(&digest).unwrap(), Some(len));
    backend.delete(&[digest]).unwrap();
}

fn an_empty_blob_is_a_blob(backend: &dyn BlobBackend, scratch: &Path) {
    let staged = stage(scratch, b"");
    let digest = staged.digest.clone();
    backend.commit(&[staged]).unwrap();
    assert_eq!(backend.stat(&digest).unwrap(), Some(0));
    assert!(read_all(backend, &digest, None).is_empty());
    assert_eq!(backend.delete(&[digest]).unwrap(), 1);
}

fn a_write_that_stops_halfway_leaves_nothing(backend: &dyn BlobBackend, scratch: &Path) {
    let bytes = random_bytes(1 << 20);
    let digest = Digest::of(&bytes);
    // The writer stops (an error, a crash) before it finishes: nothing is committed.
    let mut writer = BlobWriter::create(scratch).unwrap();
    writer.write_all(&bytes[..1000]).unwrap();
    drop(writer);
    assert_eq!(backend.stat(&digest).unwrap(), None);
    // The staged file goes away before the commit reads it: the commit fails, and nothing
    // is visible under the digest.
    let staged = stage(scratch, &bytes);
    std::fs::remove_file(&staged.path).unwrap();
    assert!(
        backend.commit(&[staged]).is_err(),
        "committing a vanished staged file"
    );
    assert_eq!(backend.stat(&digest).unwrap(), None);
    let mut listed = false;
    backend
        .list(&mut |d, _| listed |= d == digest, &mut |_| {})
        .unwrap();
    assert!(!listed, "a failed write is not listed");
}

fn a_digest_mismatch_is_refused(scratch: &Path) {
    let mut writer = BlobWriter::create(scratch).unwrap();
    writer.write_all(b"these bytes").unwrap();
    let wrong = Digest::of(b"other bytes");
    match writer.finish(Some(&wrong)) {
        Err(StoreError::DigestMismatch { expected, .. }) => assert_eq!(expected, wrong),
        Err(other) => panic!("a digest mismatch: expected DigestMismatch, got {other}"),
        Ok(_) => panic!("bytes that do not match their digest were staged"),
    }
}

fn concurrent_writers_of_one_digest_agree(backend: &dyn BlobBackend, scratch: &Path) {
    let bytes = random_bytes(3 << 20);
    let digest = Digest::of(&bytes);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let bytes = &bytes;
                scope.spawn(move || backend.commit(&[stage(scratch, bytes)]))
            })
            .collect();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
    });
    assert_eq!(backend.stat(&digest).unwrap(), Some(bytes.len() as u64));
    assert!(read_all(backend, &digest, None) == bytes);
    backend.delete(&[digest]).unwrap();
}

fn delete_and_list(backend: &dyn BlobBackend, scratch: &Path) {
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(1000 + i)).collect();
    let staged: Vec<StagedBlob> = blobs.iter().map(|b| stage(scratch, b)).collect();
    let digests: Vec<Digest> = staged.iter().map(|s| s.digest.clone()).collect();
    backend.commit(&staged).unwrap();
    let mut listed = Vec::new();
    backend
        .list(&mut |d, size| listed.push((d, size)), &mut |_| {})
        .unwrap();
    for (digest, bytes) in digests.iter().zip(&blobs) {
        assert!(
            listed.contains(&(digest.clone(), bytes.len() as u64)),
            "{digest} is listed with its size"
        );
    }
    assert_eq!(backend.delete(&digests[..2]).unwrap(), 2);
    assert_eq!(backend.stat(&digests[0]).unwrap(), None);
    assert_eq!(backend.stat(&digests[2]).unwrap(), Some(1002));
    let mut listed = Vec::new();
    backend
        .list(&mut |d, _| listed.push(d), &mut |_| {})
        .unwrap();
    assert!(!listed.contains(&digests[0]) && !listed.contains(&digests[1]));
    assert!(listed.contains(&digests[2]));
    assert_eq!(backend.delete(&digests).unwrap(), 1);
}
