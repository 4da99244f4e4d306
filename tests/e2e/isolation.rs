//! Tenants share the Docker engine: a build may not use another private namespace's images,
//! whatever form the Dockerfile names them in, and buildgrid leaves no guessable names of them
//! in the engine. Its own images and public ones still work, and a rebuild stays cached.

use std::path::Path;
use std::process::{Command, Output};

use crate::fixtures::{BASE, Source, ensure_base_image};
use crate::support::{Buildgrid, run, run_ok};

/// A source whose Dockerfile is `dockerfile`, with a bare upstream for an app's git URL.
struct Repo {
    source: Source,
    _upstream: tempfile::TempDir,
    url: String,
}

impl Repo {
    fn new(dockerfile: &str) -> Repo {
        let source = Source::example();
        source.write("Dockerfile", dockerfile);
        source.commit("the Dockerfile");
        let (upstream, url) = source.bare_clone();
        Repo {
            source,
            _upstream: upstream,
            url,
        }
    }

    /// Commits a new Dockerfile and pushes it upstream; returns the commit id.
    fn change(&self, dockerfile: &str) -> String {
        self.source.write("Dockerfile", dockerfile);
        let commit = self.source.commit("another Dockerfile");
        let bare = self.url.strip_prefix("file://localhost").unwrap();
        self.source.git(&["push", "-q", bare, "main"]);
        commit
    }
}

/// An app building `git` on the base image the fixtures make.
fn create_app(buildgrid: &Buildgrid, app: &str, git: &str) {
    let base = format!("BASE={BASE}");
    buildgrid.cli_ok(&["app", "create", app, "--git", git, "--build-arg", &base]);
}

/// `buildgrid build <app> --wait [--force]`: its success and what it printed.
fn build(buildgrid: &Buildgrid, app: &str, force: bool) -> (bool, String) {
    let mut args = vec!["build", app, "--wait"];
    if force {
        args.push("--force");
    }
    let output = buildgrid.cli(&args);
    (output.status.success(), text(&output))
}

#[track_caller]
fn build_ok(buildgrid: &Buildgrid, app: &str, force: bool) -> String {
    let (ok, printed) = build(buildgrid, app, force);
    assert!(ok, "the build of {app} failed:\n{printed}");
    printed
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The image reference a successful `build --wait` printed last.
fn image_ref(printed: &str) -> String {
    printed
        .lines()
        .rev()
        .find(|l| !l.starts_with("build "))
        .unwrap()
        .trim()
        .to_owned()
}

/// The docker CLI with a configuration directory of its own.
fn docker(config: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the docker CLI is needed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_build_cannot_use_another_private_namespaces_images() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    let host = buildgrid.host();
    let port = buildgrid.addr.port();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let secret = format!("acme-secret-{unique}");

    // acme, private, builds an image with a secret in it.
    let acme = Repo::new(&format!(
        "ARG BASE\nFROM ${{BASE}}\nRUN echo {secret} > /secret.txt\nCMD [\"true\"]\n"
    ));
    create_app(&buildgrid, "acme/vault", &acme.url);
    let printed = build_ok(&buildgrid, "acme/vault", false);
    let acme_image = image_ref(&printed);
    let (acme_name, acme_commit) = acme_image.rsplit_once(':').unwrap();
    let acme_repo = acme_name.strip_prefix(&format!("{host}/")).unwrap();
    assert!(acme_repo.starts_with("acme/vault."), "{acme_image}");
    let acme_digest = printed
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap()
        .trim()
        .to_owned();

    // The engine keeps no guessable name of it: only a name under buildgrid/builds/.
    let guessed = run(
        "docker",
        &["image", "inspect", &format!("{acme_repo}:{acme_commit}")],
    );
    assert!(
        !guessed.status.success(),
        "the engine knows {acme_repo}:{acme_commit}"
    );
    let listed = run_ok(
        "docker",
        &[
            "images",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ],
    );
    let acme_id = listed
        .lines()
        .find_map(|l| {
            let (name, id) = l.split_once(' ')?;
            (name.starts_with("buildgrid/builds/") && name.ends_with(&format!(":{acme_commit}")))
                .then(|| id.to_owned())
        })
        .unwrap_or_else(|| panic!("no buildgrid/builds/…:{acme_commit} in\n{listed}"));
    let acme_hex = acme_id.strip_prefix("sha256:").unwrap();
    assert!(
        !listed.contains(&format!("{acme_repo} ")) && !listed.contains(&format!("{acme_repo}:")),
        "{listed}"
    );

    // A copy pulled into the engine under a name of no namespace buildgrid knows.
    let config = tempfile::tempdir().unwrap();
    let token = buildgrid.token();
    let login = docker(
        config.path(),
        &["login", &host, "-u", "admin", "--password-stdin"],
        &token,
    );
    assert!(login.status.success(), "{}", text(&login));
    let pulled = docker(config.path(), &["pull", &acme_image], "");
    assert!(pulled.status.success(), "{}", text(&pulled));
    let alias = format!("innocent-{unique}/alias:1");
    run_ok("docker", &["tag", &acme_image, &alias]);

    // pub is public; bee, private, is the namespace that tries.
    buildgrid.make_public("pub");
    let public = Repo::new("ARG BASE\nFROM ${BASE}\nRUN echo public > /pub.txt\n");
    create_app(&buildgrid, "pub/base", &public.url);
    let public_image = image_ref(&build_ok(&buildgrid, "pub/base", false));
    let own = Repo::new("ARG BASE\nFROM ${BASE}\nRUN echo own > /own.txt\n");
    create_app(&buildgrid, "bee/base", &own.url);
    let own_image = image_ref(&build_ok(&buildgrid, "bee/base", false));

    let probe = Repo::new("ARG BASE\nFROM ${BASE}\n");
    create_app(&buildgrid, "bee/probe", &probe.url);
    let ns = "names an image of namespace acme, which is not public: a build of namespace bee \
              may use images of bee, of public namespaces and of other registries";
    let by_id = "names an image by id";
    let short = &acme_hex[..4];
    let cases: Vec<(String, String)> = vec![
        (
            format!("FROM {acme_repo}:{acme_commit}\n"),
            format!("line 1: FROM {acme_repo}:{acme_commit} {ns}"),
        ),
        (
            format!("FROM {acme_image}\n"),
            format!("line 1: FROM {acme_image} {ns}"),
        ),
        (
            format!("FROM localhost:{port}/{acme_repo}:{acme_commit}\n"),
            format!("line 1: FROM localhost:{port}/{acme_repo}:{acme_commit} {ns}"),
        ),
        (
            format!("FROM {acme_name}@{acme_digest}\n"),
            format!("line 1: FROM {acme_name}@{acme_digest} {ns}"),
        ),
        (
            format!("FROM {acme_hex}\n"),
            format!("line 1: FROM {acme_hex} {by_id}"),
        ),
        (
            format!("FROM {short}\n"),
            format!("line 1: FROM {short} {by_id}"),
        ),
        (
            format!("FROM {acme_id}\n"),
            format!("line 1: FROM {acme_id} {by_id}"),
        ),
        (
            format!("ARG BASE\nFROM ${{BASE}}\nCOPY --from={short} /secret.txt /s\n"),
            format!("line 3: COPY --from={short} {by_id}"),
        ),
        (
            format!(
                "ARG NS=acme\nARG BASE\nFROM ${{BASE}}\nARG NS\n\
                 COPY --from=${{NS}}/{}:{acme_commit} /secret.txt /s\n",
                acme_repo.strip_prefix("acme/").unwrap()
            ),
            format!("line 5: COPY --from={acme_repo}:{acme_commit} {ns}"),
        ),
        (
            format!("ARG SRC={acme_repo}:{acme_commit}\nFROM ${{SRC}}\n"),
            format!("line 2: FROM {acme_repo}:{acme_commit} {ns}"),
        ),
        (
            format!(
                "ARG BASE\nFROM ${{BASE}}\n\
                 RUN --mount=type=bind,from={acme_image},target=/a cat /a/secret.txt\n"
            ),
            format!(
                "line 3: RUN --mount=from={acme_image} {ns} (and RUN --mount needs BuildKit, \
                 which buildgrid does not use)"
            ),
        ),
        (
            format!("FROM {alias}\n"),
            format!(
                "line 1: FROM {alias} resolves in the Docker engine to an image of namespace \
                 acme, which is not public"
            ),
        ),
        (
            "FROM buildgrid/builds/0123:1\n".to_owned(),
            "line 1: FROM buildgrid/builds/0123:1 names an image buildgrid built in the engine"
                .to_owned(),
        ),
    ];
    for (dockerfile, expected) in &cases {
        probe.change(dockerfile);
        let (ok, printed) = build(&buildgrid, "bee/probe", false);
        assert!(!ok, "{dockerfile} built:\n{printed}");
        let failed = printed
            .lines()
            .find(|l| l.starts_with("build failed: "))
            .unwrap_or_else(|| panic!("no failure line for {dockerfile}:\n{printed}"));
        assert!(
            failed.starts_with(&format!("build failed: refused: {expected}")),
            "{dockerfile}\nexpected: {expected}\n{printed}"
        );
        // The engine never ran it.
        assert!(!printed.contains("Step 1/"), "{printed}");
        assert!(!printed.contains(&secret), "{printed}");
    }

    // Its own images, public ones and other registries' (here Docker Hub's name of a local
    // image) work; the engine pulls buildgrid's with the build's own pull-only token.
    let good = format!(
        "ARG BASE\nFROM {own_image} AS own\nFROM {public_image}\nCOPY --from=own /own.txt /\n\
         COPY --from=0 /own.txt /again.txt\nCOPY --from={BASE} /bin/busybox /bb\n\
         RUN cat /own.txt /pub.txt\nCMD [\"true\"]\n"
    );
    probe.change(&good);
    let printed = build_ok(&buildgrid, "bee/probe", false);
    assert!(printed.lines().any(|l| l == "own"), "{printed}");
    assert!(printed.lines().any(|l| l == "public"), "{printed}");

    // A rebuild of the same commit takes every step from the engine's cache.
    let again = build_ok(&buildgrid, "bee/probe", true);
    assert!(!again.contains("Running in"), "{again}");
    assert!(again.contains("Using cache"), "{again}");

    // The image details record the base images with their ARGs substituted.
    let store = buildgrid_store::Store::open(&buildgrid.data_dir()).unwrap();
    let acme_repo_name = buildgrid_core::RepoName::parse(acme_repo).unwrap();
    let digest = buildgrid_core::Digest::parse(&acme_digest).unwrap();
    assert_eq!(
        store.db.image_bases(&acme_repo_name, &digest).unwrap(),
        [BASE]
    );

    for name in [alias.as_str(), acme_image.as_str()] {
        let _ = run("docker", &["rmi", "--no-prune", name]);
    }
}
