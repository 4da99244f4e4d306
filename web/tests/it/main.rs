//! Integration tests of the web pages: the real actix app over a store in a temporary data
//! directory, seeded as the builder and ingest write it, requests sent in process.

mod access;
mod apps;
mod build_log;
mod build_now;
mod deploys;
mod forms;
mod gc;
mod image;
mod image_pages;
mod isolation;
mod live;
mod messages;
mod seed;
mod storage;
mod support;
mod timeline;
