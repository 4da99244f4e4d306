//! The object-store backend against a real one-node Garage on loopback: the checks every blob
//! backend passes, streams read from another runtime, presigned URLs, prefixes that keep
//! stores apart, and one clear line for each way the store can be unusable.

#[path = "../../../tests/garage.rs"]
mod garage;

use std::io::Read;

use buildgrid_core::Digest;
use buildgrid_s3::S3Blobs;
use buildgrid_store::{BlobBackend, BlobBody, BlobWriter, StoreError, conformance};
use futures_util::TryStreamExt;
use garage::Garage;

fn backend(garage: &Garage, url: &str) -> S3Blobs {
    S3Blobs::with_variables(url, garage.env()).unwrap()
}

fn commit(backend: &S3Blobs, scratch: &std::path::Path, bytes: &[u8]) -> Digest {
    let mut writer = BlobWriter::create(scratch).unwrap();
    std::io::Write::write_all(&mut writer, bytes).unwrap();
    let staged = writer.finish(None).unwrap();
    let digest = staged.digest.clone();
    backend.commit(&[staged]).unwrap();
    digest
}

#[test]
fn the_object_store_backend_passes_the_blob_conformance_checks() {
    let garage = Garage::start();
    let scratch = tempfile::tempdir().unwrap();
    let blobs = backend(&garage, &format!("s3://{}/conformance", garage.bucket));
    conformance::run(&blobs, scratch.path());
}

#[test]
fn bodies_stream_on_any_runtime_and_presigned_urls_serve_ranges() {
    let garage = Garage::start();
    let scratch = tempfile::tempdir().unwrap();
    let blobs = backend(&garage, &format!("s3://{}", garage.bucket));
    let bytes = conformance::random_bytes(5 << 20);
    let digest = commit(&blobs, scratch.path(), &bytes);

    // Polled as a stream on a runtime of the caller's own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Ok(BlobBody::Remote(body)) = blobs.open(&digest, Some(100..4_000_100)) else {
        panic!("an object store hands out remote bodies");
    };
    let chunks: Vec<bytes::Bytes> = runtime.block_on(body.try_collect()).unwrap();
    assert!(chunks.concat() == bytes[100..4_000_100]);

    // A presigned URL needs no credentials and honours Range.
    let url = blobs
        .redirect_url(&digest, std::time::Duration::from_secs(60))
        .unwrap()
        .expect("an object store has presigned URLs");
    let response = reqwest::blocking::Client::new()
        .get(&url)
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 206);
    assert!(response.bytes().unwrap()[..] == bytes[10..20]);
    let whole = reqwest::blocking::get(&url).unwrap().bytes().unwrap();
    assert!(whole[..] == bytes[..]);
}

#[test]
fn prefixes_keep_stores_apart() {
    let garage = Garage::start();
    let scratch = tempfile::tempdir().unwrap();
    let one = backend(&garage, &format!("s3://{}/one", garage.bucket));
    let two = backend(&garage, &format!("s3://{}/two", garage.bucket));
    let digest = commit(&one, scratch.path(), b"only in one");
    assert_eq!(one.stat(&digest).unwrap(), Some(11));
    assert_eq!(two.stat(&digest).unwrap(), None);
    let mut listed = Vec::new();
    two.list(&mut |d, _| listed.push(d), &mut |_| {}).unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let mut text = String::new();
    one.open(&digest, None)
        .unwrap()
        .into_reader()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "only in one");
}

#[test]
fn an_unusable_store_is_one_clear_line() {
    let garage = Garage::start();
    let check = |url: &str, variables: Vec<(&'static str, String)>| -> String {
        let blobs = S3Blobs::with_variables(url, variables).unwrap();
        let error = blobs.check().expect_err("the check fails");
        assert!(matches!(error, StoreError::Storage { .. }), "{error:?}");
        let line = error.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        line
    };
    let no_bucket = check("s3://no-such-bucket", garage.env());
    assert!(
        no_bucket.contains("the bucket no-such-bucket does not exist"),
        "{no_bucket}"
    );

    let mut wrong_secret = garage.env();
    for (name, value) in &mut wrong_secret {
        if *name == "AWS_SECRET_ACCESS_KEY" {
            *value = "0".repeat(64);
        }
    }
    let refused = check(&format!("s3://{}", garage.bucket), wrong_secret);
    assert!(refused.contains("refused the credentials"), "{refused}");

    let mut nobody = garage.env();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for (name, value) in &mut nobody {
        if *name == "AWS_ENDPOINT_URL" {
            *value = format!("http://127.0.0.1:{port}");
        }
    }
    let started = std::time::Instant::now();
    let silent = check(&format!("s3://{}", garage.bucket), nobody);
    assert!(silent.contains("does not answer"), "{silent}");
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
}
