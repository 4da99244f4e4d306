//! Builder integration tests.
