//! Garbage collection cleans up the Docker engine: two builds of a branch with keep-last 1,
//! then `buildgrid gc`: the collected build's engine name is gone from `docker images`, the
//! kept build's stays, a second collection removes nothing more, a rebuild of the kept tree
//! still takes its early steps from the engine's cache, and collecting a build whose image a
//! newer build's name shares only untags it; untagged images of another install, or fresh ones,
//! stay.

use crate::fixtures::{Source, build_log, create_app, ensure_base_image};
use crate::support::{Buildgrid, run_ok};

/// A Dockerfile whose early step no commit of the test changes.
const DOCKERFILE: &str = "ARG BASE\nFROM ${BASE}\nRUN echo warm > /warm.txt\n\
                          COPY index.html /www/index.html\nCMD [\"cat\", \"/www/index.html\"]\n";

/// The engine's names of builds of `commit` (`buildgrid/builds/<hex>:<commit>`).
fn engine_names(commit: &str) -> Vec<String> {
    run_ok(
        "docker",
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    )
    .lines()
    .filter(|name| name.starts_with("buildgrid/builds/") && name.ends_with(&format!(":{commit}")))
    .map(str::to_owned)
    .collect()
}

/// Builds the branch's head and returns the build's id.
fn build(buildgrid: &Buildgrid) -> i64 {
    let output = buildgrid.cli(&["build", "acme/engineprune", "--ref", "main", "--wait"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
        .split_whitespace()
        .skip_while(|word| *word != "build")
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no build id in {stderr}"))
}

#[test]
fn engine_prune_removes_collected_builds_and_keeps_kept_ones_warm() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    let source = Source::example();
    source.write("Dockerfile", DOCKERFILE);
    source.write("index.html", "<p>first</p>\n");
    let first = source.commit("first page");
    let (upstream, url) = source.bare_clone();
    let bare = upstream.path().join("upstream.git");
    create_app(&buildgrid, "acme/engineprune", &url);
    buildgrid.cli_ok(&["retention", "set", "acme/engineprune", "--keep-last", "1"]);

    let first_build = build(&buildgrid);
    source.write("index.html", "<p>second</p>\n");
    let second = source.commit("second page");
    source.git(&["push", "-q", "-f", bare.to_str().unwrap(), "main"]);
    build(&buildgrid);
    let collected = engine_names(&first);
    assert_eq!(collected.len(), 1, "{collected:?}");
    let kept = engine_names(&second);
    assert_eq!(kept.len(), 1, "{kept:?}");

    let dry = buildgrid.cli_ok(&["gc", "--dry-run"]);
    let listed: Vec<&str> = dry
        .lines()
        .filter(|l| l.starts_with("engine tag "))
        .collect();
    assert_eq!(listed.len(), 1, "{dry}");
    assert!(listed[0].contains(&collected[0]), "{dry}");
    assert!(dry.contains("engine: would remove 1 tags"), "{dry}");
    assert_eq!(engine_names(&first), collected, "a dry run removed {dry}");

    let real = buildgrid.cli_ok(&["gc"]);
    assert!(real.contains("deleted 1 tags, 1 manifests"), "{real}");
    assert!(
        real.contains(&format!(
            "engine tag {} (build {first_build})",
            collected[0]
        )),
        "{real}"
    );
    assert!(real.contains("engine: removed 1 tags"), "{real}");
    assert!(real.contains("budget 20GiB"), "{real}");
    assert_eq!(engine_names(&first), Vec::<String>::new(), "{real}");
    assert_eq!(engine_names(&second), kept, "{real}");

    // Each name goes once: nothing left to remove. Untagged images that are another install's,
    // or this install's but fresh (a build's image the engine has yet to name), stay.
    let install = run_ok(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.buildgrid.build\"}}",
            &kept[0],
        ],
    );
    let install = install.trim();
    assert_eq!(install.len(), 32, "{install:?}");
    let untagged = |label: &str| {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("rootfs.tar");
        std::fs::write(dir.path().join("file"), label).unwrap();
        run_ok(
            "tar",
            &[
                "-cf",
                tar.to_str().unwrap(),
                "-C",
                dir.path().to_str().unwrap(),
                "file",
            ],
        );
        let change = format!("LABEL io.buildgrid.build={label}");
        run_ok(
            "docker",
            &["import", "--change", &change, tar.to_str().unwrap()],
        )
        .trim()
        .to_owned()
    };
    let others = untagged("0123456789abcdef0123456789abcdef");
    let fresh = untagged(install);
    let again = buildgrid.cli_ok(&["gc"]);
    assert!(again.contains("engine: removed 0 tags"), "{again}");
    assert!(again.contains("0 untagged"), "{again}");
    for image in [&others, &fresh] {
        run_ok(
            "docker",
            &["image", "inspect", "--format", "{{.Id}}", image],
        );
        run_ok("docker", &["rmi", image]);
    }

    // The kept tree again, with a file its Dockerfile does not use: the early steps come from
    // the engine's cache.
    source.write("NOTES", "not in the image\n");
    let third = source.commit("notes");
    source.git(&["push", "-q", "-f", bare.to_str().unwrap(), "main"]);
    let id = build(&buildgrid);
    let log = build_log(&buildgrid, id);
    let cached = log
        .lines()
        .skip_while(|l| !l.contains("RUN echo warm"))
        .nth(1)
        .unwrap_or_default();
    assert!(cached.contains("Using cache"), "{log}");
    assert!(
        log.lines().filter(|l| l.contains("Using cache")).count() >= 2,
        "{log}"
    );
    let newest = engine_names(&third);
    assert_eq!(newest.len(), 1);

    // The rebuild is the kept build's image under a second name: collecting the older build
    // only takes its name away.
    let id = |name: &str| run_ok("docker", &["image", "inspect", "--format", "{{.Id}}", name]);
    assert_eq!(id(&kept[0]), id(&newest[0]));
    let shared = buildgrid.cli_ok(&["gc"]);
    assert!(shared.contains("engine: removed 1 tags"), "{shared}");
    assert!(shared.contains("(0 images deleted)"), "{shared}");
    assert_eq!(engine_names(&second), Vec::<String>::new(), "{shared}");
    assert_eq!(engine_names(&third), newest, "{shared}");
    run_ok("docker", &["rmi", &newest[0]]);
}

#[test]
fn engine_prune_budget_is_a_setting_of_serve() {
    let buildgrid = Buildgrid::spawn();
    let shown = buildgrid.cli_ok(&["config", "check", "--engine-cache-budget", "512MiB"]);
    assert!(
        shown.contains("builds.engine_cache_budget = \"512MiB\"")
            || shown.contains("engine_cache_budget = \"512MiB\""),
        "{shown}"
    );
    let refused = buildgrid.cli(&["config", "check", "--engine-cache-budget", "lots"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is no size"), "{stderr}");
}
