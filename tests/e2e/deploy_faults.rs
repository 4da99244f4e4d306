//! Deploys that do not end well: buildgrid restarted while it deploys, and a server stopped in
//! the middle of its part. The old version keeps serving, and nothing is left forgotten.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::engines::{Cleanup, SecondEngine, containers, free_ports, get};
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;

/// Waits until `done` holds, or fails saying `what`.
#[track_caller]
fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn deploy_state(buildgrid: &Buildgrid, id: i64) -> Option<(String, Option<String>)> {
    let store = buildgrid_store::Store::open(&buildgrid.data_dir()).unwrap();
    store.db.deploy(id).unwrap().map(|d| (d.state, d.reason))
}

#[test]
fn a_restart_during_a_deploy_marks_it_interrupted_and_removes_what_it_started() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/restart");
    let mut buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.write("index.html", "version one\n");
    source.commit("version one");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/restart", &git_url);
    buildgrid.cli_ok(&["build", "acme/restart", "--wait"]);
    buildgrid.add_local_server();
    let base = free_ports();
    // Healthy once httpd answers, unless the page says "slow".
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/restart",
        "web",
        "--command",
        "hello serve",
        "--port",
        &format!("{base}:8080"),
        "--health-cmd",
        "! grep -q slow /www/index.html && wget -q -O /dev/null http://127.0.0.1:8080/",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    let first = buildgrid.cli_ok(&["deploy", "acme/restart"]);
    assert!(first.contains("deploy 1 succeeded"), "{first}");
    assert!(
        first.contains("exit code 0") && first.contains("healthy"),
        "the health command ran: {first}"
    );
    assert_eq!(get(u32::from(base)).as_deref(), Some("version one\n"));

    // Version two never gets healthy; its deploy starts by itself after the build, in the
    // server's process, which is killed while it waits.
    let probing = Arc::new(AtomicBool::new(true));
    let misses = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (probing, misses) = (probing.clone(), misses.clone());
        std::thread::spawn(move || {
            while probing.load(Ordering::SeqCst) {
                if get(u32::from(base)).as_deref() != Some("version one\n") {
                    misses.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    source.write("index.html", "version two, slow\n");
    source.commit("version two");
    source.git(&["push", "-q", &git_url, "main"]);
    buildgrid.cli_ok(&["build", "acme/restart", "--wait"]);
    let second = "bg.acme.restart.web.d2.r0".to_owned();
    wait_until("deploy 2 started no container", 60, || {
        containers("acme/restart").contains(&second)
    });
    std::thread::sleep(Duration::from_millis(500));
    buildgrid.restart();

    wait_until("the restart did not settle deploy 2", 60, || {
        !containers("acme/restart").contains(&second)
            && deploy_state(&buildgrid, 2).is_some_and(|(state, _)| state == "interrupted")
    });
    probing.store(false, Ordering::SeqCst);
    prober.join().unwrap();
    assert_eq!(
        misses.load(Ordering::SeqCst),
        0,
        "version one stopped answering"
    );
    assert_eq!(
        containers("acme/restart"),
        vec!["bg.acme.restart.web.d1.r0".to_owned()]
    );
    let (_, reason) = deploy_state(&buildgrid, 2).unwrap();
    assert!(
        reason
            .unwrap_or_default()
            .contains("process running it stopped"),
        "the reason says why"
    );
    let log = buildgrid.cli_ok(&["logs", "acme/restart", "--deploy", "2"]);
    assert!(log.contains("exit code 1"), "health probes failed: {log}");
    assert!(
        log.contains(&format!(
            "[local web {second}] removed: left by deploy 2, which did not finish"
        )),
        "{log}"
    );

    // The next deploy (of version one again) finds only deploy 1's container to replace.
    let third = buildgrid.cli_ok(&["deploy", "acme/restart", "--build", "1"]);
    assert!(third.contains("deploy 3 succeeded"), "{third}");
    assert_eq!(
        containers("acme/restart"),
        vec!["bg.acme.restart.web.d3.r0".to_owned()]
    );

    // A service that never gets healthy fails the deploy after its own health timeout.
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/restart",
        "never",
        "--command",
        "exec sleep 600",
        "--health-cmd",
        "false",
        "--health-timeout",
        "2",
        "--server",
        "local",
    ]);
    let started = Instant::now();
    let failed = buildgrid.cli(&["deploy", "acme/restart", "--build", "1"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("bg.acme.restart.never.d4.r0 was not healthy within 2 s"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        containers("acme/restart"),
        vec!["bg.acme.restart.web.d4.r0".to_owned()],
        "the web service rolled out; the failed one left nothing"
    );
}

#[test]
fn a_server_stopped_mid_deploy_fails_its_part_and_the_other_server_serves() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/halfway");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/halfway", &git_url);
    buildgrid.cli_ok(&["build", "acme/halfway", "--wait"]);
    let mut two = SecondEngine::start();
    buildgrid.add_local_server();
    buildgrid.cli_ok(&["server", "add", "two", "--docker", &two.url()]);
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/halfway",
        "worker",
        "--command",
        "hello; exec sleep 600",
        "--network-host",
        "--health-running",
        "5",
        "--stop-grace",
        "1",
        "--server",
        "local",
        "--server",
        "two",
    ]);
    let mut deploy = std::process::Command::new(crate::support::BIN)
        .args(["deploy", "acme/halfway", "--data"])
        .arg(buildgrid.data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Server two's replica is being health-checked when its engine stops.
    wait_until("no container started on server two", 90, || {
        String::from_utf8_lossy(&two.docker(&["ps", "-q"]).stdout)
            .trim()
            .len()
            > 1
    });
    two.stop();
    let output = {
        let deadline = Instant::now() + Duration::from_secs(90);
        while deploy.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the deploy did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
        deploy.wait_with_output().unwrap()
    };
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{printed}");
    let (state, reason) = deploy_state(&buildgrid, 1).unwrap();
    assert_eq!(state, "failed");
    let reason = reason.unwrap_or_default();
    assert!(reason.starts_with("two/worker: "), "{reason}");
    assert!(!reason.contains("local/"), "{reason}");
    assert!(
        printed.contains("[local worker bg.acme.halfway.worker.d1.r0] healthy"),
        "{printed}"
    );
    assert_eq!(
        containers("acme/halfway"),
        vec!["bg.acme.halfway.worker.d1.r0".to_owned()],
        "server one's part stays"
    );
    let log = buildgrid.cli_ok(&["logs", "acme/halfway", "--server", "two"]);
    assert!(
        log.contains("could not be removed") || log.contains("removed: this deploy failed"),
        "what became of server two's container is said: {log}"
    );
}
