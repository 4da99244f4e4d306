//! Logging setup: human-readable by default, JSON lines with `--log-json`; `RUST_LOG` filters.

use tracing_subscriber::EnvFilter;

/// What is logged unless `RUST_LOG` says otherwise. actix-http's connection dispatcher logs a
/// client's malformed request as an ERROR: Docker probes every registry with a TLS handshake on
/// the plain port first, so each `docker pull` would print one for a client doing nothing wrong.
const DEFAULT_FILTER: &str = "info,actix_server=warn,actix_http::h1::dispatcher=off";

pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
