//! Apps, builds, logs and images written straight into a store, as the builder and ingest would
//! write them. Shared by the integration tests and the render benchmark.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use buildgrid_core::{AppRef, Digest, RepoName, Tag};
use buildgrid_store::{App, BuildState, LogLine, NewApp, NewBuild, Store};

pub const GIT_URL: &str = "https://git.example.com/acme/hello.git";

pub fn create_app(store: &Store, name: &str) -> App {
    let app = AppRef::parse(name).unwrap();
    let image_repo = app.image_repo(GIT_URL).unwrap();
    store
        .db
        .create_app(&NewApp {
            app,
            git_url: GIT_URL.to_owned(),
            branch: "main".to_owned(),
            dockerfile: "Dockerfile".to_owned(),
            context: ".".to_owned(),
            build_args: BTreeMap::new(),
            image_repo,
            webhook_secret: "s3cret".to_owned(),
        })
        .unwrap()
}

/// A 40-hex commit id made from `n`.
pub fn commit(n: u64) -> String {
    format!("{n:040x}")
}

/// Queues a build of `branch` and starts it at `commit`; returns its id.
pub fn start_build(store: &Store, app: &App, branch: &str, commit: &str, message: &str) -> i64 {
    let id = store
        .db
        .enqueue_build(&NewBuild {
            app_id: app.id,
            git_ref: branch.to_owned(),
            commit_id: None,
            trigger: "push".to_owned(),
            force: true,
        })
        .unwrap()
        .id();
    let claimed = store.db.claim_next_build().unwrap().unwrap();
    assert_eq!(claimed.id, id, "another build was queued");
    store
        .db
        .set_build_commit(id, commit, message, "Ada Lovelace <ada@example.com>")
        .unwrap();
    store.db.set_build_state(id, BuildState::Building).unwrap();
    id
}

/// Queues a build and leaves it queued; returns its id.
pub fn queue_build(store: &Store, app: &App, branch: &str) -> i64 {
    store
        .db
        .enqueue_build(&NewBuild {
            app_id: app.id,
            git_ref: branch.to_owned(),
            commit_id: None,
            trigger: "web".to_owned(),
            force: true,
        })
        .unwrap()
        .id()
}

/// Ends a build; a succeeded one records `digest` as its image.
pub fn finish_build(store: &Store, app: &App, id: i64, state: BuildState, digest: Option<&Digest>) {
    let build = store.db.build(id).unwrap().unwrap();
    let commit = build.commit_id.unwrap_or_default();
    let reference = format!("127.0.0.1:5000/{}:{commit}", app.image_repo);
    let reason = (state == BuildState::Failed).then_some("the command returned a non-zero code: 3");
    store
        .db
        .finish_build(id, state, reason, digest.map(|d| (reference.as_str(), d)))
        .unwrap();
}

/// A digest that names no stored blob, for builds whose image pages are not visited; its
/// short form (the image id) is `n` in 12 hex digits.
pub fn fake_digest(n: u64) -> Digest {
    Digest::parse(&format!("sha256:{n:012x}{}", "e".repeat(52))).unwrap()
}

/// Appends `count` lines after line `after`: a step starts every `step_every` lines, with a
/// `Step i/n : …` line as docker prints it, and the text of line `seq` is `line <seq> …`.
pub fn write_log(store: &Store, build: i64, after: i64, count: i64, step_every: i64) {
    let steps = (after + count + step_every - 1) / step_every;
    let mut batch = Vec::new();
    for seq in after + 1..=after + count {
        let step = (seq - 1) / step_every + 1;
        let line = if (seq - 1) % step_every == 0 {
            format!("Step {step}/{steps} : RUN make part-{step}")
        } else {
            format!("line {seq} of step {step}: compiling module {}", seq % 97)
        };
        batch.push(LogLine {
            seq,
            at_ms: 1_700_000_000_000 + seq * 10,
            step: Some(format!("{step}/{steps}")),
            line,
        });
        if batch.len() == 10_000 {
            store.db.append_logs(build, &batch).unwrap();
            batch.clear();
        }
    }
    store.db.append_logs(build, &batch).unwrap();
}

/// Appends one line without a step.
pub fn append_line(store: &Store, build: i64, seq: i64, line: &str) {
    store.db.append_log(build, seq, None, line).unwrap();
}

/// Stores a small image as `repo:tag` from a `docker save` archive written in `dir`; returns
/// its manifest digest.
pub fn import_image(store: &Store, dir: &Path, repo: &RepoName, tag: &str) -> Digest {
    let layer = tar(&[("hello.txt", b"hello from a seeded image\n".as_slice())]);
    let config = serde_json::json!({ "Cmd": ["/bin/cat", "/hello.txt"] });
    import_layer(store, dir, repo, tag, &layer, config)
}

/// Stores a small image with this container config (`ExposedPorts`, `Cmd`) as `repo:tag`.
pub fn import_configured(
    store: &Store,
    dir: &Path,
    repo: &RepoName,
    tag: &str,
    container_config: serde_json::Value,
) -> Digest {
    let layer = tar(&[("served.txt", b"served by a seeded image\n".as_slice())]);
    import_layer(store, dir, repo, tag, &layer, container_config)
}

/// Stores an image whose one layer holds `size` bytes that do not compress, as `repo:tag`.
pub fn import_incompressible(
    store: &Store,
    dir: &Path,
    repo: &RepoName,
    tag: &str,
    size: usize,
) -> Digest {
    use sha2::Digest as _;
    let mut bytes = Vec::with_capacity(size + 32);
    let mut block = sha2::Sha256::digest(tag.as_bytes());
    while bytes.len() < size {
        bytes.extend_from_slice(&block);
        block = sha2::Sha256::digest(block);
    }
    bytes.truncate(size);
    let layer = tar(&[("noise.bin", bytes.as_slice())]);
    import_layer(store, dir, repo, tag, &layer, serde_json::json!({}))
}

/// Stores a one-layer image as `repo:tag` from a `docker save` archive written in `dir`.
fn import_layer(
    store: &Store,
    dir: &Path,
    repo: &RepoName,
    tag: &str,
    layer: &[u8],
    container_config: serde_json::Value,
) -> Digest {
    let diff_id = Digest::of(layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [format!("{repo}:{tag}")],
        "Layers": ["layer/layer.tar"],
    }]))
    .unwrap();
    let archive = tar(&[
        ("layer/layer.tar", layer),
        (config_name.as_str(), config.as_slice()),
        ("manifest.json", manifest.as_slice()),
    ]);
    let path = dir.join(format!("{tag}-{}.tar", diff_id.hex()));
    std::fs::write(&path, archive).unwrap();
    let tag = Tag::parse(tag).unwrap();
    buildgrid_store::ingest::import_archive(store, &path, repo, &tag)
        .unwrap()
        .digest
}

/// Stores an image whose one layer holds `dirs` directories of `per_dir` small files each, plus
/// one directory `big/` of `big` files; returns its manifest digest.
#[allow(dead_code)] // used by the render bench
pub fn import_many_files(
    store: &Store,
    dir: &Path,
    repo: &RepoName,
    tag: &str,
    (dirs, per_dir, big): (usize, usize, usize),
) -> Digest {
    let mut names = Vec::new();
    for d in 0..dirs {
        for f in 0..per_dir {
            names.push(format!("d{d:03}/file-{f:05}.txt"));
        }
    }
    for f in 0..big {
        names.push(format!("big/file-{f:05}.txt"));
    }
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(|n| (n.as_str(), b"x\n".as_slice()))
        .collect();
    let config =
        serde_json::json!({ "Labels": { "org.opencontainers.image.description": "many files" } });
    import_layer(store, dir, repo, tag, &tar(&files), config)
}

fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(bytes.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, *bytes).unwrap();
    }
    builder.into_inner().unwrap()
}
