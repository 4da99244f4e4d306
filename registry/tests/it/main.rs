//! Integration tests of the registry: the real actix app over a store in a temporary data
//! directory, seeded from synthetic `docker save` and OCI archives.

mod access;
mod base;
mod blobs;
mod collected;
mod errors;
mod listing;
mod manifests;
mod protocol;
mod referrers;
mod support;
mod writes;
