//! Integration tests of buildgrid-store: synthetic image archives (legacy `docker save`, OCI
//! layouts, multi-platform indexes) imported into a store in a temporary directory.

mod bad_input;
mod blob_backend;
mod branch_tags;
mod gc;
mod image_archive;
mod image_details;
mod image_files;
mod ingest;
mod leases;
mod listing;
mod multi_platform;
mod private_dir;
mod secret_env;
mod sources;
mod spool;
mod support;
