//! Server-side render time of the heaviest pages: the timeline of an app with 1,000 builds, the
//! log of a build with 100,000 lines, with and without filters, and the Contents and Details of
//! an image of 50,000 files. Every request goes through
//! the real handlers in process: store reads in the blocking pool, HTML rendering, the body
//! read back whole. Run with `cargo bench -p buildgrid-web`; the target is under 50 ms.

#[path = "../tests/it/seed.rs"]
mod seed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, test};
use buildgrid_store::{BuildState, Store};

const BUILDS: u64 = 1_000;
const LOG_LINES: i64 = 100_000;
const RUNS: usize = 30;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
    let started = Instant::now();
    let app = seed::create_app(&store, "acme/hello");
    // Rendered for an anonymous visitor, so the namespace is public; the access checks still run.
    store.db.set_namespace_public("acme", true).unwrap();
    store.db.set_namespace_logs_public("acme", true).unwrap();
    let access = Arc::new(buildgrid_access::Access::new(store.clone()).unwrap());
    let mut ids = Vec::new();
    for n in 0..BUILDS {
        let branch = ["main", "feature", "fix"][n as usize % 3];
        let id = seed::start_build(&store, &app, branch, &seed::commit(n), "Change the thing");
        let state = if n % 10 == 0 {
            BuildState::Failed
        } else {
            BuildState::Succeeded
        };
        let digest = seed::fake_digest(n);
        seed::finish_build(
            &store,
            &app,
            id,
            state,
            Some(&digest).filter(|_| n % 10 != 0),
        );
        ids.push(id);
    }
    let big = *ids.last().unwrap();
    seed::write_log(&store, big, 0, LOG_LINES, 1_000);
    seed::append_line(
        &store,
        big,
        LOG_LINES + 1,
        "build failed: error at the very end",
    );
    let many = buildgrid_core::RepoName::parse("acme/many").unwrap();
    seed::import_many_files(&store, dir.path(), &many, "v1", (40, 1_000, 10_000));
    println!(
        "seeded {BUILDS} builds, a {LOG_LINES}-line log and an image of 50,000 files in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let cases = [
        ("apps page", "/".to_owned()),
        (
            "image Contents, / of 50,000 files",
            "/images/acme/many/v1?tab=contents".to_owned(),
        ),
        (
            "image Contents, a directory of 1,000 files",
            "/images/acme/many/v1?tab=contents&path=/d017".to_owned(),
        ),
        (
            "image Contents, a directory of 10,000 (1st page)",
            "/images/acme/many/v1?tab=contents&path=/big".to_owned(),
        ),
        (
            "image Details (checksums stored)",
            "/images/acme/many/v1?tab=details".to_owned(),
        ),
        (
            "timeline, newest 50 of 1,000",
            "/apps/acme/hello".to_owned(),
        ),
        (
            "timeline, filtered by branch and status",
            "/apps/acme/hello?branch=fix&status=failed".to_owned(),
        ),
        (
            "timeline, oldest page",
            format!("/apps/acme/hello?before={}", ids[60]),
        ),
        ("log of 100,000 lines, tail", format!("/builds/{big}")),
        ("log, middle window", format!("/builds/{big}?after=50000")),
        ("log, step filter", format!("/builds/{big}?step=50/100")),
        (
            "log, text filter (1 line in 97)",
            format!("/builds/{big}?q=module+42"),
        ),
        (
            "log, text filter matching nothing (full scan)",
            format!("/builds/{big}?q=never+printed"),
        ),
        (
            "log, earlier window (script)",
            format!("/builds/{big}/lines?before=40000"),
        ),
        (
            "first error (at the end: full scan)",
            format!("/builds/{big}/first-error"),
        ),
        (
            "raw download of 100,000 lines",
            format!("/builds/{big}/log.txt"),
        ),
    ];
    actix_web::rt::System::new().block_on(async move {
        let settings = buildgrid_web::Settings {
            public_url: "http://127.0.0.1:5000".to_owned(),
            wake: Arc::new(|| {}),
            access,
            deployer: None,
            shared: buildgrid_web::Shared::default(),
        };
        let service = test::init_service(
            App::new().configure(move |cfg| buildgrid_web::configure(cfg, store, settings)),
        )
        .await;
        println!(
            "{:<48} {:>9} {:>9} {:>9} {:>10}",
            "page", "median", "p95", "max", "bytes"
        );
        for (name, uri) in cases {
            let mut times = Vec::with_capacity(RUNS);
            let mut size = 0;
            for run in 0..RUNS + 3 {
                let started = Instant::now();
                let response =
                    test::call_service(&service, test::TestRequest::get().uri(&uri).to_request())
                        .await;
                let status = response.status();
                let body = test::read_body(response).await;
                let elapsed = started.elapsed();
                assert!(
                    status.is_success() || status.is_redirection(),
                    "{uri}: {status}"
                );
                size = body.len();
                if run >= 3 {
                    times.push(elapsed);
                }
            }
            times.sort();
            let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
            println!(
                "{name:<48} {:>9} {:>9} {:>9} {size:>10}",
                ms(times[RUNS / 2]),
                ms(times[RUNS * 95 / 100]),
                ms(times[RUNS - 1]),
            );
        }
    });
}
