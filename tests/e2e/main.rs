//! End-to-end tests of the `buildgrid` binary with real clients: the Docker engine, skopeo,
//! plain HTTP and headless Chromium. They need a running Docker engine, skopeo, Chromium and
//! chromedriver; `.ci/run` installs what is missing.
//! A missing tool fails the test with what to install: these tests never skip.

mod access;
mod audit_text;
mod backup;
mod build;
mod burst;
mod config;
mod deploy;
mod deploy_faults;
mod deploy_leases;
mod deploy_logs;
mod deploy_proxy;
mod deploy_prune;
mod deploy_sources;
mod deploy_web;
mod engine_prune;
mod engines;
mod fixtures;
mod full_disk;
#[path = "../garage.rs"]
mod garage;
mod gc;
mod hardening;
mod import;
mod installs;
mod isolation;
mod object_store;
mod operations;
mod private_data;
mod pull;
mod push;
mod push_log;
mod registry_protocol;
mod remote_engines;
mod stream_isolation;
mod support;
mod web;
mod web_forms;
mod web_image;
mod web_images;
mod web_live;
