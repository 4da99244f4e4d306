//! The answer to every write: `405 UNSUPPORTED`, given after the body is read and thrown away.
//!
//! A client that is still sending its body when the answer comes cannot always read it: Go's
//! HTTP client (containerd's `ctr images push`) keeps writing into a connection the server no
//! longer reads and waits forever. Reading the body to its end first lets every client read the
//! answer on a connection it may keep. A body past `DRAIN_LIMIT`, or one still arriving after
//! `DRAIN_TIME`, gets the answer with `Connection: close` instead.

use std::time::Duration;

use actix_web::http::ConnectionType;
use actix_web::{HttpResponse, ResponseError, web};
use futures_util::StreamExt as _;

use crate::{RegistryError, Route};

/// Bytes of a refused body read before the answer (an image layer of a few MB fits).
const DRAIN_LIMIT: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

pub(crate) async fn refuse(method: &str, route: &Route, mut body: web::Payload) -> HttpResponse {
    let drain = async {
        let mut read = 0u64;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => read += chunk.len() as u64,
                Err(_) => return false,
            }
            if read > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    let drained = tokio::time::timeout(DRAIN_TIME, drain)
        .await
        .unwrap_or(false);
    let mut response = RegistryError::read_only(method, route).error_response();
    if !drained {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    response
}
