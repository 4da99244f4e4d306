//! The build context: the tar `write_context` makes of a commit, read back entry by entry.

use std::io::Read;

use buildgrid_builder::context::{OUTSIDE_DOCKERFILE, write_context};
use git2::{Oid, Repository};

use crate::support::{Node, commit, isolate_git};

const DOCKERIGNORE: &str = "\
# build output and logs stay home
*.log
!keep.log
build/
**/secret.txt

# sent anyway, whatever this says
Dockerfile
.dockerignore
";

/// The commit a submodule entry points at; it is not in the repository, as in a bare mirror.
pub(crate) const SUBMODULE_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) repo: Repository,
    pub(crate) commit: Oid,
}

/// A bare repository with one commit of `nodes`.
fn fixture_with(nodes: &[Node<'_>]) -> Fixture {
    isolate_git();
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(dir.path().join("app.git")).unwrap();
    let commit = commit(&repo, Some("refs/heads/main"), "the app", nodes, &[]);
    Fixture {
        _dir: dir,
        repo,
        commit,
    }
}

pub(crate) fn fixture() -> Fixture {
    let submodule = Oid::from_str(SUBMODULE_COMMIT).unwrap();
    fixture_with(&[
        Node::File(".dockerignore", DOCKERIGNORE.as_bytes()),
        Node::File("Dockerfile", b"FROM alpine:3.20\nCOPY . /app\n"),
        Node::File("README.md", b"# demo\n"),
        Node::Executable("run.sh", b"#!/bin/sh\necho hi\n"),
        Node::Symlink("current", "src/main.rs"),
        Node::File("app.log", b"noise\n"),
        Node::File("keep.log", b"kept\n"),
        Node::File("secret.txt", b"root secret\n"),
        Node::File("build/out.bin", b"\x00\x01"),
        Node::File("build/nested/more.txt", b"more\n"),
        Node::File("src/main.rs", b"fn main() {}\n"),
        Node::File("src/secret.txt", b"nested secret\n"),
        Node::File("src/debug.log", b"not at the root\n"),
        Node::Executable("src/tools/gen.sh", b"#!/bin/sh\n"),
        Node::Symlink("src/tools/readme", "../../README.md"),
        Node::Submodule("vendor/lib", submodule),
        Node::File("vendor/NOTICE", b"vendored\n"),
        Node::File("app/.dockerignore", b"*.md\nDockerfile\n"),
        Node::File("app/Dockerfile", b"FROM node:22\n"),
        Node::File("app/README.md", b"# app\n"),
        Node::File("app/index.js", b"console.log(1)\n"),
        Node::File("app/lib/util.js", b"export {}\n"),
        Node::File("docker/Dockerfile.prod", b"FROM node:22-slim\n"),
    ])
}

/// Writes the context and renders it: a summary line, then one line per tar entry in order.
fn render(repo: &Repository, commit: Oid, context_dir: &str, dockerfile: &str) -> String {
    let mut tar = Vec::new();
    let context = write_context(repo, commit, context_dir, dockerfile, &mut tar).unwrap();
    let mtime = repo.find_commit(commit).unwrap().time().seconds() as u64;
    let mut lines = vec![format!(
        "dockerfile={} files={} submodules={:?} text={:?}",
        context.dockerfile, context.files, context.skipped_submodules, context.dockerfile_text
    )];
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header();
        let path = entry.path().unwrap().display().to_string();
        assert_eq!(
            header.mtime().unwrap(),
            mtime,
            "{path}: mtime is the commit's"
        );
        assert_eq!(header.uid().unwrap(), 0, "{path}: uid");
        assert_eq!(header.gid().unwrap(), 0, "{path}: gid");
        let mode = header.mode().unwrap();
        let line = match header.entry_type() {
            tar::EntryType::Directory => format!("dir  {mode:o} {path}/"),
            tar::EntryType::Symlink => {
                let target = entry.link_name().unwrap().unwrap().display().to_string();
                format!("link {mode:o} {path} -> {target}")
            }
            tar::EntryType::Regular => {
                let mut content = String::new();
                entry.read_to_string(&mut content).unwrap();
                format!("file {mode:o} {path} {content:?}")
            }
            other => panic!("{path}: unexpected entry type {other:?}"),
        };
        lines.push(line);
    }
    lines.join("\n")
}

#[track_caller]
fn check(fixture: &Fixture, context_dir: &str, dockerfile: &str, expected: &str) {
    let actual = render(&fixture.repo, fixture.commit, context_dir, dockerfile);
    assert_eq!(
        actual.trim(),
        expected.trim(),
        "\n--- actual ---\n{actual}\n--- expected ---\n{expected}\n"
    );
}

#[test]
fn whole_repository_honours_dockerignore_modes_symlinks_and_submodules() {
    let fixture = fixture();
    // Ignored: app.log (`*.log`), build/ and all under it, secret.txt and src/secret.txt
    // (`**/secret.txt`). Kept: keep.log (`!keep.log`), src/debug.log (`*.log` is anchored at the
    // root, as in Docker), the Dockerfile and .dockerignore although patterns match them.
    // The submodule vendor/lib is left out and reported.
    check(
        &fixture,
        "",
        "Dockerfile",
        r##"
dockerfile=Dockerfile files=15 submodules=["vendor/lib"] text="FROM alpine:3.20\nCOPY . /app\n"
file 644 .dockerignore "# build output and logs stay home\n*.log\n!keep.log\nbuild/\n**/secret.txt\n\n# sent anyway, whatever this says\nDockerfile\n.dockerignore\n"
file 644 Dockerfile "FROM alpine:3.20\nCOPY . /app\n"
file 644 README.md "# demo\n"
dir  755 app/
file 644 app/.dockerignore "*.md\nDockerfile\n"
file 644 app/Dockerfile "FROM node:22\n"
file 644 app/README.md "# app\n"
file 644 app/index.js "console.log(1)\n"
dir  755 app/lib/
file 644 app/lib/util.js "export {}\n"
link 777 current -> src/main.rs
dir  755 docker/
file 644 docker/Dockerfile.prod "FROM node:22-slim\n"
file 644 keep.log "kept\n"
file 755 run.sh "#!/bin/sh\necho hi\n"
dir  755 src/
file 644 src/debug.log "not at the root\n"
file 644 src/main.rs "fn main() {}\n"
dir  755 src/tools/
file 755 src/tools/gen.sh "#!/bin/sh\n"
link 777 src/tools/readme -> ../../README.md
dir  755 vendor/
file 644 vendor/NOTICE "vendored\n"
"##,
    );
}

#[test]
fn context_directory_with_its_own_dockerfile_and_dockerignore() {
    let fixture = fixture();
    // app/.dockerignore applies (README.md is left out) and its `Dockerfile` line does not drop
    // the Dockerfile. Paths are relative to the context; leading `./` and slashes are cleaned.
    let expected = r##"
dockerfile=Dockerfile files=4 submodules=[] text="FROM node:22\n"
file 644 .dockerignore "*.md\nDockerfile\n"
file 644 Dockerfile "FROM node:22\n"
file 644 index.js "console.log(1)\n"
dir  755 lib/
file 644 lib/util.js "export {}\n"
"##;
    check(&fixture, "app", "app/Dockerfile", expected);
    check(&fixture, "./app/", "/app/Dockerfile", expected);
}

#[test]
fn dockerfile_outside_the_context_is_added_under_its_own_name() {
    let fixture = fixture();
    assert_eq!(OUTSIDE_DOCKERFILE, ".buildgrid.Dockerfile");
    // app/Dockerfile is not the Dockerfile of this build: app/.dockerignore's `Dockerfile`
    // line leaves it out, as `docker build -f` would.
    check(
        &fixture,
        "app",
        "docker/Dockerfile.prod",
        r##"
dockerfile=.buildgrid.Dockerfile files=3 submodules=[] text="FROM node:22-slim\n"
file 644 .dockerignore "*.md\nDockerfile\n"
file 644 index.js "console.log(1)\n"
dir  755 lib/
file 644 lib/util.js "export {}\n"
file 644 .buildgrid.Dockerfile "FROM node:22-slim\n"
"##,
    );
    // The Dockerfile path is relative to the repository root, not to the context.
    check(
        &fixture,
        "app",
        "Dockerfile",
        r##"
dockerfile=.buildgrid.Dockerfile files=3 submodules=[] text="FROM alpine:3.20\nCOPY . /app\n"
file 644 .dockerignore "*.md\nDockerfile\n"
file 644 index.js "console.log(1)\n"
dir  755 lib/
file 644 lib/util.js "export {}\n"
file 644 .buildgrid.Dockerfile "FROM alpine:3.20\nCOPY . /app\n"
"##,
    );
}

#[test]
fn negation_takes_back_files_inside_an_ignored_directory() {
    // The ignored directory itself is not sent, only the file taken back (as `docker build`).
    check(
        &fixture_with(&[
            Node::File(".dockerignore", b"build/\n!build/keep.txt\n"),
            Node::File("Dockerfile", b"FROM scratch\n"),
            Node::File("build/keep.txt", b"keep\n"),
            Node::File("build/drop.txt", b"drop\n"),
        ]),
        "",
        "Dockerfile",
        r#"
dockerfile=Dockerfile files=3 submodules=[] text="FROM scratch\n"
file 644 .dockerignore "build/\n!build/keep.txt\n"
file 644 Dockerfile "FROM scratch\n"
file 644 build/keep.txt "keep\n"
"#,
    );
    // An allow list: everything out, then the Dockerfile and src/ back in, whole.
    check(
        &fixture_with(&[
            Node::File(".dockerignore", b"*\n!Dockerfile\n!src\nsrc/**/*.test.js\n"),
            Node::File("Dockerfile", b"FROM scratch\n"),
            Node::File("notes.txt", b"notes\n"),
            Node::File("src/lib.js", b"\n"),
            Node::File("src/deep/lib.test.js", b"\n"),
            Node::File("src/deep/util.js", b"\n"),
        ]),
        "",
        "Dockerfile",
        r#"
dockerfile=Dockerfile files=4 submodules=[] text="FROM scratch\n"
file 644 .dockerignore "*\n!Dockerfile\n!src\nsrc/**/*.test.js\n"
file 644 Dockerfile "FROM scratch\n"
dir  755 src/
dir  755 src/deep/
file 644 src/deep/util.js "\n"
file 644 src/lib.js "\n"
"#,
    );
}

// Docker applies every pattern in order to a path or its parents; the last match wins.
#[test]
fn a_later_pattern_matching_a_parent_directory_wins() {
    check(
        &fixture_with(&[
            Node::File(".dockerignore", b"!build/keep.txt\nbuild\n"),
            Node::File("Dockerfile", b"FROM scratch\n"),
            Node::File("build/keep.txt", b"keep\n"),
            Node::File("build/drop.txt", b"drop\n"),
        ]),
        "",
        "Dockerfile",
        r#"
dockerfile=Dockerfile files=2 submodules=[] text="FROM scratch\n"
file 644 .dockerignore "!build/keep.txt\nbuild\n"
file 644 Dockerfile "FROM scratch\n"
"#,
    );
}

// Docker cleans patterns: `build/` also matches a file named `build`.
#[test]
fn a_trailing_slash_pattern_also_matches_a_file() {
    check(
        &fixture_with(&[
            Node::File(".dockerignore", b"build/\n"),
            Node::File("Dockerfile", b"FROM scratch\n"),
            Node::File("build", b"a file, not a directory\n"),
        ]),
        "",
        "Dockerfile",
        r#"
dockerfile=Dockerfile files=2 submodules=[] text="FROM scratch\n"
file 644 .dockerignore "build/\n"
file 644 Dockerfile "FROM scratch\n"
"#,
    );
}

// A symlinked Dockerfile is followed to the file it names.
#[test]
fn a_symlinked_dockerfile_outside_the_context_is_followed() {
    check(
        &fixture_with(&[
            Node::Symlink("Dockerfile", "docker/Dockerfile.prod"),
            Node::File("docker/Dockerfile.prod", b"FROM node:22-slim\n"),
            Node::File("app/index.js", b"console.log(1)\n"),
        ]),
        "app",
        "Dockerfile",
        r#"
dockerfile=.buildgrid.Dockerfile files=1 submodules=[] text="FROM node:22-slim\n"
file 644 index.js "console.log(1)\n"
file 644 .buildgrid.Dockerfile "FROM node:22-slim\n"
"#,
    );
}

#[test]
fn the_same_commit_always_gives_the_same_bytes() {
    let first = fixture();
    let tar = |fixture: &Fixture, context: &str, dockerfile: &str| {
        let mut bytes = Vec::new();
        write_context(
            &fixture.repo,
            fixture.commit,
            context,
            dockerfile,
            &mut bytes,
        )
        .unwrap();
        bytes
    };
    let once = tar(&first, "", "Dockerfile");
    assert_eq!(once, tar(&first, "", "Dockerfile"));
    // Another repository with the same commit, made later in another directory.
    let second = fixture();
    assert_eq!(first.commit, second.commit);
    assert_eq!(once, tar(&second, "", "Dockerfile"));
    assert_eq!(
        tar(&first, "app", "docker/Dockerfile.prod"),
        tar(&second, "app", "docker/Dockerfile.prod")
    );
    // The tar is a complete archive: it ends with the two zero blocks.
    assert_eq!(once.len() % 512, 0);
    assert!(once[once.len() - 1024..].iter().all(|b| *b == 0));
}

#[test]
fn long_paths_and_link_targets_survive() {
    let long_dir = format!("src/{}", "d".repeat(90));
    let long_file = format!("{long_dir}/{}.txt", "f".repeat(60));
    let long_target = format!("../{}", "t".repeat(150));
    let fixture = fixture_with(&[
        Node::File("Dockerfile", b"FROM scratch\n"),
        Node::File(&long_file, b"long\n"),
        Node::Symlink("link", &long_target),
    ]);
    let actual = render(&fixture.repo, fixture.commit, "", "Dockerfile");
    let expected = format!(
        r#"dockerfile=Dockerfile files=2 submodules=[] text="FROM scratch\n"
file 644 Dockerfile "FROM scratch\n"
link 777 link -> {long_target}
dir  755 src/
dir  755 {long_dir}/
file 644 {long_file} "long\n""#
    );
    assert_eq!(actual, expected);
}
