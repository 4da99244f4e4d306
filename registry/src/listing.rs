//! Tag lists, the catalog and the referrers API.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use buildgrid_access::Principal;
use buildgrid_core::media_type::OCI_INDEX;
use buildgrid_core::{Digest, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::manifests::{parse_name, unknown, unstorable_digest};
use crate::{Registry, RegistryError};

/// The most entries one page lists, whatever `n` asks.
const PAGE_LIMIT: usize = 1000;

#[derive(Deserialize)]
struct PageQuery {
    n: Option<String>,
    last: Option<String>,
}

/// The page size and the entry to start after.
fn page(request: &HttpRequest) -> Result<(usize, Option<String>), RegistryError> {
    let query = web::Query::<PageQuery>::from_query(request.query_string()).map_err(|e| {
        RegistryError::new(
            ErrorCode::PaginationNumberInvalid,
            format!("bad query: {e}"),
        )
    })?;
    let query = query.into_inner();
    let n = match query.n.as_deref() {
        None | Some("") => PAGE_LIMIT,
        Some(text) => text.parse::<usize>().map_err(|_| {
            RegistryError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n must be a whole number of entries, not {text:?}"),
            )
        })?,
    };
    Ok((n.min(PAGE_LIMIT), query.last))
}

/// `entries` holds up to `n + 1` items; the extra one only says that a next page exists.
fn paginated(
    mut entries: Vec<String>,
    n: usize,
    path: &str,
    body: impl FnOnce(Vec<String>) -> Value,
) -> HttpResponse {
    let more = entries.len() > n;
    entries.truncate(n);
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if more && let Some(last) = entries.last() {
        response.insert_header((
            header::LINK,
            format!("<{path}?n={n}&last={last}>; rel=\"next\""),
        ));
    }
    response.body(body(entries).to_string())
}

pub(crate) fn tags(
    request: &HttpRequest,
    registry: &Registry,
    name: &str,
) -> Result<HttpResponse, RegistryError> {
    let name = parse_name(name)?;
    let (n, last) = page(request)?;
    let tags = registry.store.db.tags(&name, last.as_deref(), n + 1)?;
    if tags.is_empty() && !registry.store.db.repo_exists(&name)? {
        return Err(unknown(
            registry,
            &name,
            ErrorCode::NameUnknown,
            String::new(),
        ));
    }
    let path = format!("/v2/{name}/tags/list");
    Ok(paginated(
        tags,
        n,
        &path,
        |tags| json!({ "name": name.as_str(), "tags": tags }),
    ))
}

/// The repositories the principal may pull, a page at a time.
pub(crate) fn catalog(
    request: &HttpRequest,
    registry: &Registry,
    principal: &Principal,
) -> Result<HttpResponse, RegistryError> {
    let (n, mut last) = page(request)?;
    let mut names = Vec::new();
    let mut allowed: HashMap<String, bool> = HashMap::new();
    // Filtering may drop rows, so read batches until a page (and one more, for `Link`) is full.
    while names.len() <= n {
        let batch = registry
            .store
            .db
            .repositories(last.as_deref(), (n + 1).max(100))?;
        let Some(end) = batch.last().cloned() else {
            break;
        };
        for name in batch {
            let namespace = name.split('/').next().unwrap_or(&name).to_owned();
            let may = match allowed.get(&namespace) {
                Some(may) => *may,
                None => {
                    let may = registry.access.may_pull_namespace(principal, &namespace)?;
                    allowed.insert(namespace, may);
                    may
                }
            };
            if may && names.len() <= n {
                names.push(name);
            }
        }
        last = Some(end);
    }
    Ok(paginated(
        names,
        n,
        "/v2/_catalog",
        |names| json!({ "repositories": names }),
    ))
}

#[derive(Deserialize)]
struct ReferrersQuery {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

pub(crate) fn referrers(
    request: &HttpRequest,
    registry: &Registry,
    name: &str,
    digest: &str,
) -> Result<HttpResponse, RegistryError> {
    let name = parse_name(name)?;
    // A well-formed digest of an algorithm never stored here has no referrers: an empty index.
    let digest = match Digest::parse(digest) {
        Ok(digest) => Some(digest),
        Err(_) if unstorable_digest(digest) => None,
        Err(error) => {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                error.to_string(),
            ));
        }
    };
    let query = web::Query::<ReferrersQuery>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(ReferrersQuery {
            artifact_type: None,
        });
    let filter = query.artifact_type.filter(|t| !t.is_empty());
    if !registry.store.db.repo_exists(&name)? {
        return Err(unknown(
            registry,
            &name,
            ErrorCode::NameUnknown,
            String::new(),
        ));
    }
    let rows = match &digest {
        Some(digest) => registry
            .store
            .db
            .referrers(&name, digest, filter.as_deref())?,
        None => Vec::new(),
    };
    let manifests: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let mut descriptor = json!({
                "mediaType": row.media_type,
                "digest": row.digest.to_string(),
                "size": row.size,
            });
            if let Some(artifact_type) = row.artifact_type {
                descriptor["artifactType"] = json!(artifact_type);
            }
            if let Some(annotations) = row.annotations
                && let Ok(value) = serde_json::from_str::<Value>(&annotations)
            {
                descriptor["annotations"] = value;
            }
            descriptor
        })
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let mut response = HttpResponse::Ok();
    response.content_type(OCI_INDEX);
    if filter.is_some() {
        response.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    Ok(response.body(body.to_string()))
}
