//! After a deploy, a server keeps the images of what runs and of its rollback targets and
//! loses buildgrid's older ones; an image someone pulled by hand stays.

use crate::engines::SecondEngine;
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::Buildgrid;

/// The `repository:tag` names the engine holds.
fn image_names(engine: &SecondEngine) -> Vec<String> {
    let output = engine.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn image_id(engine: &SecondEngine, name: &str) -> String {
    let output = engine.docker(&["image", "inspect", "--format", "{{.Id}}", name]);
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_server_keeps_what_runs_and_its_rollback_targets_and_loses_older_images() {
    ensure_base_image();
    let engine = SecondEngine::start();
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/prune", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/prune", "off"]);
    buildgrid.cli_ok(&["retention", "set", "acme/prune", "--keep-deployed", "2"]);
    buildgrid.cli_ok(&["server", "add", "second", "--docker", &engine.url()]);
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/prune",
        "worker",
        "--command",
        "exec sleep 600",
        "--health-running",
        "1",
        "--stop-grace",
        "1",
        "--server",
        "second",
    ]);
    buildgrid.make_public("acme");
    let store = buildgrid_store::Store::open(&buildgrid.data_dir()).unwrap();
    let host = buildgrid.host();

    // Builds 1 to 5, each of its own commit (its own image), and each deployed.
    let mut references = Vec::new();
    for version in 1..=5 {
        if version > 1 {
            source.write("index.html", &format!("<p>version {version}</p>\n"));
            source.commit(&format!("version {version}"));
            source.git(&["push", "-q", &git_url, "main"]);
        }
        buildgrid.cli_ok(&["build", "acme/prune", "--wait"]);
        let build = store.db.build(version).unwrap().unwrap();
        let stored = build.image_ref.expect("the build has an image");
        let path = &stored[stored.find("acme/prune").unwrap()..];
        references.push(format!("{host}/{path}"));
        if version == 1 {
            // Pulled by hand before any deploy, and kept under a name of its own.
            let pulled = engine.docker(&["pull", &references[0]]);
            assert!(
                pulled.status.success(),
                "{}",
                String::from_utf8_lossy(&pulled.stderr)
            );
            let tagged = engine.docker(&["tag", &references[0], "handpicked/prune:kept"]);
            assert!(tagged.status.success());
            let untagged = engine.docker(&["rmi", &references[0]]);
            assert!(untagged.status.success());
        }
        let deployed = buildgrid.cli_ok(&["deploy", "acme/prune", "--build", &version.to_string()]);
        assert!(
            deployed.contains(&format!("deploy {version} succeeded")),
            "{deployed}"
        );
        if version == 4 {
            // Keep-deployed 2: build 1 is no rollback target of deploy 4 any more.
            assert!(
                deployed.contains(&format!("removed the name {}", references[0])),
                "{deployed}"
            );
        }
        if version == 5 {
            assert!(
                deployed.contains(&format!("removed image {}", references[1])),
                "{deployed}"
            );
        }
    }
    let handpicked = image_id(&engine, "handpicked/prune:kept");

    let names = image_names(&engine);
    for kept in &references[2..] {
        assert!(names.contains(kept), "{kept} is gone: {names:?}");
    }
    for gone in &references[..2] {
        assert!(!names.contains(gone), "{gone} stays: {names:?}");
    }
    assert!(
        names.contains(&"handpicked/prune:kept".to_owned()),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.contains("acme/prune")).count(),
        3,
        "{names:?}"
    );

    // Rolling back to the oldest kept target deploys its image, which is still there.
    let rolled = buildgrid.cli_ok(&["deploy", "acme/prune", "--build", "3"]);
    assert!(rolled.contains("deploy 6 succeeded"), "{rolled}");
    let running = engine.docker(&["ps", "--format", "{{.Image}}"]);
    assert_eq!(
        String::from_utf8_lossy(&running.stdout).trim(),
        references[2]
    );
    // Deploy 6 runs build 3; its rollback targets are builds 5 and 4: nothing more goes, and
    // the image pulled by hand is the same image as before.
    let names = image_names(&engine);
    for kept in &references[2..] {
        assert!(names.contains(kept), "{kept} is gone: {names:?}");
    }
    assert_eq!(image_id(&engine, "handpicked/prune:kept"), handpicked);
}
