use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use buildgrid_access::Principal;
use buildgrid_core::{Digest, ErrorCode, NameError, Reference, RepoName};
use buildgrid_store::{ManifestRow, StoreError};
use bytes::Bytes;

use crate::{Registry, RegistryError};

/// Manifest bytes by digest. Content under a digest never changes, so entries never go stale;
/// `get` looks the manifest's row up before the cache, so one garbage collection deleted
/// answers 404 even while its bytes are still cached here.
#[derive(Default)]
pub(crate) struct ManifestCache {
    entries: Mutex<HashMap<Digest, Bytes>>,
}

/// Why a manifest's bytes could not be read.
enum Missing {
    /// Not in the blob store.
    Blob,
    Other(RegistryError),
}

/// Past this many cached bytes the cache starts over.
const CACHE_LIMIT: usize = 8 << 20;

impl ManifestCache {
    /// The manifest from the cache, or read from the store on a blocking thread (an object
    /// store's read waits for the network).
    async fn get_or_load(
        &self,
        digest: &Digest,
        store: &Arc<buildgrid_store::Store>,
    ) -> Result<Bytes, Missing> {
        if let Some(bytes) = self.entries.lock().unwrap().get(digest) {
            return Ok(bytes.clone());
        }
        let (store, at) = (store.clone(), digest.clone());
        let bytes = actix_web::web::block(move || store.blobs.read(&at))
            .await
            .map_err(|e| Missing::Other(RegistryError::internal(&e)))?
            .map_err(|e| match e {
                StoreError::BlobMissing(_) => Missing::Blob,
                other => Missing::Other(other.into()),
            })?;
        let bytes = Bytes::from(bytes);
        let mut entries = self.entries.lock().unwrap();
        let used: usize = entries.values().map(Bytes::len).sum();
        if used + bytes.len() > CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(digest.clone(), bytes.clone());
        Ok(bytes)
    }
}

/// Whether `text` is a well-formed digest of an algorithm the OCI image spec registers other
/// than sha256: valid, but nothing is stored under it, since this registry stores sha256 only.
pub(crate) fn unstorable_digest(text: &str) -> bool {
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha512" => 128,
        "blake3" => 64,
        _ => return false,
    };
    encoded.len() == length
        && encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}

pub(crate) fn parse_name(name: &str) -> Result<RepoName, RegistryError> {
    RepoName::parse(name).map_err(RegistryError::invalid_name)
}

/// The error for something missing from a repository: the repository itself, or the thing.
pub(crate) fn unknown(
    registry: &Registry,
    name: &RepoName,
    code: ErrorCode,
    what: String,
) -> RegistryError {
    match registry.store.db.repo_exists(name) {
        Ok(false) => RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is not known to this registry"),
        ),
        Ok(true) => RegistryError::new(code, what),
        Err(error) => error.into(),
    }
}

pub(crate) async fn get(
    request: &HttpRequest,
    registry: &Registry,
    principal: &Principal,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<HttpResponse, RegistryError> {
    let name = parse_name(name)?;
    let reference = match Reference::parse(reference) {
        Ok(reference) => reference,
        // Nothing is ever stored under a tag that breaks the rule, or under a digest of another
        // algorithm: such a manifest is unknown (uploads are where invalid input is refused).
        Err(error @ NameError::InvalidTag(_)) => {
            return Err(unknown(
                registry,
                &name,
                ErrorCode::ManifestUnknown,
                format!("no manifest is tagged so in repository {name}: {error}"),
            ));
        }
        Err(_) if unstorable_digest(reference) => {
            return Err(unknown(
                registry,
                &name,
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {} is not in repository {name}: only sha256 digests are stored",
                    shorten(reference)
                ),
            ));
        }
        Err(error) => return Err(RegistryError::invalid_name(error)),
    };
    let row: Option<ManifestRow> = match &reference {
        Reference::Tag(tag) => registry.store.db.manifest_by_tag(&name, tag)?,
        Reference::Digest(digest) => registry.store.db.manifest_by_digest(&name, digest)?,
    };
    let Some(row) = row else {
        return Err(unknown(
            registry,
            &name,
            ErrorCode::ManifestUnknown,
            format!("manifest {reference} is not in repository {name}"),
        ));
    };
    let etag = format!("\"{}\"", row.digest);
    let not_modified = matches_etag(request, &etag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CONTENT_TYPE, row.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", row.digest.to_string()))
        .insert_header((header::ETAG, etag.as_str()));
    // Audited whether the client reads the manifest or only checks it (a pull of an image the
    // engine has already is a HEAD), downloads only when the client GETs it: a pull. Docker 20.10
    // and containerd resolve a tag with a HEAD and GET the manifest only when they lack it, so
    // an engine that pulls an image again is not counted again.
    if !registry.store.db.namespace_is_public(name.namespace())? {
        registry.access.record(
            principal,
            "pull",
            &match &reference {
                Reference::Tag(tag) => format!("{name}:{tag} ({})", row.digest),
                Reference::Digest(digest) => format!("{name}@{digest}"),
            },
            &crate::auth::client(request),
        );
    }
    if head {
        return Ok(crate::head_response(&mut response, row.size));
    }
    // A GET answered 304 is a client pulling from its cache of the manifest: still a pull.
    registry.downloads.record(&name, &row.digest);
    if not_modified {
        return Ok(response.finish());
    }
    let bytes = match registry
        .manifests
        .get_or_load(&row.digest, &registry.store)
        .await
    {
        Ok(bytes) => bytes,
        // Collected between the row's lookup and the read: unknown now, as its row says.
        Err(Missing::Blob)
            if registry
                .store
                .db
                .manifest_by_digest(&name, &row.digest)?
                .is_none() =>
        {
            return Err(unknown(
                registry,
                &name,
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in repository {name}: it was just removed"),
            ));
        }
        Err(Missing::Blob) => {
            return Err(RegistryError::internal(&StoreError::BlobMissing(
                row.digest.clone(),
            )));
        }
        Err(Missing::Other(error)) => return Err(error),
    };
    Ok(response.body(bytes))
}

pub(crate) fn matches_etag(request: &HttpRequest, etag: &str) -> bool {
    request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}
