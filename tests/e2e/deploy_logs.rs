//! `buildgrid logs --follow`: what an app's containers print, as it comes, across deploys.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::engines::Cleanup;
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::{BIN, Buildgrid};

#[test]
fn logs_follow_prints_the_containers_output_masked_and_picks_up_the_next_deploy() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/follow");
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/follow", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/follow", "off"]);
    buildgrid.cli_ok(&["build", "acme/follow", "--wait"]);
    buildgrid.add_local_server();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/follow",
        "ticker",
        "--command",
        "i=0; while true; do echo tick $i $TOKEN; i=$((i+1)); sleep 0.2; done",
        "--secret-env",
        "TOKEN=hush-hush-42",
        "--health-running",
        "1",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    buildgrid.cli_ok(&["deploy", "acme/follow"]);

    let mut follower = Command::new(BIN)
        .args([
            "logs",
            "acme/follow",
            "--follow",
            "--service",
            "ticker",
            "--data",
        ])
        .arg(buildgrid.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (sender, lines) = mpsc::channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if seen.iter().any(|l: &String| l.contains(text)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {text:?} followed; seen:\n{}", seen.join("\n")),
            }
        }
    };
    wait_for("[local ticker bg.acme.follow.ticker.d1.r0] tick");
    buildgrid.cli_ok(&["deploy", "acme/follow"]);
    wait_for("[local ticker bg.acme.follow.ticker.d2.r0] tick 0 ***");
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        seen.iter().all(|l| !l.contains("hush-hush-42")),
        "a secret was printed: {seen:?}"
    );
    let all = buildgrid.cli_ok(&["logs", "acme/follow"]);
    assert!(!all.contains("hush-hush-42"), "a secret reached the log");
}
