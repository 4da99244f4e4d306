//! Names, references, digests and media types shared by every buildgrid crate.
//!
//! Everything here is pure: no I/O, no async runtime, no HTTP server, no Docker engine.

pub mod app;
mod digest;
mod error_code;
pub mod media_type;
mod name;
mod request;
mod text;

pub use app::{AppError, AppRef};
pub use digest::{Digest, DigestError, Sha256Writer};
pub use error_code::ErrorCode;
pub use name::{NameError, Reference, RepoName, Tag};
pub use request::{RequestId, RequestUser};
pub use text::escape_control;
