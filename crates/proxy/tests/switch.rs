//! The proxy on real sockets: replicas are HTTP servers on loopback, clients send real
//! requests through the proxy's port while routes switch, replicas stop and the proxy restarts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use buildgrid_proxy::control::{self, Command, HealthCheck, Reply};
use buildgrid_proxy::table::Route;
use buildgrid_proxy::{Proxy, Settings};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A replica: answers its name, `/up` with 200 (or 500 once made unhealthy), `/slow` after
/// half a second.
struct Replica {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Replica {
    async fn start(name: &'static str) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let mut tasks = JoinSet::new();
        let up = healthy.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let up = up.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let up = up.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let _ = request.into_body().collect().await;
                            let (status, body) = match path.as_str() {
                                "/up" if !up.load(Ordering::SeqCst) => {
                                    (StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned())
                                }
                                "/slow" => {
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                    (StatusCode::OK, name.to_owned())
                                }
                                _ => (StatusCode::OK, name.to_owned()),
                            };
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Replica {
            addr,
            healthy,
            tasks,
        }
    }

    /// Stops listening and cuts its connections, as a stopped container does.
    fn stop(mut self) {
        self.tasks.abort_all();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_proxy(state: &std::path::Path) -> Proxy {
    let proxy = Proxy::start(Settings {
        state: state.to_owned(),
        bind: "127.0.0.1".parse().unwrap(),
        workers: 2,
    })
    .await
    .unwrap();
    proxy.serve_control().unwrap();
    proxy
}

fn route(port: u16, targets: &[&Replica]) -> Route {
    Route {
        port,
        host: String::new(),
        service: "web".into(),
        targets: targets.iter().map(|r| r.addr).collect(),
    }
}

fn health() -> Option<HealthCheck> {
    Some(HealthCheck {
        path: "/up".into(),
        timeout_ms: 2_000,
    })
}

type Http = Client<HttpConnector, Empty<Bytes>>;

fn client(keep_alive: bool) -> Http {
    let mut builder = Client::builder(TokioExecutor::new());
    if !keep_alive {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(HttpConnector::new())
}

async fn get(client: &Http, port: u16, path: &str) -> Result<(StatusCode, String), String> {
    get_host(client, port, path, "").await
}

async fn get_host(
    client: &Http,
    port: u16,
    path: &str,
    host: &str,
) -> Result<(StatusCode, String), String> {
    let mut request = Request::get(format!("http://127.0.0.1:{port}{path}"));
    if !host.is_empty() {
        request = request.header("host", host);
    }
    let request = request.body(Empty::new()).unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// Clients sending requests through `port` until `stop` is set: half on kept-alive
/// connections, half on a new connection each.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: JoinSet<()>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        Load::start_with_host(port, clients, "")
    }

    fn start_with_host(port: u16, clients: usize, host: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for i in 0..clients {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            let http = client(i % 2 == 0);
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match get_host(&http, port, "/", host).await {
                        Ok((status, _)) if status.is_success() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) => {
                            failures.lock().unwrap().push(format!("{status} {body}"))
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            });
        }
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_deploys_under_load_answer_every_request_a_crash_included_and_an_unhealthy_one_never_takes_traffic()
 {
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy(state.path()).await;
    let port = free_port();
    let mut current = vec![Replica::start("v0").await, Replica::start("v0").await];
    proxy
        .deploy(
            route(port, &current.iter().collect::<Vec<_>>()),
            health(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let load = Load::start(port, 8);
    let names: Vec<&'static str> = (1..=50)
        .map(|i| &*Box::leak(format!("v{i}").into_boxed_str()))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let next = vec![Replica::start(name).await, Replica::start(name).await];
        if i == 4 {
            // This version never becomes healthy: the route stays where it was.
            next[1].healthy.store(false, Ordering::SeqCst);
            let err = proxy
                .deploy(
                    route(port, &next.iter().collect::<Vec<_>>()),
                    Some(HealthCheck {
                        path: "/up".into(),
                        timeout_ms: 300,
                    }),
                    Duration::from_secs(5),
                )
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("did not pass its health check"),
                "{err}"
            );
            let (_, body) = get(&client(true), port, "/").await.unwrap();
            assert_ne!(&body, name, "an unhealthy version took traffic");
            next.into_iter().for_each(Replica::stop);
            continue;
        }
        let report = proxy
            .deploy(
                route(port, &next.iter().collect::<Vec<_>>()),
                health(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(report.drained, "{report:?}");
        // The deploy stops the old replicas only once the proxy says they drained.
        for old in std::mem::replace(&mut current, next) {
            old.stop();
        }
        let (_, body) = get(&client(false), port, "/").await.unwrap();
        assert_eq!(&body, name);
        if i == 9 {
            // This version crashes a moment after it took the traffic: one replica dies with
            // its connections; requests it had go to the other.
            tokio::time::sleep(Duration::from_millis(300)).await;
            current.pop().unwrap().stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, failures) = load.finish().await;
    assert!(ok > 500, "only {ok} requests went through");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_connect_goes_to_another_replica() {
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy(state.path()).await;
    let port = free_port();
    let live = Replica::start("live").await;
    let gone = Replica::start("gone").await;
    let gone_addr = gone.addr;
    proxy
        .deploy(route(port, &[&live, &gone]), None, Duration::from_secs(1))
        .await
        .unwrap();
    gone.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let http = client(false);
    for _ in 0..20 {
        assert_eq!(
            get(&http, port, "/").await.unwrap(),
            (StatusCode::OK, "live".into())
        );
    }
    // With no replica left the answer says so.
    live.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = get(&http, port, "/").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("no replica of web answered"), "{body}");
    assert!(
        body.contains(&gone_addr.to_string()) || body.contains("127.0.0.1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_waits_for_the_replaced_replicas_open_requests() {
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy(state.path()).await;
    let port = free_port();
    let old = Replica::start("old").await;
    proxy
        .deploy(route(port, &[&old]), None, Duration::from_secs(1))
        .await
        .unwrap();
    let slow = tokio::spawn(async move { get(&client(false), port, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let new = Replica::start("new").await;
    let started = Instant::now();
    let report = proxy
        .deploy(route(port, &[&new]), health(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(report.drained);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the switch returned before the open request ended: {report:?}"
    );
    // The new replica answered at once, while the old one still had its request.
    assert!(report.switched_ms < 300, "{report:?}");
    assert_eq!(report.previous, vec![old.addr]);
    assert_eq!(slow.await.unwrap().unwrap(), (StatusCode::OK, "old".into()));
    assert_eq!(
        get(&client(false), port, "/").await.unwrap().1,
        "new".to_owned()
    );
    // A drain that does not end in time says so.
    let slow = tokio::spawn(async move { get(&client(false), port, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = proxy
        .deploy(route(port, &[&old]), None, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(!report.drained, "{report:?}");
    assert_eq!(slow.await.unwrap().unwrap().0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_come_back_after_a_restart_and_a_new_proxy_takes_over_under_load() {
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let replica = Replica::start("web").await;
    let first = start_proxy(state.path()).await;
    // Changes come through the control socket, as a deploy sends them.
    let reply = control::send(
        state.path(),
        &Command::Deploy {
            route: Route {
                port,
                host: "Shop.Example".into(),
                service: "shop".into(),
                targets: vec![replica.addr],
            },
            health: health(),
            drain_ms: 1_000,
        },
    )
    .await
    .unwrap();
    assert!(matches!(reply, Reply::Done(_)), "{reply:?}");
    let refused = control::send(
        state.path(),
        &Command::Deploy {
            route: Route {
                port,
                host: String::new(),
                service: "empty".into(),
                targets: vec![],
            },
            health: None,
            drain_ms: 0,
        },
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("at least one replica"),
        "{refused}"
    );

    // Only the named host is routed.
    let http = client(false);
    let request = |host: &'static str| {
        Request::get(format!("http://127.0.0.1:{port}/"))
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let answer = http.request(request("shop.example:80")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = http.request(request("other.example")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);

    // A second proxy on the same state and port starts beside the first, which then stops:
    // clients see no failure.
    let load = Load::start_with_host(port, 8, "shop.example");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Proxy::start(Settings {
        state: state.path().to_owned(),
        bind: "127.0.0.1".parse().unwrap(),
        workers: 2,
    })
    .await
    .unwrap();
    assert_eq!(second.routes().len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.stop(Duration::from_secs(5)).await;
    second.serve_control().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failures) = load.finish().await;
    assert!(ok > 100, "only {ok} requests went through");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the handover, e.g. {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    let Reply::Routes { routes } = control::send(state.path(), &Command::Routes).await.unwrap()
    else {
        panic!("not routes")
    };
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].host, "shop.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_and_host_name_belong_to_one_service() {
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy(state.path()).await;
    let port = free_port();
    let replica = Replica::start("web").await;
    proxy
        .deploy(route(port, &[&replica]), None, Duration::from_secs(1))
        .await
        .unwrap();
    let mut other = route(port, &[&replica]);
    other.service = "shop/other".into();
    let err = proxy
        .deploy(other.clone(), None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("port {port} is published by web: choose another port or host name")
    );
    // Under a host name of its own it may share the port.
    other.host = "other.example".into();
    proxy
        .deploy(other, None, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(proxy.routes().len(), 2);
    proxy
        .remove(port, "OTHER.example", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(proxy.routes().len(), 1);
}
