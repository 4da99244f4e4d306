//! A published service on the second engine: buildgrid's proxy gives it a fixed address there,
//! which answers every request across deploys, a failed deploy and a rollback, and keeps its
//! routes when the proxy restarts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engines::{Cleanup, SecondEngine, free_ports, get};
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;

/// Clients sending requests to `port` until stopped: half on one kept-alive connection each,
/// half on a new connection per request.
struct Load {
    running: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|i| {
                let (running, ok, failures) = (running.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let kept = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    // Bounded: a few thousand requests at most, whatever happens.
                    let deadline = Instant::now() + Duration::from_secs(600);
                    while running.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let client = if i % 2 == 0 {
                            kept.clone()
                        } else {
                            reqwest::blocking::Client::builder()
                                .timeout(Duration::from_secs(5))
                                .pool_max_idle_per_host(0)
                                .build()
                                .unwrap()
                        };
                        match client.get(format!("http://127.0.0.1:{port}/")).send() {
                            Ok(answer) if answer.status().is_success() => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(answer) => failures.lock().unwrap().push(format!(
                                "{} {}",
                                answer.status(),
                                answer.text().unwrap_or_default()
                            )),
                            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Load {
            running,
            ok,
            failures,
            threads,
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.running.store(false, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

fn page(port: u16) -> String {
    get(u32::from(port)).unwrap_or_default().trim().to_owned()
}

#[test]
fn a_published_service_answers_on_its_fixed_port_across_deploys_a_failure_a_rollback_and_a_proxy_restart()
 {
    ensure_base_image();
    let _cleanup = Cleanup("acme/front");
    let second = SecondEngine::start();
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.write("index.html", "version one\n");
    source.commit("version one");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/front", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/front", "off"]);
    buildgrid.cli_ok(&["build", "acme/front", "--wait"]);
    buildgrid.cli_ok(&["server", "add", "second", "--docker", &second.url()]);
    let (base, publish) = (free_ports(), free_ports());
    // `hello` runs first, so a version whose hello fails never serves.
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/front",
        "edge",
        "--command",
        "hello && exec httpd -f -p $PORT -h /www",
        "--port",
        &format!("{base}:8080"),
        "--network-host",
        "--replicas",
        "2",
        "--health-http",
        "/",
        "--stop-grace",
        "1",
        "--publish",
        &publish.to_string(),
        "--server",
        "second",
    ]);
    // A second service shares the published port under a host name of its own; the two
    // parts of each deploy on the server start one proxy between them.
    let api_base = free_ports();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/front",
        "api",
        "--command",
        "hello && exec httpd -f -p $PORT -h /www",
        "--port",
        &format!("{api_base}:8080"),
        "--network-host",
        "--health-http",
        "/",
        "--stop-grace",
        "1",
        "--publish",
        &publish.to_string(),
        "--host",
        "API.example",
        "--server",
        "second",
    ]);
    // A port the replicas use cannot be published.
    let refused = buildgrid.cli(&[
        "service",
        "add",
        "acme/front",
        "other",
        "--port",
        &format!("{base}:8080"),
        "--publish",
        &(base + 1).to_string(),
        "--server",
        "second",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is one of the replicas' own host ports"),
        "{refused:?}"
    );

    let first = buildgrid.cli_ok(&["deploy", "acme/front"]);
    assert!(first.contains("deploy 1 succeeded"), "{first}");
    assert!(first.contains("importing the proxy's image"), "{first}");
    assert!(first.contains("switched to"), "{first}");
    assert_eq!(page(publish), "version one");
    let proxies = || {
        let listed = second.docker(&[
            "ps",
            "--filter",
            "label=buildgrid.proxy",
            "--format",
            "{{.Names}}",
        ]);
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(proxies().len(), 1, "one proxy on the server");
    let proxy = proxies().pop().unwrap();
    let routes = second.docker(&[
        "exec",
        &proxy,
        "/buildgrid",
        "proxy",
        "routes",
        "--state",
        "/state",
    ]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.contains(&format!("{publish}\t*\tacme/front/edge"))
            && routes.contains(&format!("{publish}\tapi.example\tacme/front/api")),
        "{routes}"
    );
    let by_name = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{publish}/"))
        .header("host", "api.example")
        .send()
        .unwrap();
    assert!(by_name.status().is_success());

    let load = Load::start(publish);
    std::thread::sleep(Duration::from_millis(500));
    source.write("index.html", "version two\n");
    source.commit("version two");
    source.git(&["push", "-q", &git_url, "main"]);
    buildgrid.cli_ok(&["build", "acme/front", "--wait"]);
    let second_deploy = buildgrid.cli_ok(&["deploy", "acme/front"]);
    assert!(
        second_deploy.contains("deploy 2 succeeded"),
        "{second_deploy}"
    );
    assert!(
        !second_deploy.contains("importing the proxy's image"),
        "the proxy is already there: {second_deploy}"
    );
    assert_eq!(page(publish), "version two");

    // Version three never becomes healthy: the address keeps answering version two.
    source.write("hello.sh", "#!/bin/sh\necho broken\nexit 1\n");
    source.commit("version three");
    source.git(&["push", "-q", &git_url, "main"]);
    buildgrid.cli_ok(&["build", "acme/front", "--wait"]);
    let failed = buildgrid.cli(&["deploy", "acme/front"]);
    let printed = String::from_utf8_lossy(&failed.stdout).into_owned()
        + &String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{printed}");
    assert_eq!(page(publish), "version two");

    // A rollback to build 1 moves the address back.
    let rollback = buildgrid.cli_ok(&["deploy", "acme/front", "--build", "1"]);
    assert!(rollback.contains("succeeded"), "{rollback}");
    assert_eq!(page(publish), "version one");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    assert!(ok > 50, "only {ok} requests were answered");
    assert!(
        failures.is_empty(),
        "{} of {} requests through the proxy failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );

    // The proxy keeps its routes across its own restart.
    let restarted = second.docker(&["restart", "-t", "5", &proxy]);
    assert!(restarted.status.success(), "{restarted:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while page(publish) != "version one" {
        assert!(
            Instant::now() < deadline,
            "the proxy did not answer again after its restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(proxies(), vec![proxy]);
}
