//! The web pages over a store in a temporary data directory, driven in process.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{App, test};
use buildgrid_access::Access;
use buildgrid_store::Store;

/// The registry host pages show: from the public URL the settings give.
pub const HOST: &str = "registry.test:5000";
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub access: Arc<Access>,
    /// How often the pages woke the builder.
    pub woken: Arc<AtomicUsize>,
    /// What the pages asked to deploy, and what servers report running.
    pub deployer: Arc<RecordingDeployer>,
    /// What the pages' workers share; a test may give smaller limits.
    pub shared: buildgrid_web::Shared,
}

/// A deployer that records what it was asked and reports set containers.
#[derive(Default)]
pub struct RecordingDeployer {
    pub asked: std::sync::Mutex<Vec<(i64, i64, String)>>,
    pub running: std::sync::Mutex<Vec<buildgrid_web::ServerRunning>>,
    /// How often the pages asked what runs.
    pub asked_running: AtomicUsize,
}

impl buildgrid_web::Deployer for RecordingDeployer {
    fn deploy(
        &self,
        app_id: i64,
        build: i64,
        trigger: String,
        _request: Option<buildgrid_core::RequestId>,
    ) {
        self.asked.lock().unwrap().push((app_id, build, trigger));
    }

    fn running(
        &self,
        _app: buildgrid_core::AppRef,
    ) -> buildgrid_web::BoxFuture<Vec<buildgrid_web::ServerRunning>> {
        self.asked_running.fetch_add(1, Ordering::SeqCst);
        let running = self.running.lock().unwrap().clone();
        Box::pin(async move { running })
    }
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
    // The pages' own tests read as anonymous visitors: their namespaces are public. The
    // `access` module makes private ones.
    // Their logs too: the `isolation` module makes a public namespace that keeps its logs to
    // its members.
    for namespace in ["acme", "library"] {
        store.db.set_namespace_public(namespace, true).unwrap();
        store.db.set_namespace_logs_public(namespace, true).unwrap();
    }
    let access = Arc::new(Access::new(store.clone()).unwrap());
    TestApp {
        dir,
        store,
        access,
        woken: Arc::default(),
        deployer: Arc::default(),
        shared: buildgrid_web::Shared::default(),
    }
}

/// A signed-in browser: its session cookie and the CSRF token of its forms.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    /// `request` sent with this session's cookie.
    pub fn on(&self, request: test::TestRequest) -> test::TestRequest {
        request.insert_header(("Cookie", format!("bg_session={}", self.cookie)))
    }
}

impl TestApp {
    pub fn settings(&self) -> buildgrid_web::Settings {
        let woken = self.woken.clone();
        buildgrid_web::Settings {
            public_url: format!("http://{HOST}/"),
            wake: Arc::new(move || {
                woken.fetch_add(1, Ordering::SeqCst);
            }),
            access: self.access.clone(),
            deployer: Some(self.deployer.clone()),
            shared: self.shared.clone(),
        }
    }

    /// Creates a user (a member of `namespaces`) and signs it in.
    pub fn sign_in(&self, name: &str, admin: bool, namespaces: &[&str]) -> Session {
        let (user, _) = buildgrid_access::create_user(&self.store, name, admin).unwrap();
        for namespace in namespaces {
            self.store.db.add_member(namespace, user.id).unwrap();
        }
        let session = buildgrid_access::create_session(&self.store, &user).unwrap();
        Session {
            cookie: session.secret,
            csrf: session.csrf,
        }
    }

    /// Sends `request` to the pages and returns the response with its body not yet read.
    pub async fn send(&self, request: test::TestRequest) -> ServiceResponse<BoxBody> {
        let store = self.store.clone();
        let settings = self.settings();
        let service = test::init_service(
            App::new().configure(move |cfg| buildgrid_web::configure(cfg, store, settings)),
        )
        .await;
        test::call_service(&service, request.to_request())
            .await
            .map_into_boxed_body()
    }

    pub async fn get(&self, uri: &str) -> Page {
        read(self.send(test::TestRequest::get().uri(uri)).await).await
    }

    /// A page that must answer 200.
    pub async fn ok(&self, uri: &str) -> String {
        let page = self.get(uri).await;
        assert_eq!(page.status, StatusCode::OK, "GET {uri}:\n{}", page.body);
        page.body
    }
}

/// A header's value as text, empty when missing.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub async fn read(response: ServiceResponse<BoxBody>) -> Page {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    Page {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// An open event stream, read as it comes.
pub struct EventStream {
    body: BoxBody,
    pub received: String,
}

impl EventStream {
    pub fn new(response: ServiceResponse<BoxBody>) -> EventStream {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(response.headers(), "content-type"),
            "text/event-stream",
            "an event stream"
        );
        EventStream {
            body: response.into_body(),
            received: String::new(),
        }
    }

    /// Reads until what was received contains `text`; fails after a few seconds.
    pub async fn until(&mut self, text: &str) -> &str {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.received.contains(text) {
            let chunk = tokio::time::timeout_at(
                deadline,
                std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_next(cx)),
            )
            .await
            .unwrap_or_else(|_| panic!("no {text:?} in the stream; it sent:\n{}", self.received));
            match chunk {
                Some(Ok(bytes)) => self.received.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(error)) => panic!("the stream failed: {error}"),
                None => panic!(
                    "the stream ended without {text:?}; it sent:\n{}",
                    self.received
                ),
            }
        }
        &self.received
    }

    /// Reads to the end of the stream; fails if it does not end within a few seconds.
    pub async fn read_to_end(mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let chunk = tokio::time::timeout_at(
                deadline,
                std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_next(cx)),
            )
            .await
            .unwrap_or_else(|_| panic!("the stream did not end; it sent:\n{}", self.received));
            match chunk {
                Some(Ok(bytes)) => self.received.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(error)) => panic!("the stream failed: {error}"),
                None => return self.received,
            }
        }
    }
}

/// How often `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
