use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use actix_files::HttpRange;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_core::{Digest, ErrorCode};
use bytes::{Bytes, BytesMut};
use futures_util::stream;

use crate::manifests::{matches_etag, parse_name, unknown};
use crate::{Registry, RegistryError};

/// Bytes read from disk per step of a blob stream.
const CHUNK: usize = 512 << 10;

pub(crate) async fn get(
    request: &HttpRequest,
    registry: &Registry,
    name: &str,
    digest: &str,
    head: bool,
) -> Result<HttpResponse, RegistryError> {
    let name = parse_name(name)?;
    let digest = Digest::parse(digest)
        .map_err(|e| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()))?;
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
                [range] => {
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
                [] => return Err(RegistryError::range_not_satisfiable(size)),
                _ => (0, size),
            }
        }
        None => (0, size),
    };
    if head {
        return Ok(crate::head_response(&mut response, length));
    }
    let file = Arc::new(registry.store.blobs.open_blob(&digest)?);
    Ok(response
        .no_chunking(length)
        .streaming(read_range(file, start, length)))
}

/// The bytes `start..start+length` of `file`, read on the blocking pool a chunk at a time, so
/// a large blob never sits in memory whole.
fn read_range(
    file: Arc<File>,
    start: u64,
    length: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    stream::try_unfold((start, start + length), move |(at, end)| {
        let file = file.clone();
        async move {
            if at >= end {
                return Ok(None);
            }
            let want = CHUNK.min((end - at) as usize);
            let chunk = web::block(move || -> std::io::Result<Bytes> {
                let mut buffer = BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    let n = file.read_at(&mut buffer[filled..], at + filled as u64)?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "blob is shorter than recorded",
                        ));
                    }
                    filled += n;
                }
                Ok(buffer.freeze())
            })
            .await
            .map_err(actix_web::error::ErrorInternalServerError)?
            .map_err(|error| {
                tracing::error!(%error, "reading a blob failed");
                actix_web::error::ErrorInternalServerError(error)
            })?;
            let next = at + chunk.len() as u64;
            Ok(Some((chunk, (next, end))))
        }
    })
}
