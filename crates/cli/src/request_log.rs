//! One log line per request, and its id.
//!
//! Every request gets a `RequestId`: the client's `X-Request-Id` when it is a sane short token,
//! else a new one. It goes into the request's extensions (handlers carry it into the build
//! logs they start), the response's `X-Request-Id` header, the tracing span the handler runs in,
//! and the request's log line. The line is written when the response body is done (or dropped,
//! when the client goes away), so its bytes and duration cover a streamed blob whole.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage};
use buildgrid_core::{RequestId, RequestUser};
use tracing::Instrument;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// App middleware: gives the request its id and logs it once its response is done.
pub fn observe<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<Logged>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(new_id);
    request.extensions_mut().insert(id.clone());
    let line = Line {
        started: Instant::now(),
        method: request.method().to_string(),
        path: request.path().to_owned(),
        route: request.match_pattern(),
        client: request.peer_addr().map(|a| a.ip()),
        id: id.clone(),
        status: 0,
        user: None,
    };
    let span = tracing::info_span!("request", id = %id);
    let call = service.call(request).instrument(span);
    async move {
        let mut response = match call.await {
            Ok(response) => response.map_into_boxed_body(),
            // An error no handler turned into a response: actix answers it, the line is written
            // now.
            Err(error) => {
                drop(Logged {
                    body: BoxBody::new(()),
                    bytes: 0,
                    line: Some(Line {
                        status: error.as_response_error().status_code().as_u16(),
                        ..line
                    }),
                });
                return Err(error);
            }
        };
        if let Ok(value) = HeaderValue::from_str(id.as_str()) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        let line = Line {
            status: response.status().as_u16(),
            user: response
                .request()
                .extensions()
                .get::<RequestUser>()
                .map(|u| u.0.clone()),
            ..line
        };
        Ok(response.map_body(|_, body| Logged {
            body,
            bytes: 0,
            line: Some(line),
        }))
    }
}

fn new_id() -> RequestId {
    let mut bytes = [0u8; 16];
    // The OS's generator does not fail on the systems buildgrid runs on; an all-zero id would
    // still be an id.
    let _ = getrandom::fill(&mut bytes);
    RequestId::from_random(bytes)
}

/// What a request's log line says.
struct Line {
    started: Instant,
    id: RequestId,
    method: String,
    path: String,
    route: Option<String>,
    status: u16,
    client: Option<IpAddr>,
    user: Option<String>,
}

/// A response body that counts what it sends and writes the request's log line when dropped.
pub struct Logged {
    body: BoxBody,
    bytes: u64,
    line: Option<Line>,
}

impl MessageBody for Logged {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            this.bytes += chunk.len() as u64;
        }
        next
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let Some(line) = self.line.take() else {
            return;
        };
        // Milliseconds, to a tenth.
        let duration_ms = (line.started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        tracing::info!(
            target: "buildgrid::request",
            id = %line.id,
            method = %line.method,
            path = %line.path,
            route = line.route.as_deref(),
            status = line.status,
            bytes = self.bytes,
            duration_ms,
            client = line.client.map(|ip| ip.to_string()).as_deref(),
            user = line.user.as_deref(),
            "request"
        );
    }
}
