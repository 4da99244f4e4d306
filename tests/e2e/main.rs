//! End-to-end tests of the `buildgrid` binary with real clients: the Docker engine, skopeo and
//! plain HTTP. They need a running Docker engine and skopeo; `.ci/run` installs what is missing.
//! A missing tool fails the test with what to install: these tests never skip.

mod access;
mod build;
mod fixtures;
mod import;
mod pull;
mod push;
mod support;
