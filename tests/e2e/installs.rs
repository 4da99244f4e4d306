//! Two installs on one Docker engine, each with an app and a service of the same names: each
//! lists, deploys, rolls back, settles and restarts only its own containers, and neither touches
//! a container an older version made without the install label.

use crate::engines::Cleanup;
use crate::fixtures::{BASE, Source, create_app, ensure_base_image};
use crate::support::{Buildgrid, run_ok};

const APP: &str = "acme/twins";
/// A container as versions before the install label made them, with the name the first
/// install's second deploy would otherwise take.
const LEGACY: &str = "bg.acme.twins.web.d2.r0";

/// (container id, name, install label) of every container of `APP` on the engine, running or not.
fn on_engine() -> Vec<(String, String, String)> {
    let listed = run_ok(
        "docker",
        &[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=buildgrid.app={APP}"),
            "--format",
            "{{.ID}} {{.Names}} {{.Label \"buildgrid.install\"}}",
        ],
    );
    let mut rows: Vec<(String, String, String)> = listed
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            // What an older version left (no install label) is checked on its own.
            if line.contains(LEGACY) {
                return None;
            }
            Some((
                fields.next()?.to_owned(),
                fields.next()?.to_owned(),
                fields.next().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    rows.sort();
    rows
}

fn install_with_service() -> (Buildgrid, tempfile::TempDir) {
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.write("index.html", "<p>twins</p>\n");
    source.commit("twins");
    let (upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, APP, &git_url);
    buildgrid.cli_ok(&["build", APP, "--wait"]);
    buildgrid.add_local_server();
    buildgrid.cli_ok(&[
        "service",
        "add",
        APP,
        "web",
        "--command",
        "hello; exec sleep 600",
        "--health-running",
        "1",
        "--stop-grace",
        "1",
        "--server",
        "local",
    ]);
    buildgrid.cli_ok(&["app", "auto-deploy", APP, "off"]);
    (buildgrid, upstream)
}

#[test]
fn two_installs_on_one_engine_never_touch_each_others_containers() {
    ensure_base_image();
    let _cleanup = Cleanup(APP);
    let legacy = run_ok(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            LEGACY,
            "--label",
            &format!("buildgrid.app={APP}"),
            "--label",
            "buildgrid.service=web",
            "--label",
            "buildgrid.deploy=2",
            BASE,
            "/bin/busybox",
            "sleep",
            "600",
        ],
    )
    .trim()
    .to_owned();
    let (mut first, _first_upstream) = install_with_service();
    let (second, _second_upstream) = install_with_service();

    let deployed = first.cli_ok(&["deploy", APP]);
    assert!(deployed.contains("deploy 1 succeeded"), "{deployed}");
    let after_first = on_engine();
    assert_eq!(after_first.len(), 1, "{after_first:?}");
    let first_install = after_first[0].2.clone();
    assert_eq!(first_install.len(), 32, "{after_first:?}");

    let deployed = second.cli_ok(&["deploy", APP]);
    assert!(deployed.contains("deploy 1 succeeded"), "{deployed}");
    let both = on_engine();
    assert_eq!(both.len(), 2, "each install runs its own replica: {both:?}");
    assert!(
        both.contains(&after_first[0]),
        "the first's replica stays: {both:?}"
    );
    let theirs: Vec<_> = both
        .iter()
        .filter(|c| c.2 != first_install)
        .cloned()
        .collect();
    assert_eq!(theirs.len(), 1, "{both:?}");
    let (second_id, second_name, second_install) = theirs[0].clone();
    assert_ne!(second_install, first_install);
    assert!(
        second_name.starts_with(&format!("bg-{}.acme.twins.web.d1.r0", &second_install[..6])),
        "{second_name}"
    );

    // Each lists only its own containers.
    let listed = first.cli_ok(&["server", "list"]);
    assert!(
        listed.contains("1 containers of buildgrid") && listed.contains(&after_first[0].1),
        "{listed}"
    );
    assert!(!listed.contains(&second_name), "{listed}");
    let listed = second.cli(&["server", "list"]);
    let (out, err) = (
        String::from_utf8_lossy(&listed.stdout),
        String::from_utf8_lossy(&listed.stderr),
    );
    assert!(
        out.contains(&second_name) && !out.contains(&after_first[0].1) && !out.contains(LEGACY),
        "{out}"
    );
    assert!(
        err.contains(LEGACY) && err.contains("no buildgrid.install label"),
        "a container without the install label is named in the log: {err}"
    );

    // The first rolls back (to build 1 again, a new deploy), restarts, settles and deploys again.
    let rolled = first.cli_ok(&["deploy", APP, "--build", "1"]);
    assert!(rolled.contains("deploy 2 succeeded"), "{rolled}");
    first.restart();
    let again = first.cli_ok(&["deploy", APP]);
    assert!(again.contains("deploy 3 succeeded"), "{again}");
    assert!(!again.contains(&second_name), "{again}");

    let now = on_engine();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.contains(&(
            second_id.clone(),
            second_name.clone(),
            second_install.clone()
        )),
        "the second's container is the same one: {now:?}"
    );
    let running = run_ok(
        "docker",
        &["inspect", "--format", "{{.State.Running}}", &second_id],
    );
    assert_eq!(running.trim(), "true", "the second's replica still runs");
    let mine: Vec<_> = now.iter().filter(|c| c.2 == first_install).collect();
    assert_eq!(mine.len(), 1, "{now:?}");
    assert!(
        mine[0].1.ends_with(".acme.twins.web.d3.r0"),
        "the first runs its newest deploy: {now:?}"
    );

    // And the second, deploying again, replaces only its own.
    let deployed = second.cli_ok(&["deploy", APP]);
    assert!(deployed.contains("deploy 2 succeeded"), "{deployed}");
    let last = on_engine();
    assert!(
        last.contains(mine[0]),
        "the first's replica stays: {last:?}"
    );
    assert!(!last.iter().any(|c| c.0 == second_id), "{last:?}");
    let running = run_ok(
        "docker",
        &[
            "inspect",
            "--format",
            "{{.Name}} {{.State.Running}}",
            &legacy,
        ],
    );
    assert_eq!(
        running.trim(),
        format!("/{LEGACY} true"),
        "the container without an install label is left alone"
    );
}
