//! buildgrid's blobs in an S3-compatible object store (AWS S3, Garage, Ceph RGW, SeaweedFS,
//! R2, MinIO): the second implementation of the store's blob port
//! ([`buildgrid_store::BlobBackend`]).
//!
//! The client is `object_store` (Apache Arrow's): one small, well-kept crate with S3's
//! multipart uploads, ranged GETs as streams, listing, presigned URLs and path-style addressing
//! for self-hosted stores, on the reqwest/hyper stack the workspace already builds. The AWS SDK
//! would bring a second HTTP stack and several times the build time for the same six calls.
//!
//! Blob `sha256:<hex>` is the object `<prefix>/sha256/<hex>` of the bucket. An object appears
//! only whole: a blob is verified in the local scratch directory first, then sent with one PUT
//! (small) or one multipart upload (large), which S3 makes visible only when it completes.
//!
//! The port is blocking; the client is async. The backend runs its own small runtime, and a
//! blocking call waits for its request on that runtime, so callers may be any thread that may
//! block. A blob's bytes arrive through a channel, readable blocking or as a stream from any
//! runtime.

mod body;
mod location;

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use buildgrid_core::Digest;
use buildgrid_store::{BlobBackend, BlobBody, StagedBlob, StoreError};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};

pub use location::S3Location;

/// Blobs up to this size go in one PUT; larger ones in a multipart upload of parts this size.
const PART: usize = 16 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Blobs looked up or deleted at once.
const CONCURRENT: usize = 16;
/// How long the start-up check waits for an answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

pub struct S3Blobs {
    client: Arc<AmazonS3>,
    location: S3Location,
    endpoint: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Blobs {
    /// A backend for `url` (`s3://<bucket>[/<prefix>]`) with the endpoint, region and
    /// credentials of the usual `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). Requests use
    /// path-style addressing unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`. It does not
    /// contact the store: [`BlobBackend::check`] does.
    pub fn from_env(url: &str) -> Result<S3Blobs, String> {
        S3Blobs::with_variables(url, std::env::vars())
    }

    /// [`S3Blobs::from_env`] with the variables given rather than read from the process.
    pub fn with_variables(
        url: &str,
        variables: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    ) -> Result<S3Blobs, String> {
        let location = S3Location::parse(url)?;
        let mut builder = AmazonS3Builder::new();
        for (name, value) in variables {
            let name = name.as_ref();
            if name.starts_with("AWS_")
                && let Ok(key) = name.to_ascii_lowercase().parse()
            {
                builder = builder.with_config(key, value.as_ref());
            }
        }
        let builder = builder.with_bucket_name(&location.bucket);
        let endpoint = builder
            .get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| "AWS S3".to_owned());
        let client = builder
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    // A slow client may take its time over a large blob streamed through us.
                    .with_timeout(Duration::from_secs(3600)),
            )
            // After the client options, which would reset it.
            .with_allow_http(endpoint.starts_with("http://"))
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| format!("{url}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the object store's threads: {e}"))?;
        Ok(S3Blobs {
            client: Arc::new(client),
            location,
            endpoint,
            runtime: Some(runtime),
        })
    }

    fn key(&self, digest: &Digest) -> Key {
        Key::from(format!(
            "{}sha256/{}",
            self.location.key_prefix(),
            digest.hex()
        ))
    }

    fn listing_prefix(&self) -> Key {
        Key::from(format!("{}sha256", self.location.key_prefix()))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the backend")
            .handle()
    }

    /// Runs `future` on the backend's runtime and waits for it (from any thread).
    fn run<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
            .recv()
            .expect("the object store's runtime finishes what it started")
    }

    fn error(&self, error: object_store::Error) -> StoreError {
        StoreError::Storage {
            place: self.describe(),
            message: explain(&error, &self.location.bucket),
        }
    }
}

impl Drop for S3Blobs {
    fn drop(&mut self) {
        // Dropped perhaps on an async thread, where waiting for the runtime is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One line saying what went wrong, in the operator's terms.
fn explain(error: &object_store::Error, bucket: &str) -> String {
    let text = error.to_string();
    let has = |s: &str| text.contains(s);
    if has("NoSuchBucket") {
        format!("the bucket {bucket} does not exist: create it, or name another")
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
        || has("403 Forbidden")
    {
        format!(
            "the store refused the credentials for bucket {bucket}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the key's rights on the bucket"
        )
    } else if has("error sending request")
        || has("Connection refused")
        || has("connect")
        || has("timed out")
    {
        format!("the store does not answer ({})", last_line(&text))
    } else {
        last_line(&text)
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_owned()
}

impl BlobBackend for S3Blobs {
    fn describe(&self) -> String {
        format!("{} at {}", self.location, self.endpoint)
    }

    fn check(&self) -> Result<(), StoreError> {
        let client = self.client.clone();
        let prefix = self.listing_prefix();
        let listed = self.run(async move {
            tokio::time::timeout(CHECK_TIMEOUT, async move {
                client
                    .list(Some(&prefix))
                    .next()
                    .await
                    .transpose()
                    .map(|_| ())
            })
            .await
        });
        match listed {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(StoreError::Storage {
                place: self.describe(),
                message: format!(
                    "the store does not answer within {} s",
                    CHECK_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let client = self.client.clone();
        let key = self.key(digest);
        match self.run(async move { client.head(&key).await }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobBody, StoreError> {
        let client = self.client.clone();
        let key = self.key(digest);
        let options = GetOptions {
            // S3 refuses an empty range; an empty one is an empty body.
            range: range
                .clone()
                .filter(|r| r.end > r.start)
                .map(GetRange::Bounded),
            ..GetOptions::default()
        };
        if range.is_some_and(|r| r.end <= r.start) {
            return Ok(BlobBody::Remote(Box::new(body::Body::empty())));
        }
        // The first answer says whether the blob is there; its bytes then flow through the
        // channel while the reader takes them.
        let opened = self.run(async move { client.get_opts(&key, options).await });
        let result = match opened {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::BlobMissing(digest.clone()));
            }
            Err(e) => return Err(self.error(e)),
        };
        let stream = result.into_stream().map_err(io::Error::other);
        Ok(BlobBody::Remote(Box::new(body::Body::spawn(
            self.handle(),
            stream,
        ))))
    }

    fn commit(&self, staged: &[StagedBlob]) -> Result<(), StoreError> {
        for blob in staged {
            if self.stat(&blob.digest)?.is_some() {
                let _ = std::fs::remove_file(&blob.path);
                continue;
            }
            let client = self.client.clone();
            let key = self.key(&blob.digest);
            let (path, size) = (blob.path.clone(), blob.size);
            let uploaded = self.run(async move { upload(client, key, path, size).await });
            match uploaded {
                Ok(()) => {
                    let _ = std::fs::remove_file(&blob.path);
                }
                Err(Upload::File(e)) => return Err(StoreError::io(&blob.path, e)),
                Err(Upload::Store(e)) => return Err(self.error(e)),
            }
        }
        Ok(())
    }

    fn delete(&self, digests: &[Digest]) -> Result<u64, StoreError> {
        let client = self.client.clone();
        let keys: Vec<Key> = digests.iter().map(|d| self.key(d)).collect();
        let deleted = self.run(async move {
            futures_util::stream::iter(keys)
                .map(|key| {
                    let client = client.clone();
                    async move {
                        match client.head(&key).await {
                            Ok(_) => client.delete(&key).await.map(|()| 1u64),
                            Err(object_store::Error::NotFound { .. }) => Ok(0),
                            Err(e) => Err(e),
                        }
                    }
                })
                .buffer_unordered(CONCURRENT)
                .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
                .await
        });
        deleted.map_err(|e| self.error(e))
    }

    fn list(
        &self,
        each: &mut dyn FnMut(Digest, u64),
        odd: &mut dyn FnMut(String),
    ) -> Result<(), StoreError> {
        let client = self.client.clone();
        let prefix = self.listing_prefix();
        let listed = self.run(async move {
            client
                .list(Some(&prefix))
                .map_ok(|meta| (meta.location, meta.size))
                .try_collect::<Vec<_>>()
                .await
        });
        for (key, size) in listed.map_err(|e| self.error(e))? {
            let name = key.filename().unwrap_or_default();
            match Digest::parse(&format!("sha256:{name}")) {
                Ok(digest) if key == self.key(&digest) => each(digest, size),
                _ => odd(format!("{}/{key}", self.location.bucket)),
            }
        }
        Ok(())
    }

    fn redirect_url(
        &self,
        digest: &Digest,
        lifetime: Duration,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client.clone();
        let key = self.key(digest);
        let signed =
            self.run(async move { client.signed_url(http::Method::GET, &key, lifetime).await });
        Ok(Some(signed.map_err(|e| self.error(e))?.to_string()))
    }

    fn local_path(&self, _digest: &Digest) -> Option<PathBuf> {
        None
    }
}

enum Upload {
    File(io::Error),
    Store(object_store::Error),
}

/// Sends the staged file at `path` to `key`: one PUT when small, else a multipart upload that
/// becomes visible only when it completes (and is aborted when it fails).
async fn upload(client: Arc<AmazonS3>, key: Key, path: PathBuf, size: u64) -> Result<(), Upload> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(&path).await.map_err(Upload::File)?;
    if size <= PART as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).await.map_err(Upload::File)?;
        client
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(Upload::Store)?;
        return Ok(());
    }
    let multipart = client.put_multipart(&key).await.map_err(Upload::Store)?;
    let mut writer = WriteMultipart::new_with_chunk_size(multipart, PART);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(Upload::File(e));
            }
        };
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(Upload::Store(e));
        }
        writer.write(&buffer[..n]);
    }
    writer.finish().await.map_err(Upload::Store)?;
    Ok(())
}
