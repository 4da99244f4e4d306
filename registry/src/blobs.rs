use std::fs::File;

use actix_files::HttpRange;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_core::{Digest, ErrorCode};
use buildgrid_store::{BlobBody, StoreError};
use bytes::Bytes;
use futures_util::{TryStreamExt, stream};

use crate::manifests::{matches_etag, parse_name, shorten, unknown, unstorable_digest};
use crate::{Registry, RegistryError};

/// Bytes of a blob mapped at a time: larger windows mean fewer map/unmap calls (each unmap
/// interrupts the other cores), smaller ones less memory per download.
const WINDOW: usize = 4 << 20;
/// Bytes handed to the connection at a time; actix copies each into its write buffer and writes
/// it out in one call. Measured with registry/bench/compare.sh: 64 KiB was 12% slower.
const SLICE: usize = 256 << 10;

pub(crate) async fn get(
    request: &HttpRequest,
    registry: &Registry,
    name: &str,
    digest: &str,
    head: bool,
) -> Result<HttpResponse, RegistryError> {
    let name = parse_name(name)?;
    let digest = match Digest::parse(digest) {
        Ok(digest) => digest,
        Err(_) if unstorable_digest(digest) => {
            return Err(unknown(
                registry,
                &name,
                ErrorCode::BlobUnknown,
                format!(
                    "blob {} is not in repository {name}: only sha256 digests are stored",
                    shorten(digest)
                ),
            ));
        }
        Err(error) => {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                error.to_string(),
            ));
        }
    };
    let Some(blob) = registry.store.db.repo_blob(&name, &digest)? else {
        return Err(unknown(
            registry,
            &name,
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not in repository {name}"),
        ));
    };
    let size = blob.size;
    let etag = format!("\"{digest}\"");

    let mut response = HttpResponse::Ok();
    response
        .content_type("application/octet-stream")
        .insert_header(("Docker-Content-Digest", digest.to_string()))
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "max-age=31536000, immutable"));
    if matches_etag(request, &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header(("Docker-Content-Digest", digest.to_string()))
            .insert_header((header::ETAG, etag))
            .finish());
    }

    let (start, length) = match request.headers().get(header::RANGE) {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| RegistryError::range_not_satisfiable(size))?;
            let ranges = HttpRange::parse(text, size)
                .map_err(|_| RegistryError::range_not_satisfiable(size))?;
            match ranges.as_slice() {
                // One range is served as asked; several are served as the whole blob.
                [range] if range.length > 0 => {
                    response.status(actix_web::http::StatusCode::PARTIAL_CONTENT);
                    response.insert_header((
                        header::CONTENT_RANGE,
                        format!(
                            "bytes {}-{}/{size}",
                            range.start,
                            range.start + range.length - 1
                        ),
                    ));
                    (range.start, range.length)
                }
                [_] | [] => return Err(RegistryError::range_not_satisfiable(size)),
                _ => (0, size),
            }
        }
        None => (0, size),
    };
    if head {
        return Ok(crate::head_response(&mut response, length));
    }
    let store = registry.store.clone();
    if let Some(lifetime) = registry.blob_redirect {
        // The client fetches the bytes from the object store itself, with its Range header.
        let at = digest.clone();
        let url = web::block(move || store.blobs.redirect_url(&at, lifetime))
            .await
            .map_err(|e| RegistryError::internal(&e))??;
        if let Some(url) = url {
            return Ok(HttpResponse::TemporaryRedirect()
                .insert_header(("Docker-Content-Digest", digest.to_string()))
                .insert_header((header::LOCATION, url))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish());
        }
    }
    let store = registry.store.clone();
    let range = start..start + length;
    let at = digest.clone();
    let opened = web::block(move || store.blobs.open(&at, Some(range)))
        .await
        .map_err(|e| RegistryError::internal(&e))?;
    let body = match opened {
        Ok(body) => body,
        // Collected between the row's lookup and the read: its row has gone too, and the
        // blob is unknown now. Bytes missing under a row that stays are the store's fault.
        Err(StoreError::BlobMissing(_))
            if registry.store.db.repo_blob(&name, &digest)?.is_none() =>
        {
            return Err(unknown(
                registry,
                &name,
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in repository {name}: it was just removed"),
            ));
        }
        Err(error) => return Err(error.into()),
    };
    let response = response.no_chunking(length);
    Ok(match body {
        BlobBody::File(file) => response.streaming(read_range(file, start, length)),
        BlobBody::Remote(body) => response.streaming(body.map_err(|error| {
            tracing::error!(%error, "reading a blob from the object store failed");
            actix_web::error::ErrorInternalServerError(error)
        })),
    })
}

/// The bytes `start..start + length` of `file`, mapped into memory a window at a time and handed
/// to the connection in slices: the pages go from the page cache to the socket without a read
/// copy, and a large blob never sits in memory whole.
fn read_range(
    file: File,
    start: u64,
    length: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let file = std::sync::Arc::new(file);
    let state = (Bytes::new(), start, start + length);
    stream::try_unfold(state, move |(mut window, mut unmapped, end)| {
        let file = file.clone();
        async move {
            if window.is_empty() {
                if unmapped >= end {
                    return Ok(None);
                }
                let len = WINDOW.min((end - unmapped) as usize);
                let at = unmapped;
                let map = web::block(move || map_window(&file, at, len))
                    .await
                    .map_err(actix_web::error::ErrorInternalServerError)?
                    .map_err(|error| {
                        tracing::error!(%error, "reading a blob failed");
                        actix_web::error::ErrorInternalServerError(error)
                    })?;
                window = Bytes::from_owner(map);
                unmapped += len as u64;
            }
            let slice = window.split_to(SLICE.min(window.len()));
            Ok(Some((slice, (window, unmapped, end))))
        }
    })
}

#[allow(unsafe_code)]
fn map_window(file: &File, offset: u64, len: usize) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: a blob file is written once in the staging area and renamed into place; nothing
    // writes to or truncates it afterwards (removal only unlinks it, which keeps the mapped
    // pages valid), so the mapping cannot change or shrink while it is alive.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)
    }
}
