//! A running deploy is alive while its process renews its lease, never by its process id:
//! `serve` running as process 1 of a container's PID namespace, killed in the middle of a deploy
//! and started again as process 1, settles the deploy once its lease lapses, and the app
//! deploys again.

use std::time::{Duration, Instant};

use crate::engines::{Cleanup, containers, free_ports, get};
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
fn serve_killed_as_pid_1_mid_deploy_and_restarted_as_pid_1_settles_the_deploy() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/pidone");
    let mut buildgrid = Buildgrid::spawn_as_pid1();
    assert_eq!(buildgrid.pid1_serve().1, 1, "serve runs as process 1");
    let source = Source::example();
    source.write("index.html", "version one\n");
    source.commit("version one");
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/pidone", &git_url);
    buildgrid.cli_ok(&["build", "acme/pidone", "--wait"]);
    buildgrid.add_local_server();
    let base = free_ports();
    // Healthy once httpd answers, unless the page says "slow".
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/pidone",
        "web",
        "--command",
        "hello serve",
        "--port",
        &format!("{base}:8080"),
        "--health-cmd",
        "! grep -q slow /www/index.html && wget -q -O /dev/null http://127.0.0.1:8080/",
        "--health-timeout",
        "600",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    let first = buildgrid.cli_ok(&["deploy", "acme/pidone"]);
    assert!(first.contains("deploy 1 succeeded"), "{first}");
    assert_eq!(get(u32::from(base)).as_deref(), Some("version one\n"));

    // Version two never gets healthy; its deploy starts by itself after the build, in serve,
    // which is killed (SIGKILL) while it waits.
    source.write("index.html", "version two, slow\n");
    source.commit("version two");
    source.git(&["push", "-q", &git_url, "main"]);
    buildgrid.cli_ok(&["build", "acme/pidone", "--wait"]);
    let second = "bg.acme.pidone.web.d2.r0".to_owned();
    wait_until("deploy 2 started no container", 60, || {
        containers("acme/pidone").contains(&second)
    });
    std::thread::sleep(Duration::from_millis(500));
    let (killed, _) = buildgrid.pid1_serve();
    buildgrid.restart_as_pid1();
    let (again, inner) = buildgrid.pid1_serve();
    assert_ne!(killed, again, "a new process");
    assert_eq!(
        inner, 1,
        "the new serve is process 1 again, as the killed one was"
    );

    // Its lease has not lapsed yet (renewed at most 5 s before the kill, for 15 s): a deploy
    // of the app is refused, as while deploy 2 ran.
    let refused = buildgrid.cli(&["deploy", "acme/pidone", "--build", "1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("deploy 2 of this app is running"),
        "{stderr}"
    );
    assert_eq!(
        deploy_state(&buildgrid, 2)
            .map(|(state, _)| state)
            .as_deref(),
        Some("running")
    );

    // Once it lapses, the new serve (same process id as the killed one) marks it interrupted
    // and removes the container it started; version one still serves.
    wait_until(
        "deploy 2 was not settled after its lease lapsed",
        60,
        || {
            !containers("acme/pidone").contains(&second)
                && deploy_state(&buildgrid, 2).is_some_and(|(state, _)| state == "interrupted")
        },
    );
    let (_, reason) = deploy_state(&buildgrid, 2).unwrap();
    assert_eq!(
        reason.as_deref(),
        Some("interrupted: the process running it stopped (its lease lapsed)")
    );
    let log = buildgrid.cli_ok(&["logs", "acme/pidone", "--deploy", "2"]);
    assert!(
        log.contains("interrupted: the process running it stopped; settling what it left"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "[local web {second}] removed: left by deploy 2, which did not finish"
        )),
        "{log}"
    );
    assert_eq!(
        containers("acme/pidone"),
        vec!["bg.acme.pidone.web.d1.r0".to_owned()]
    );
    assert_eq!(get(u32::from(base)).as_deref(), Some("version one\n"));

    // The app deploys again.
    let third = buildgrid.cli_ok(&["deploy", "acme/pidone", "--build", "1"]);
    assert!(third.contains("deploy 3 succeeded"), "{third}");
    assert_eq!(
        containers("acme/pidone"),
        vec!["bg.acme.pidone.web.d3.r0".to_owned()]
    );
    // It answers on the host port of the slot deploy 1 left free.
    assert_eq!(get(u32::from(base) + 1).as_deref(), Some("version one\n"));
}
