//! Deploys to the machine's Docker engine: two services of one image, two replicas answering on
//! 127.0.0.1, a failing new version that leaves the old one serving, and a rollback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::engines::{Cleanup, SecondEngine, answering, containers, free_ports, get};
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;

#[test]
fn two_services_roll_out_a_failure_leaves_the_old_serving_and_a_rollback_works() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/shop");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.write("index.html", "<p>version one</p>\n");
    source.commit("version one");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/shop", &git_url);
    buildgrid.cli_ok(&["build", "acme/shop", "--wait"]);

    buildgrid.add_local_server();
    let base = free_ports();
    let port = format!("{base}:8080");
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/shop",
        "web",
        "--command",
        "hello serve",
        "--port",
        &port,
        "--replicas",
        "2",
        "--health-http",
        "/",
        "--stop-grace",
        "1",
        "--server",
        "local",
        "--secret-env",
        "API_KEY=s3cr3t-value",
    ]);
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/shop",
        "worker",
        "--command",
        "hello; echo working; exec sleep 600",
        "--health-running",
        "1",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    // This test deploys by hand; `a_successful_build_of_the_branch_deploys_by_itself` covers deploys after builds.
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/shop", "off"]);
    let listed = buildgrid.cli_ok(&["service", "list", "acme/shop"]);
    assert!(
        listed.contains("API_KEY=***") && !listed.contains("s3cr3t"),
        "{listed}"
    );

    let first = buildgrid.cli_ok(&["deploy", "acme/shop"]);
    assert!(first.contains("deploy 1 succeeded"), "{first}");
    let up = answering(base);
    assert_eq!(up.len(), 2, "two web replicas answer: {up:?}");
    assert!(get(up[0]).unwrap().contains("version one"));
    assert_eq!(
        containers("acme/shop").len(),
        3,
        "two web replicas and a worker"
    );
    let worker_log = buildgrid.cli_ok(&["logs", "acme/shop", "--service", "worker"]);
    assert!(
        worker_log.contains("stdout [local worker bg.acme.shop.worker.d1.r0] working"),
        "{worker_log}"
    );
    assert!(
        !worker_log.contains("[local web"),
        "filtered by service: {worker_log}"
    );
    let one = "bg.acme.shop.web.d1.r1";
    let replica_log = buildgrid.cli_ok(&["logs", "acme/shop", "--container", one]);
    assert!(
        replica_log.lines().all(|l| l.contains(one)),
        "{replica_log}"
    );
    assert!(replica_log.contains("healthy"), "{replica_log}");
    let all = buildgrid.cli_ok(&["logs", "acme/shop"]);
    assert!(
        !all.contains("s3cr3t-value"),
        "a secret reached the deploy log"
    );

    // Version two never serves: its web replicas exit, so the deploy fails, and version one
    // answers throughout.
    source.write("hello.sh", "#!/bin/sh\necho broken\nexit 1\n");
    source.commit("version two");
    source.git(&["push", "-q", &git_url, "main"]);
    buildgrid.cli_ok(&["build", "acme/shop", "--wait"]);
    let probing = Arc::new(AtomicBool::new(true));
    let (probes, misses) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (probing, probes, misses) = (probing.clone(), probes.clone(), misses.clone());
        let up = up.clone();
        std::thread::spawn(move || {
            while probing.load(Ordering::SeqCst) {
                for port in &up {
                    probes.fetch_add(1, Ordering::SeqCst);
                    if get(*port).is_none() {
                        misses.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let failed = buildgrid.cli(&["deploy", "acme/shop"]);
    probing.store(false, Ordering::SeqCst);
    prober.join().unwrap();
    let printed = String::from_utf8_lossy(&failed.stdout).into_owned()
        + &String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{printed}");
    assert!(
        printed.contains("exited with code 1 before it was healthy"),
        "{printed}"
    );
    assert!(probes.load(Ordering::SeqCst) > 5);
    assert_eq!(
        misses.load(Ordering::SeqCst),
        0,
        "version one stopped answering"
    );
    assert_eq!(answering(base), up, "the old replicas still serve");
    assert_eq!(
        containers("acme/shop").len(),
        3,
        "what deploy 2 started is gone"
    );

    // Roll back: deploy build 1 again; it replaces deploy 1's containers.
    let rolled = buildgrid.cli_ok(&["deploy", "acme/shop", "--build", "1"]);
    assert!(rolled.contains("deploy 3 succeeded"), "{rolled}");
    // The old web replicas stop together: both are stopping before either is removed.
    let old_web: Vec<&str> = rolled
        .lines()
        .filter(|line| line.contains("[local web bg.acme.shop.web.d1."))
        .collect();
    let last_stopping = old_web.iter().rposition(|l| l.contains("stopping (grace"));
    let first_removed = old_web
        .iter()
        .position(|l| l.contains("stopped and removed"));
    assert!(
        old_web
            .iter()
            .filter(|l| l.contains("stopping (grace"))
            .count()
            == 2
            && last_stopping < first_removed,
        "the old replicas were not stopped together:\n{rolled}"
    );
    let names = containers("acme/shop");
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.contains(".d3.")), "{names:?}");
    assert_eq!(answering(base).len(), 2);
    // The deploy log page in a browser: the server, service and container filters combine.
    // Read anonymously: the namespace publishes its logs as well as its images.
    buildgrid.make_public("acme");
    buildgrid.cli_ok(&["namespace", "publish-logs", "acme", "on"]);
    let driver = crate::web::Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (timeline, filtered) = runtime.block_on(async {
        use fantoccini::Locator;
        let browser = driver.browser().await;
        browser
            .goto(&buildgrid.url("/apps/acme/shop"))
            .await
            .unwrap();
        let timeline = browser
            .find(Locator::Css("#deploys"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        browser
            .find(Locator::Css("#d1 a.title"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        for (name, value) in [
            ("server", "local"),
            ("service", "web"),
            ("container", "bg.acme.shop.web.d1.r1"),
        ] {
            browser
                .find(Locator::Css(&format!("select[name={name}]")))
                .await
                .unwrap()
                .select_by_value(value)
                .await
                .unwrap();
        }
        browser
            .find(Locator::Css("form.bar button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // Wait for the filtered page, not the one the form was on.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("container=")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the filter form did not submit"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let log = browser
            .wait()
            .for_element(Locator::Css("#deploy-log"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        browser.close().await.unwrap();
        (timeline, log)
    });
    assert!(
        timeline.contains("deploy #3") && timeline.contains("failed"),
        "{timeline}"
    );
    assert!(filtered.contains("healthy"), "{filtered}");
    assert!(
        filtered
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| !l.contains("d1.r0") && !l.contains("worker")),
        "{filtered}"
    );
    let refused = buildgrid.cli(&["deploy", "acme/shop", "--build", "99"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("has no build 99"));
}

#[test]
fn a_deploy_whose_process_died_is_interrupted_once_its_lease_lapses_and_its_containers_replaced() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/halt");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/halt", &git_url);
    buildgrid.cli_ok(&["build", "acme/halt", "--wait"]);
    buildgrid.add_local_server();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/halt",
        "slow",
        "--command",
        "exec sleep 600",
        "--health-running",
        "4",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    let mut first = std::process::Command::new(crate::support::BIN)
        .args(["deploy", "acme/halt", "--data"])
        .arg(buildgrid.data_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while containers("acme/halt").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first deploy started nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The process running the deploy dies while its replica is being health-checked.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(
        containers("acme/halt"),
        vec!["bg.acme.halt.slow.d1.r0".to_owned()]
    );

    // Its lease lives on for a while (renewed every 5 s for 15 s): the next deploy is refused
    // until it lapses, then marks it interrupted (unless serve did first) and replaces it.
    let refused = buildgrid.cli(&["deploy", "acme/halt"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("deploy 1 of this app is running"),
        "{stderr}"
    );
    let killed = std::time::Instant::now();
    let second = loop {
        let output = buildgrid.cli(&["deploy", "acme/halt"]);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            break stdout;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("deploy 1 of this app is running"),
            "{stderr}"
        );
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(30),
            "deploy 1's lease did not lapse"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(second.contains("deploy 2 succeeded"), "{second}");
    assert!(
        second.contains("[local slow bg.acme.halt.slow.d1.r0] stopped and removed"),
        "{second}"
    );
    assert_eq!(
        containers("acme/halt"),
        vec!["bg.acme.halt.slow.d2.r0".to_owned()]
    );
    let store = buildgrid_store::Store::open(&buildgrid.data_dir()).unwrap();
    let interrupted = store.db.deploy(1).unwrap().unwrap();
    assert_eq!(interrupted.state, "interrupted");
}

#[test]
fn a_successful_build_of_the_branch_deploys_by_itself() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/auto");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/auto", &git_url);
    buildgrid.add_local_server();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/auto",
        "worker",
        "--command",
        "exec sleep 600",
        "--health-running",
        "1",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    buildgrid.cli_ok(&["build", "acme/auto", "--wait"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let log = buildgrid.cli(&["logs", "acme/auto"]);
        let text = String::from_utf8_lossy(&log.stdout).into_owned();
        if text.contains("deploy 1 succeeded") {
            assert!(text.contains("of build 1"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no deploy after the build:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(
        containers("acme/auto"),
        vec!["bg.acme.auto.worker.d1.r0".to_owned()]
    );
}

#[test]
fn two_engines_pull_from_buildgrid_and_an_unreachable_one_fails_only_its_part() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/pair");
    let mut second = SecondEngine::start();
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/pair", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/pair", "off"]);
    buildgrid.cli_ok(&["build", "acme/pair", "--wait"]);
    buildgrid.add_local_server();
    let added = buildgrid.cli_ok(&["server", "add", "second", "--docker", &second.url()]);
    assert!(added.contains("API 1."), "{added}");
    let (a, b) = (free_ports(), free_ports());
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/pair",
        "web",
        "--command",
        "hello serve",
        "--port",
        &format!("{a}:8080"),
        "--replicas",
        "2",
        "--health-http",
        "/",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/pair",
        "edge",
        "--command",
        "exec httpd -f -p $PORT -h /www",
        "--port",
        &format!("{b}:8080"),
        "--network-host",
        "--replicas",
        "2",
        "--health-http",
        "/",
        "--stop-grace",
        "1",
        "--server",
        "second",
    ]);
    let deployed = buildgrid.cli_ok(&["deploy", "acme/pair"]);
    assert!(deployed.contains("deploy 1 succeeded"), "{deployed}");
    // The second engine had no image: it pulled it from buildgrid's registry.
    assert!(deployed.contains("[second edge] pulled"), "{deployed}");
    assert_eq!(answering(a).len(), 2, "web on the machine's engine");
    assert_eq!(answering(b).len(), 2, "edge on the second engine");
    let images = second.docker(&["images", "--format", "{{.Repository}}"]);
    assert!(String::from_utf8_lossy(&images.stdout).contains("acme/pair."));

    // With the second engine down, its part fails and says so; the machine's engine proceeds.
    second.stop();
    let failed = buildgrid.cli(&["deploy", "acme/pair"]);
    let printed = String::from_utf8_lossy(&failed.stdout).into_owned()
        + &String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{printed}");
    assert!(
        printed.contains("second/edge: the engine at unix://"),
        "{printed}"
    );
    assert!(printed.contains("does not answer"), "{printed}");
    assert!(
        printed.contains("[local web bg.acme.pair.web.d2.r1] healthy"),
        "{printed}"
    );
    assert_eq!(
        answering(a).len(),
        2,
        "web still answers, now from deploy 2"
    );
}
