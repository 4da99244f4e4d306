//! Builder integration tests: one binary (cargo's `tests/testsuite` layout), no Docker engine.
//! Git repositories are made with git2 in temporary directories and reached by `file://` URLs;
//! the store is a real one in a temporary data directory.

mod context;
mod context_errors;
mod fetch;
mod hooks;
mod queue;
mod support;
