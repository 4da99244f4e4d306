//! Forwarding one request to a replica: round robin, another replica when one cannot be
//! reached, and the route's replicas held until the response has been sent.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::sync::Mutex;

use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::table::{Backends, normalize_host};

pub type ProxyBody = Either<Tracked, Full<Bytes>>;
/// The client the health checks use.
pub type Upstream = Client<HttpConnector, Either<Full<Bytes>, Incoming>>;

/// The client that checks replicas' health: HTTP/1.1, no Nagle delay.
pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections to one replica kept for connections to come.
const IDLE_PER_REPLICA: usize = 512;

/// What goes to a replica: the client's body, or nothing for a request without one.
type UpstreamBody = Either<Incoming, Empty<Bytes>>;
type Sender = SendRequest<UpstreamBody>;

/// Connections to replicas no client connection holds, ready for the next one.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
}

impl Pool {
    fn take(&self, target: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap();
        let senders = idle.get_mut(&target)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, target: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        let senders = idle.entry(target).or_default();
        if senders.len() < IDLE_PER_REPLICA {
            senders.push(sender);
        }
    }

    /// Forgets the connections to replicas no route names any more.
    pub fn keep_only(&self, targets: &std::collections::HashSet<SocketAddr>) {
        self.idle.lock().unwrap().retain(|t, _| targets.contains(t));
    }
}

/// The connections to replicas one client connection uses: requests on a kept-alive client
/// connection come one after the other, so each reuses the connection its predecessor used,
/// without a lock shared with other clients. They go back to the pool when the client leaves.
pub struct Affinity {
    pool: Arc<Pool>,
    senders: Mutex<HashMap<SocketAddr, Sender>>,
}

impl Affinity {
    pub fn new(pool: Arc<Pool>) -> Self {
        Affinity {
            pool,
            senders: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, target: SocketAddr) -> Option<Sender> {
        let kept = self.senders.lock().unwrap().remove(&target);
        kept.or_else(|| self.pool.take(target))
    }

    fn put(&self, target: SocketAddr, sender: Sender) {
        if let Some(replaced) = self.senders.lock().unwrap().insert(target, sender) {
            self.pool.put(target, replaced);
        }
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        for (target, sender) in self.senders.get_mut().unwrap().drain() {
            self.pool.put(target, sender);
        }
    }
}

async fn connect(target: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| format!("{target}: no connection within 5 s"))?
        .map_err(|e| format!("{target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{target}: {}", error_chain(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A replica's response body, which holds the route's replicas until it has been sent.
pub struct Tracked {
    inner: Incoming,
    _held: Arc<Backends>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The proxy's own answer.
pub fn answer(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(message + "\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The host name a request asks for: its Host header, else its URI's authority.
pub fn requested_host<B>(request: &Request<B>) -> String {
    let raw = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    normalize_host(raw)
}

/// Forwards `request`, which came from `client`, to one of `backends`. A request that was
/// not sent (no connection, or a kept connection the replica had closed) goes to the next
/// replica, body and all; a bodiless idempotent one also when a replica took it and failed.
pub async fn forward(
    affinity: &Affinity,
    backends: Arc<Backends>,
    request: Request<Incoming>,
    client: IpAddr,
) -> Response<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, client, parts.uri.scheme().is_none());
    if parts.uri.authority().is_some() {
        // The replica gets the path only; the Host header stays as the client sent it.
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        match path.parse() {
            Ok(uri) => parts.uri = uri,
            Err(e) => return answer(StatusCode::BAD_REQUEST, format!("invalid path: {e}")),
        }
    }
    // A request that changes nothing and has no body is sent again to the next replica when
    // one fails before it answers (it crashed, or cut the connection), as nginx does.
    let resend = body.is_end_stream() && parts.method.is_idempotent();
    let spare = resend.then(|| {
        let mut spare = Request::new(());
        *spare.method_mut() = parts.method.clone();
        *spare.uri_mut() = parts.uri.clone();
        *spare.version_mut() = parts.version;
        *spare.headers_mut() = parts.headers.clone();
        spare
    });
    let body = if body.is_end_stream() {
        Either::Right(Empty::new())
    } else {
        Either::Left(body)
    };
    let mut request = Request::from_parts(parts, body);
    let mut last_error = String::from("the service has no replica");
    'targets: for target in backends.order() {
        // Kept connections first; once a new connection was tried, the next replica.
        let mut fresh = false;
        loop {
            let mut sender = match affinity.take(target) {
                Some(sender) => sender,
                None => {
                    fresh = true;
                    match connect(target).await {
                        Ok(sender) => sender,
                        Err(e) => {
                            tracing::debug!(service = %backends.service, "replica unreachable: {e}");
                            last_error = e;
                            continue 'targets;
                        }
                    }
                }
            };
            if sender.ready().await.is_err() {
                if fresh {
                    last_error = format!("{target}: the connection closed at once");
                    continue 'targets;
                }
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    affinity.put(target, sender);
                    let (mut head, inner) = response.into_parts();
                    strip_hop_by_hop(&mut head.headers);
                    return Response::from_parts(
                        head,
                        Either::Left(Tracked {
                            inner,
                            _held: backends.clone(),
                        }),
                    );
                }
                Err(mut e) => {
                    last_error = format!("{target}: {}", error_chain(e.error()));
                    match e.take_message() {
                        // Not sent: another connection, or the next replica, can have it.
                        Some(unsent) => {
                            request = unsent;
                            if fresh {
                                continue 'targets;
                            }
                        }
                        // Sent, and no answer: again elsewhere only when that is safe.
                        None => match &spare {
                            Some(spare) => {
                                tracing::debug!(service = %backends.service, "no answer, sending again: {last_error}");
                                let mut again = Request::new(Either::Right(Empty::new()));
                                *again.method_mut() = spare.method().clone();
                                *again.uri_mut() = spare.uri().clone();
                                *again.version_mut() = spare.version();
                                *again.headers_mut() = spare.headers().clone();
                                request = again;
                                continue 'targets;
                            }
                            None => break 'targets,
                        },
                    }
                }
            }
        }
    }
    answer(
        StatusCode::BAD_GATEWAY,
        format!("no replica of {} answered ({last_error})", backends.service),
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes the headers that belong to one connection and not to the request or response.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Tells the replica who asked: X-Forwarded-For gains the client, X-Forwarded-Proto and
/// X-Forwarded-Host say how the proxy was reached.
fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, plain: bool) {
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    if plain {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
}

/// The address a connection came from, as replicas see it in X-Forwarded-For.
pub fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_stay_on_their_hop() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn forwarded_for_lists_every_hop() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
        add_forwarded(&mut headers, "10.0.0.2".parse().unwrap(), true);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.2");
        assert_eq!(headers["x-forwarded-host"], "shop.example");
        assert_eq!(headers["x-forwarded-proto"], "http");
        add_forwarded(&mut headers, "10.0.0.3".parse().unwrap(), true);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.2, 10.0.0.3");
        assert_eq!(
            client_ip("[::ffff:10.0.0.4]:1".parse().unwrap()),
            "10.0.0.4".parse::<IpAddr>().unwrap()
        );
    }
}
