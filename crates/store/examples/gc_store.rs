//! Fills a data directory for `registry/bench/gc.sh`: many apps, each with many successful
//! builds of small images that share no layer, stored through the real ingest as the builder
//! stores them (commit tag at ingest, then the branch tag, then the build's state), and a
//! server-wide retention that keeps the newest tenth of each app's builds. So about 90 % of
//! the blobs are garbage to `buildgrid gc`.
//!
//! The same blobs are laid out in the filesystem storage of CNCF distribution (Debian's
//! `docker-registry`), where only the builds retention keeps are tagged: there, garbage is what
//! no tag reaches, which `docker-registry garbage-collect --delete-untagged` removes.
//!
//! ```text
//! cargo run --release -p buildgrid-store --example gc_store -- \
//!     <buildgrid data> <distribution root> <kept list> <blobs>
//! ```
//!
//! The kept list has one line per kept image: `<repo> <tag> <manifest> <config> <layer>…`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use buildgrid_core::{AppRef, Digest, RepoName, Tag};
use buildgrid_store::{BuildState, NewApp, NewBuild, RetentionRule, Store};
use serde_json::{Value, json};

/// Layers of each image; with its config and manifest an image is `LAYERS + 2` blobs.
const LAYERS: usize = 3;
/// Builds of each app; retention keeps the newest `BUILDS_PER_APP / 10`.
const BUILDS_PER_APP: usize = 200;
/// Ingests running at once: most of an ingest's time is fsync, which overlaps well.
const THREADS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, dist, kept_list, blobs] = args.as_slice() else {
        eprintln!("usage: gc_store <buildgrid data> <distribution root> <kept list> <blobs>");
        std::process::exit(2);
    };
    let blobs: usize = blobs.parse().expect("<blobs> is a number");
    let images = blobs.div_ceil(LAYERS + 2);
    let builds_per_app = BUILDS_PER_APP.min(images);
    let apps = images.div_ceil(builds_per_app);
    let keep_last = builds_per_app.div_ceil(10);

    let store = Store::open(Path::new(data)).expect("open the data directory");
    store
        .db
        .set_retention_rule(
            "",
            RetentionRule {
                keep_last: Some(keep_last as u32),
                ..RetentionRule::default()
            },
        )
        .unwrap();
    let scratch = tempfile::tempdir_in(Path::new(data).parent().unwrap()).unwrap();
    let dist = PathBuf::from(dist).join("docker/registry/v2");
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let kept: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (store, dist, done) = (&store, &dist, &done);
                let archive = scratch.path().join(format!("image-{thread}.tar"));
                scope.spawn(move || {
                    let mut kept = Vec::new();
                    for app in (thread..apps).step_by(THREADS) {
                        let builds = builds_per_app.min(images - app * builds_per_app);
                        kept.extend(fill_app(store, dist, &archive, app, builds, keep_last));
                        let total = done.fetch_add(builds, Ordering::Relaxed) + builds;
                        if total % 5000 < builds {
                            eprintln!(
                                "  {total} of {images} builds stored, {:.0} s",
                                started.elapsed().as_secs_f64()
                            );
                        }
                    }
                    kept
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut out = fs::File::create(kept_list).unwrap();
    for line in &kept {
        writeln!(out, "{line}").unwrap();
    }
    println!(
        "stored {images} builds of {apps} apps ({} blobs, {} kept builds) in {:.1} s",
        images * (LAYERS + 2),
        kept.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Stores `builds` builds of app number `app`, oldest first; returns the kept list's lines.
fn fill_app(
    store: &Store,
    dist: &Path,
    archive: &Path,
    app: usize,
    builds: usize,
    keep_last: usize,
) -> Vec<String> {
    let name = AppRef::parse(&format!("bench/app-{app:04}")).unwrap();
    let git_url = format!("https://git.example.com/bench/app-{app:04}.git");
    let created = store
        .db
        .create_app(&NewApp {
            image_repo: name.image_repo(&git_url).unwrap(),
            app: name,
            git_url,
            branch: "main".into(),
            dockerfile: "Dockerfile".into(),
            context: ".".into(),
            build_args: Default::default(),
            webhook_secret: "bench-webhook-secret".into(),
        })
        .unwrap();
    let repo = created.image_repo;
    let main = Tag::parse("main").unwrap();
    let mut kept = Vec::new();
    for build in 0..builds {
        let commit =
            Digest::of(format!("app {app} build {build}").as_bytes()).hex()[..40].to_owned();
        let id = store
            .db
            .enqueue_build(&NewBuild {
                app_id: created.id,
                git_ref: "main".into(),
                commit_id: Some(commit.clone()),
                trigger: "bench".into(),
                force: true,
            })
            .unwrap()
            .id();
        // Another thread may claim this one; every build ends succeeded all the same.
        store.db.claim_next_build().unwrap();
        write_archive(archive, &format!("{app}-{build}"), &commit);
        let tag = Tag::parse(&commit).unwrap();
        let report = buildgrid_store::ingest::import_archive(store, archive, &repo, &tag).unwrap();
        store
            .db
            .move_branch_tag(&repo, &main, "main", id, &report.digest)
            .unwrap();
        let image_ref = format!("{repo}:{commit}");
        store
            .db
            .finish_build(
                id,
                BuildState::Succeeded,
                None,
                Some((&image_ref, &report.digest)),
            )
            .unwrap();
        let is_kept = build + keep_last >= builds;
        let blobs = lay_out(
            store,
            dist,
            &repo,
            &report.digest,
            is_kept.then_some(&commit),
        );
        if build + 1 == builds {
            link(
                &dist.join(format!("repositories/{repo}/_manifests/tags/main/current")),
                &report.digest,
            );
            link(
                &tag_index(dist, &repo, "main", &report.digest),
                &report.digest,
            );
        }
        if is_kept {
            let names: Vec<String> = blobs.iter().map(Digest::to_string).collect();
            kept.push(format!("{repo} {commit} {}", names.join(" ")));
        }
    }
    kept
}

/// Copies the image's blobs (manifest first, then config and layers) into distribution's
/// storage with the links of its repository, and tags it with `tag` if given. Returns the
/// digests of its blobs.
fn lay_out(
    store: &Store,
    dist: &Path,
    repo: &RepoName,
    manifest: &Digest,
    tag: Option<&String>,
) -> Vec<Digest> {
    let bytes = store.blobs.read(manifest).unwrap();
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    let mut blobs = vec![manifest.clone()];
    blobs.push(Digest::parse(document["config"]["digest"].as_str().unwrap()).unwrap());
    for layer in document["layers"].as_array().unwrap() {
        blobs.push(Digest::parse(layer["digest"].as_str().unwrap()).unwrap());
    }
    let repository = dist.join(format!("repositories/{repo}"));
    for (i, blob) in blobs.iter().enumerate() {
        let hex = blob.hex();
        let dir = dist.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        fs::create_dir_all(&dir).unwrap();
        let content = if i == 0 {
            bytes.clone()
        } else {
            store.blobs.read(blob).unwrap()
        };
        fs::write(dir.join("data"), content).unwrap();
        if i == 0 {
            link(
                &repository.join(format!("_manifests/revisions/sha256/{hex}")),
                blob,
            );
        } else {
            link(&repository.join(format!("_layers/sha256/{hex}")), blob);
        }
    }
    if let Some(tag) = tag {
        link(
            &repository.join(format!("_manifests/tags/{tag}/current")),
            manifest,
        );
        link(&tag_index(dist, repo, tag, manifest), manifest);
    }
    blobs
}

fn tag_index(dist: &Path, repo: &RepoName, tag: &str, manifest: &Digest) -> PathBuf {
    dist.join(format!(
        "repositories/{repo}/_manifests/tags/{tag}/index/sha256/{}",
        manifest.hex()
    ))
}

/// distribution's link file: `<dir>/link` holding the digest.
fn link(dir: &Path, digest: &Digest) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("link"), digest.to_string()).unwrap();
}

/// A legacy `docker save` archive of an image of `LAYERS` small layers all its own, and a
/// config naming `commit` as its revision, as a build's would.
fn write_archive(path: &Path, seed: &str, commit: &str) {
    let layers: Vec<Vec<u8>> = (0..LAYERS).map(|i| layer(&format!("{seed}-{i}"))).collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Cmd": ["/app/run"],
            "Labels": {"org.opencontainers.image.revision": commit},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    let mut names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        append(&mut builder, &name, layer);
        names.push(name);
    }
    append(&mut builder, &config_name, &config);
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": ["bench/app:latest"],
        "Layers": names,
    }]))
    .unwrap();
    append(&mut builder, "manifest.json", &manifest);
    builder.into_inner().unwrap();
}

/// A layer of a few small files whose content depends on `seed` (about 3 KB as a tar,
/// 1 KB compressed).
fn layer(seed: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    append(
        &mut builder,
        &format!("app/{seed}.conf"),
        format!("name = {seed}\n").as_bytes(),
    );
    append(
        &mut builder,
        "app/run",
        format!("#!/bin/sh\necho {seed}\n").repeat(20).as_bytes(),
    );
    builder.into_inner().unwrap()
}

fn append<W: Write>(builder: &mut tar::Builder<W>, path: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder.append_data(&mut header, path, bytes).unwrap();
}
