//! Garbage collection and retention: what stays is exactly what a rule, tag, pin or deploy
//! keeps, every image that stays pulls whole, and a collection stopped at any point resumes
//! with `fsck` clean.

use std::collections::BTreeMap;
use std::path::PathBuf;

use buildgrid_core::{AppRef, Digest, RepoName};
use buildgrid_store::gc::{GcOptions, StopPoint};
use buildgrid_store::{
    App, BuildState, DeployImage, NewApp, NewBuild, NewSource, RetentionRule, Source, Store,
};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::{Image, docker_save, layer, repo_name, tag_name, tar};

const GIT: &str = "https://git.example.com/acme/shop.git";

/// A store with one app, `acme/shop`, whose builds are stored through the real ingest.
struct World {
    dir: tempfile::TempDir,
    store: Option<Store>,
    app: App,
    repo: RepoName,
    archives: usize,
}

struct Built {
    id: i64,
    commit: String,
    digest: Digest,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let name = AppRef::parse("acme/shop").unwrap();
        let app = store
            .db
            .create_app(&NewApp {
                image_repo: name.image_repo(GIT).unwrap(),
                app: name.clone(),
                git_url: GIT.into(),
                branch: "main".into(),
                dockerfile: "Dockerfile".into(),
                context: ".".into(),
                build_args: BTreeMap::new(),
                webhook_secret: "s".into(),
            })
            .unwrap();
        let repo = app.image_repo.clone();
        World {
            dir,
            store: Some(store),
            app,
            repo,
            archives: 0,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// Drops the store as a killed process would leave it, and opens it again.
    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(Store::open(&self.dir.path().join("data")).unwrap());
    }

    fn archive(&mut self, layers: &[&str]) -> PathBuf {
        self.archives += 1;
        let layers: Vec<Vec<u8>> = layers.iter().map(|seed| layer(seed)).collect();
        let bytes = tar(&docker_save(&[("x:y", &Image::new("amd64", &layers))]));
        let path = self.dir.path().join(format!("{}.tar", self.archives));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A successful build of `branch` whose image has the layers `base` (shared) and `own`,
    /// stored as the builder does: commit tag at ingest, then the branch tag, then the state.
    fn build(&mut self, branch: &str, base: &str, own: &str) -> Built {
        self.build_of(None, branch, base, own)
    }

    /// [`World::build`] of the app's own repository (`source` `None`) or of a source.
    fn build_of(&mut self, source: Option<&Source>, branch: &str, base: &str, own: &str) -> Built {
        let built = self.start_build(source, branch, base, own);
        let repo = source.map_or(&self.repo, |s| &s.image_repo);
        let db = &self.store().db;
        let tag = buildgrid_core::app::branch_tag(branch).unwrap();
        db.move_branch_tag(repo, &tag, branch, built.id, &built.digest)
            .unwrap();
        let image_ref = format!("{repo}:{}", built.commit);
        db.finish_build(
            built.id,
            BuildState::Succeeded,
            None,
            Some((&image_ref, &built.digest)),
        )
        .unwrap();
        built
    }

    /// A build in flight: queued, claimed and its image stored under its commit tag.
    fn start_build(
        &mut self,
        source: Option<&Source>,
        branch: &str,
        base: &str,
        own: &str,
    ) -> Built {
        let commit = Digest::of(own.as_bytes()).hex()[..40].to_owned();
        let db = &self.store().db;
        let new = NewBuild {
            app_id: self.app.id,
            git_ref: branch.into(),
            commit_id: Some(commit.clone()),
            trigger: "test".into(),
            force: true,
        };
        let id = db
            .enqueue_source_build(&new, source.map(|s| s.id))
            .unwrap()
            .id();
        assert_eq!(db.claim_next_build().unwrap().unwrap().id, id);
        let path = self.archive(&[base, own]);
        let repo = source.map_or(&self.repo, |s| &s.image_repo);
        let report =
            buildgrid_store::ingest::import_archive(self.store(), &path, repo, &tag_name(&commit))
                .unwrap();
        Built {
            id,
            commit,
            digest: report.digest,
        }
    }

    fn import(&mut self, tag: &str, base: &str, own: &str) -> Digest {
        let path = self.archive(&[base, own]);
        let store = self.store();
        buildgrid_store::ingest::import_archive(store, &path, &self.repo, &tag_name(tag))
            .unwrap()
            .digest
    }

    /// A deploy of build `id` to the service `web` that succeeded.
    fn deploy(&self, id: i64, digest: &Digest) {
        let db = &self.store().db;
        let deploy = db
            .start_deploy(
                self.app.id,
                id,
                "test",
                &buildgrid_store::Lease::this_process(),
            )
            .unwrap();
        db.record_deploy_images(&[DeployImage {
            deploy_id: deploy.id,
            service: "web".into(),
            build_id: id,
            image_ref: format!("{}@{digest}", self.repo),
            digest: digest.to_string(),
        }])
        .unwrap();
        db.finish_deploy(deploy.id, "succeeded", None).unwrap();
    }

    fn retain(&self, keep_last: u32, keep_deployed: u32) {
        self.store()
            .db
            .set_retention_rule(
                "acme/shop",
                RetentionRule {
                    keep_last: Some(keep_last),
                    keep_days: None,
                    keep_deployed: Some(keep_deployed),
                    drop_deleted_after: None,
                },
            )
            .unwrap();
    }

    fn drop_deleted_after(&self, days: u32) {
        self.store()
            .db
            .set_retention_rule(
                "acme/shop",
                RetentionRule {
                    drop_deleted_after: Some(days),
                    ..RetentionRule::default()
                },
            )
            .unwrap();
    }

    /// Records that a push deleted `branch` of the app's repository `days_ago` days ago.
    fn delete_branch(&self, branch: &str, days_ago: i64) {
        let at = buildgrid_store::now() - days_ago * 86_400;
        let db = &self.store().db;
        assert!(
            db.branch_deleted(self.app.id, None, branch, at, None)
                .unwrap()
        );
    }

    fn tagged(&self, tag: &str) -> Option<Digest> {
        self.store()
            .db
            .manifest_by_tag(&self.repo, &tag_name(tag))
            .unwrap()
            .map(|row| row.digest)
    }

    fn gc(&self) -> buildgrid_store::gc::Collection {
        self.store().gc(GcOptions::default()).unwrap()
    }
}

/// The manifest `digest` of `repo` pulls whole: its row, and every blob it needs (config,
/// layers, index children) served for the repository, on disk, hashing to its digest.
fn pullable(store: &Store, repo: &RepoName, digest: &Digest) -> Result<(), String> {
    store
        .db
        .manifest_by_digest(repo, digest)
        .unwrap()
        .ok_or_else(|| format!("manifest {repo}@{digest} is not stored"))?;
    let bytes = store.blobs.read(digest).map_err(|e| e.to_string())?;
    if Digest::of(&bytes) != *digest {
        return Err(format!("manifest {digest} is damaged"));
    }
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    for child in document["manifests"].as_array().into_iter().flatten() {
        pullable(
            store,
            repo,
            &Digest::parse(child["digest"].as_str().unwrap()).unwrap(),
        )?;
    }
    for blob in blobs_of(&document) {
        store
            .db
            .repo_blob(repo, &blob)
            .unwrap()
            .ok_or_else(|| format!("{repo} does not serve {blob} of {digest}"))?;
        let bytes = store.blobs.read(&blob).map_err(|e| e.to_string())?;
        if Digest::of(&bytes) != blob {
            return Err(format!("blob {blob} is damaged"));
        }
    }
    Ok(())
}

/// The config and layer digests an image manifest names.
fn blobs_of(document: &Value) -> Vec<Digest> {
    let config = document.get("config").into_iter();
    let layers = document["layers"].as_array().into_iter().flatten();
    config
        .chain(layers)
        .map(|d| Digest::parse(d["digest"].as_str().unwrap()).unwrap())
        .collect()
}

#[track_caller]
fn check_fsck(store: &Store, pending_allowed: bool) {
    let report = store.fsck().unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    if !pending_allowed {
        assert_eq!(report.pending_collection, 0);
    }
}

fn blob_files(store: &Store) -> usize {
    walk(&store.root().join("blobs"))
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() { walk(&path) } else { 1 }
        })
        .sum()
}

#[test]
fn keeps_the_last_builds_of_each_branch_their_shared_layers_and_imports() {
    let mut w = World::new();
    w.retain(2, 3);
    let main: Vec<Built> = (0..3)
        .map(|i| w.build("main", "base", &format!("m{i}")))
        .collect();
    let feature: Vec<Built> = (0..3)
        .map(|i| w.build("feature/x", "base", &format!("f{i}")))
        .collect();
    let fix = w.build("fix", "base", "x0");
    let release = w.import("release", "base", "r0");
    let before = blob_files(w.store());

    let collection = w.gc();

    let gone = [&main[0], &feature[0]];
    let expected: Vec<String> = {
        let mut tags: Vec<String> = gone
            .iter()
            .map(|b| format!("{}:{}", w.repo, b.commit))
            .collect();
        tags.sort();
        tags
    };
    assert_eq!(collection.tags, expected);
    assert_eq!(collection.builds, vec![main[0].id, feature[0].id]);
    // Each collected image had its manifest, config and own layer; the base layer stays.
    assert_eq!(collection.blobs, 6);
    assert_eq!(blob_files(w.store()), before - 6);
    for built in gone {
        assert_eq!(w.tagged(&built.commit), None);
        assert!(w.store().db.image_removed(built.id).unwrap());
    }
    for built in [&main[1], &main[2], &feature[1], &feature[2], &fix] {
        assert_eq!(w.tagged(&built.commit), Some(built.digest.clone()));
        assert!(!w.store().db.image_removed(built.id).unwrap());
        pullable(w.store(), &w.repo, &built.digest).unwrap();
    }
    assert_eq!(w.tagged("main"), Some(main[2].digest.clone()));
    assert_eq!(w.tagged("feature-x"), Some(feature[2].digest.clone()));
    assert_eq!(w.tagged("release"), Some(release.clone()));
    pullable(w.store(), &w.repo, &release).unwrap();
    check_fsck(w.store(), false);
    let usage = &collection.usage;
    assert!(
        usage
            .iter()
            .any(|u| u.name == "acme/shop" && u.reclaimable > 0)
    );
    assert!(usage.iter().any(|u| u.name == "acme"));

    // A second run has nothing left to do.
    let again = w.gc();
    assert!(again.tags.is_empty() && again.manifests.is_empty() && again.blobs == 0);
}

#[test]
fn pulls_under_way_during_a_collection_finish_or_find_their_image_gone() {
    let mut w = World::new();
    w.retain(1, 0);
    let old = w.build("main", "base", "m0");
    let kept = w.build("feature", "base", "f0");
    let pull_old = start_pull(w.store(), &w.repo, 0, &old.digest).expect("stored");
    let pull_kept = start_pull(w.store(), &w.repo, 1, &kept.digest).expect("stored");
    w.build("main", "base", "m1");

    let collection = w.gc();

    assert_eq!(collection.builds, vec![old.id]);
    // The collected image's manifest is gone with its own blobs; the shared base layer stays.
    assert!(
        w.store()
            .db
            .manifest_by_digest(&w.repo, &old.digest)
            .unwrap()
            .is_none()
    );
    let missing = pull_old
        .blobs
        .iter()
        .filter(|b| w.store().blobs.read(b).is_err())
        .count();
    assert_eq!(missing, 2, "the collected image's config and own layer");
    continue_pull(w.store(), &w.repo, &pull_old).unwrap();
    // The kept image's pull reads every blob whole.
    assert!(
        pull_kept
            .blobs
            .iter()
            .all(|b| w.store().blobs.read(b).is_ok())
    );
    continue_pull(w.store(), &w.repo, &pull_kept).unwrap();
    check_fsck(w.store(), false);
}

#[test]
fn pinned_running_and_rollback_images_stay() {
    let mut w = World::new();
    let builds: Vec<Built> = (0..5)
        .map(|i| w.build("main", "base", &format!("b{i}")))
        .collect();
    let pin = w
        .store()
        .db
        .pin_image(&w.repo, &tag_name(&builds[0].commit))
        .unwrap()
        .unwrap();
    assert_eq!(pin.digest, builds[0].digest);
    w.deploy(builds[1].id, &builds[1].digest);
    w.deploy(builds[2].id, &builds[2].digest);
    w.retain(1, 1);

    let collection = w.gc();
    assert_eq!(collection.builds, vec![builds[3].id]);
    // b0 pinned, b1 the rollback target, b2 running, b4 the newest of main.
    for i in [0, 1, 2, 4] {
        pullable(w.store(), &w.repo, &builds[i].digest).unwrap();
        assert_eq!(w.tagged(&builds[i].commit), Some(builds[i].digest.clone()));
    }
    assert_eq!(w.tagged(&builds[3].commit), None);

    // No rollback targets: b1 goes; unpinned: b0 goes; what runs never does.
    w.retain(0, 0);
    assert!(
        w.store()
            .db
            .unpin_image(&w.repo, &tag_name(&builds[0].commit))
            .unwrap()
    );
    let collection = w.gc();
    assert_eq!(collection.builds, vec![builds[0].id, builds[1].id]);
    pullable(w.store(), &w.repo, &builds[2].digest).unwrap();
    // keep-last 0 still leaves the branch's tag, and so the build it names.
    pullable(w.store(), &w.repo, &builds[4].digest).unwrap();
    let gone = w.store().db.deployable_build(&w.app, builds[1].id);
    assert!(
        matches!(gone, Err(buildgrid_store::Undeployable::ImageGone { .. })),
        "{gone:?}"
    );
    check_fsck(w.store(), false);
}

#[test]
fn a_dry_run_lists_exactly_what_the_real_run_deletes() {
    let mut w = World::new();
    for i in 0..4 {
        w.build("main", "base", &format!("m{i}"));
        w.build("dev", &format!("base{i}"), &format!("d{i}"));
    }
    w.retain(1, 0);
    let files = blob_files(w.store());
    let dry = w
        .store()
        .gc(GcOptions {
            dry_run: true,
            stop: None,
        })
        .unwrap();
    assert_eq!(blob_files(w.store()), files, "a dry run deletes nothing");
    let real = w.gc();
    assert_eq!(dry, real);
    assert_eq!(blob_files(w.store()) as u64, files as u64 - real.blobs);
    assert!(real.blobs > 0);
    check_fsck(w.store(), false);
}

#[test]
fn a_collection_stopped_between_tombstones_and_files_resumes() {
    for stop in [
        StopPoint::AfterRows,
        StopPoint::AfterFiles(1),
        StopPoint::AfterFiles(3),
    ] {
        let mut w = World::new();
        let builds: Vec<Built> = (0..4)
            .map(|i| w.build("main", "base", &format!("m{i}")))
            .collect();
        w.retain(1, 0);
        w.store()
            .gc(GcOptions {
                dry_run: false,
                stop: Some(stop),
            })
            .unwrap();
        w.reopen();
        // Rows are gone, some files are left: pending, not problems; what stays pulls.
        let report = w.store().fsck().unwrap();
        assert!(
            report.problems.is_empty(),
            "{stop:?}: {:#?}",
            report.problems
        );
        assert!(report.pending_collection > 0, "{stop:?}");
        pullable(w.store(), &w.repo, &builds[3].digest).unwrap();
        // A build that stores a collected layer again before the collection finishes keeps it.
        let again = w.build("other", "base", "m0");
        assert!(w.store().finish_pending_collection().unwrap() > 0);
        pullable(w.store(), &w.repo, &again.digest).unwrap();
        pullable(w.store(), &w.repo, &builds[3].digest).unwrap();
        check_fsck(w.store(), false);
    }
}

#[test]
fn collection_waits_for_an_ingest_in_flight() {
    let w = World::new();
    let lock = w.store().ingest_lock().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            w.gc();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
        drop(lock);
    });
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    Build {
        branch: usize,
        base: usize,
    },
    Import {
        tag: usize,
        base: usize,
    },
    Deploy {
        pick: usize,
    },
    Pin {
        pick: usize,
    },
    Unpin,
    Retain {
        keep_last: u32,
        keep_deployed: u32,
    },
    /// A push deletes the branch (retention drops it at once: `drop_deleted_after` 0).
    DeleteBranch {
        branch: usize,
    },
    /// A push brings the branch back.
    PushBranch {
        branch: usize,
    },
    Gc {
        stop: Option<StopPoint>,
    },
    /// A client reads a build's manifest (or gets a clean "not found"), and goes on later.
    PullStart {
        pick: usize,
    },
    /// The oldest started pull reads its blobs.
    PullContinue,
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..3usize).prop_map(|(branch, base)| Step::Build { branch, base }),
        1 => (0..2usize, 0..3usize).prop_map(|(tag, base)| Step::Import { tag, base }),
        2 => any::<usize>().prop_map(|pick| Step::Deploy { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Pin { pick }),
        1 => Just(Step::Unpin),
        1 => (1..4u32, 0..3u32).prop_map(|(keep_last, keep_deployed)| Step::Retain {
            keep_last,
            keep_deployed
        }),
        1 => (0..3usize).prop_map(|branch| Step::DeleteBranch { branch }),
        1 => (0..3usize).prop_map(|branch| Step::PushBranch { branch }),
        3 => prop_oneof![
            Just(None),
            Just(Some(StopPoint::AfterRows)),
            (0..4usize).prop_map(|n| Some(StopPoint::AfterFiles(n))),
        ]
        .prop_map(|stop| Step::Gc { stop }),
        2 => any::<usize>().prop_map(|pick| Step::PullStart { pick }),
        2 => Just(Step::PullContinue),
        1 => Just(Step::Crash),
    ]
}

/// A pull that read its manifest and has its blobs still to read.
struct Pull {
    build: usize,
    manifest: Digest,
    blobs: Vec<Digest>,
}

/// Starts a pull of `digest`: `None` when the manifest is cleanly gone.
fn start_pull(store: &Store, repo: &RepoName, build: usize, digest: &Digest) -> Option<Pull> {
    store.db.manifest_by_digest(repo, digest).unwrap()?;
    let bytes = store.blobs.read(digest).expect("a stored manifest's bytes");
    assert_eq!(Digest::of(&bytes), *digest, "manifest {digest} is damaged");
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    Some(Pull {
        build,
        manifest: digest.clone(),
        blobs: blobs_of(&document),
    })
}

/// Goes on with a pull: every blob reads whole, or (only for an image collected since the pull
/// began) a blob is cleanly missing and so is the manifest: never a damaged blob, and never a
/// manifest still served whose blobs are gone.
fn continue_pull(store: &Store, repo: &RepoName, pull: &Pull) -> Result<(), String> {
    let mut missing = Vec::new();
    for blob in &pull.blobs {
        let served = store.db.repo_blob(repo, blob).unwrap().is_some();
        match store.blobs.read(blob) {
            Ok(bytes) if Digest::of(&bytes) == *blob => {}
            Ok(_) => return Err(format!("blob {blob} is damaged")),
            Err(_) if !served => missing.push(blob.clone()),
            Err(e) => return Err(format!("{repo} serves {blob} but its bytes are gone: {e}")),
        }
    }
    if !missing.is_empty()
        && store
            .db
            .manifest_by_digest(repo, &pull.manifest)
            .unwrap()
            .is_some()
    {
        return Err(format!(
            "manifest {} is still served but its blobs {missing:?} are gone",
            pull.manifest
        ));
    }
    Ok(())
}

/// What the model knows: every build and import, deploys and pins, and the rule.
#[derive(Default)]
struct Model {
    /// (branch, build) in build order.
    builds: Vec<(usize, Built)>,
    imports: BTreeMap<String, Digest>,
    deployed: Vec<usize>,
    pin: Option<usize>,
    keep_last: u32,
    keep_deployed: u32,
    /// Builds whose images a collection removed: gone for good, whatever the rules say later.
    collected: std::collections::BTreeSet<usize>,
    /// Branches deleted upstream: no rule keeps their builds, nor their tag.
    deleted: std::collections::BTreeSet<usize>,
    /// Branches whose tag a collection removed (while deleted), until a build moves it again.
    untagged: std::collections::BTreeSet<usize>,
}

impl Model {
    /// Builds whose images must pull: the newest `keep_last` of each branch not deleted (at
    /// least the newest, which its branch tag names), the one deployed last and the
    /// `keep_deployed` deployed before it, the pinned one.
    fn kept(&self) -> Vec<usize> {
        let mut kept = Vec::new();
        for branch in (0..3).filter(|b| !self.deleted.contains(b)) {
            let of_branch: Vec<usize> = (0..self.builds.len())
                .filter(|&i| self.builds[i].0 == branch)
                .collect();
            let keep = (self.keep_last as usize).max(1);
            kept.extend(of_branch.iter().rev().take(keep));
        }
        if let Some(&current) = self.deployed.last() {
            kept.push(current);
            let mut before = Vec::new();
            for &i in self.deployed.iter().rev().skip(1) {
                if before.len() == self.keep_deployed as usize {
                    break;
                }
                let same = self.builds[i].1.digest == self.builds[current].1.digest;
                if !same && !before.contains(&i) {
                    before.push(i);
                }
            }
            kept.extend(before);
        }
        kept.extend(self.pin);
        kept.sort();
        kept.dedup();
        kept.retain(|i| !self.collected.contains(i));
        kept
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut w = World::new();
    // Tight rules from the start, so that collections have something to decide.
    w.retain(1, 1);
    w.drop_deleted_after(0);
    let mut model = Model {
        keep_last: 1,
        keep_deployed: 1,
        ..Model::default()
    };
    let mut pending_allowed = false;
    let mut pulls: std::collections::VecDeque<Pull> = Default::default();
    for (n, step) in steps.into_iter().enumerate() {
        match &step {
            Step::Build { branch, base } => {
                let built = w.build(
                    &format!("b{branch}"),
                    &format!("base{base}"),
                    &format!("own{n}"),
                );
                model.builds.push((*branch, built));
                model.untagged.remove(branch);
            }
            Step::Import { tag, base } => {
                let digest = w.import(
                    &format!("v{tag}"),
                    &format!("base{base}"),
                    &format!("imp{n}"),
                );
                model.imports.insert(format!("v{tag}"), digest);
            }
            Step::Deploy { pick } => {
                // Only an image still stored can be deployed.
                let stored: Vec<usize> = (0..model.builds.len())
                    .filter(|&i| w.tagged(&model.builds[i].1.commit).is_some())
                    .collect();
                if let Some(&i) = stored.get(pick % stored.len().max(1)) {
                    let built = &model.builds[i].1;
                    w.deploy(built.id, &built.digest);
                    model.deployed.push(i);
                }
            }
            Step::Pin { pick } => {
                let stored: Vec<usize> = (0..model.builds.len())
                    .filter(|&i| w.tagged(&model.builds[i].1.commit).is_some())
                    .collect();
                if let Some(&i) = stored.get(pick % stored.len().max(1)) {
                    if let Some(old) = model.pin.take() {
                        w.store()
                            .db
                            .unpin_image(&w.repo, &tag_name(&model.builds[old].1.commit))
                            .unwrap();
                    }
                    w.store()
                        .db
                        .pin_image(&w.repo, &tag_name(&model.builds[i].1.commit))
                        .unwrap()
                        .unwrap();
                    model.pin = Some(i);
                }
            }
            Step::Unpin => {
                if let Some(old) = model.pin.take() {
                    let commit = &model.builds[old].1.commit;
                    prop_assert!(
                        w.store()
                            .db
                            .unpin_image(&w.repo, &tag_name(commit))
                            .unwrap()
                    );
                }
            }
            Step::Retain {
                keep_last,
                keep_deployed,
            } => {
                w.retain(*keep_last, *keep_deployed);
                model.keep_last = *keep_last;
                model.keep_deployed = *keep_deployed;
            }
            Step::DeleteBranch { branch } => {
                let at = buildgrid_store::now();
                let name = format!("b{branch}");
                w.store()
                    .db
                    .branch_deleted(w.app.id, None, &name, at, None)
                    .unwrap();
                model.deleted.insert(*branch);
            }
            Step::PushBranch { branch } => {
                let name = format!("b{branch}");
                let was = w.store().db.branch_pushed(w.app.id, None, &name).unwrap();
                prop_assert_eq!(was, model.deleted.remove(branch));
            }
            Step::Gc { stop } => {
                w.store()
                    .gc(GcOptions {
                        dry_run: false,
                        stop: *stop,
                    })
                    .unwrap();
                pending_allowed = stop.is_some();
                // Rows go in the first step: a stopped collection removed images too.
                let kept = model.kept();
                model
                    .collected
                    .extend((0..model.builds.len()).filter(|i| !kept.contains(i)));
                // A deleted branch's tag goes with its image, unless something else keeps that.
                for &branch in &model.deleted {
                    let newest = (0..model.builds.len()).rfind(|&i| model.builds[i].0 == branch);
                    if newest.is_some_and(|i| !kept.contains(&i)) {
                        model.untagged.insert(branch);
                    }
                }
                if stop.is_none() {
                    // Nothing unreachable outlives a whole collection.
                    let kept = model.kept();
                    for (i, (_, built)) in model.builds.iter().enumerate() {
                        let stored = w.tagged(&built.commit).is_some();
                        prop_assert_eq!(stored, kept.contains(&i), "build {} after {:?}", i, step);
                    }
                }
            }
            Step::PullStart { pick } => {
                if !model.builds.is_empty() {
                    let build = pick % model.builds.len();
                    let digest = model.builds[build].1.digest.clone();
                    match start_pull(w.store(), &w.repo, build, &digest) {
                        Some(pull) => pulls.push_back(pull),
                        None => prop_assert!(
                            !model.kept().contains(&build),
                            "build {} is kept but its manifest is gone",
                            build
                        ),
                    }
                }
            }
            Step::PullContinue => {
                if let Some(pull) = pulls.pop_front() {
                    let result = continue_pull(w.store(), &w.repo, &pull);
                    prop_assert!(result.is_ok(), "pull of build {}: {:?}", pull.build, result);
                }
            }
            Step::Crash => w.reopen(),
        }
        let store = w.store();
        let report = store.fsck().unwrap();
        prop_assert!(
            report.problems.is_empty(),
            "after {:?}: {:#?}",
            step,
            report.problems
        );
        if !pending_allowed {
            prop_assert_eq!(report.pending_collection, 0);
        }
        for i in model.kept() {
            let result = pullable(store, &w.repo, &model.builds[i].1.digest);
            prop_assert!(result.is_ok(), "build {} after {:?}: {:?}", i, step, result);
        }
        for (tag, digest) in &model.imports {
            prop_assert_eq!(w.tagged(tag), Some(digest.clone()));
            prop_assert!(pullable(store, &w.repo, digest).is_ok());
        }
        for branch in 0..3 {
            if let Some((_, newest)) = model.builds.iter().rev().find(|(b, _)| *b == branch) {
                let expected = match model.untagged.contains(&branch) {
                    true => None,
                    false => Some(newest.digest.clone()),
                };
                prop_assert_eq!(w.tagged(&format!("b{branch}")), expected);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random builds, imports, deploys, pins, rule changes, branches deleted and pushed again,
    /// collections stopped anywhere and crashes: after every step fsck is clean and every image
    /// a rule keeps pulls whole; after every whole collection exactly those remain.
    #[test]
    fn collection_never_loses_what_a_rule_keeps(steps in prop::collection::vec(step(), 1..24)) {
        run(steps)?;
    }
}

#[test]
fn pins_name_a_stored_tag() {
    let w = World::new();
    assert_eq!(
        w.store()
            .db
            .pin_image(&repo_name("acme/shop.x"), &tag_name("nothing"))
            .unwrap(),
        None
    );
}

#[test]
fn builds_younger_than_keep_days_stay() {
    let mut w = World::new();
    let builds: Vec<Built> = (0..3)
        .map(|i| w.build("main", "base", &format!("m{i}")))
        .collect();
    w.store()
        .db
        .set_retention_rule(
            "acme",
            RetentionRule {
                keep_last: Some(1),
                keep_days: Some(1),
                keep_deployed: None,
                drop_deleted_after: None,
            },
        )
        .unwrap();
    assert_eq!(
        w.store()
            .db
            .effective_retention("acme", Some("shop"))
            .unwrap(),
        buildgrid_store::Retention {
            keep_last: 1,
            keep_days: 1,
            keep_deployed: 3,
            drop_deleted_after: 7,
        }
    );
    assert!(w.gc().builds.is_empty(), "all finished less than a day ago");
    // The app's own value wins over its namespace's.
    w.store()
        .db
        .set_retention_rule(
            "acme/shop",
            RetentionRule {
                keep_days: Some(0),
                ..RetentionRule::default()
            },
        )
        .unwrap();
    assert_eq!(w.gc().builds, vec![builds[0].id, builds[1].id]);
    check_fsck(w.store(), false);
}

/// A branch deleted upstream keeps its builds for `drop_deleted_after` days (its tag and
/// keep-last alike), then loses them, except what is pinned, runs or is being built; the keep
/// reasons and the dry run say so before the collection does it.
#[test]
fn a_deleted_branch_loses_its_builds_after_drop_deleted_after_days() {
    let mut w = World::new();
    w.store()
        .db
        .add_service(w.app.id, "web", r#"{"servers": ["s1"]}"#)
        .unwrap();
    let main: Vec<Built> = (0..2)
        .map(|i| w.build("main", "base", &format!("m{i}")))
        .collect();
    let feature: Vec<Built> = (0..4)
        .map(|i| w.build("feature/x", "base", &format!("f{i}")))
        .collect();
    // f0 pinned, f1 runs on service web, f4 being built; f2 and f3 only retention keeps.
    w.store()
        .db
        .pin_image(&w.repo, &tag_name(&feature[0].commit))
        .unwrap()
        .unwrap();
    w.deploy(feature[1].id, &feature[1].digest);
    let in_flight = w.start_build(None, "feature/x", "base", "f4");
    w.delete_branch("feature/x", 2);
    w.drop_deleted_after(3);
    assert!(
        w.gc().builds.is_empty(),
        "deleted 2 days ago, dropped after 3"
    );
    assert_eq!(
        reasons(&w, &feature[3].digest),
        [
            "the tag feature-x of branch feature/x names it",
            "the newest of the last 20 successful builds of branch feature/x",
        ]
    );

    w.drop_deleted_after(2);
    assert_eq!(reasons(&w, &feature[3].digest), Vec::<String>::new());
    assert_eq!(reasons(&w, &feature[2].digest), Vec::<String>::new());
    assert_eq!(reasons(&w, &feature[0].digest), ["pinned"]);
    assert_eq!(
        reasons(&w, &feature[1].digest),
        ["runs now on service web of server s1"]
    );
    assert_eq!(reasons(&w, &in_flight.digest), ["a build in progress"]);
    assert_eq!(
        reasons(&w, &main[0].digest),
        ["the 2nd newest of the last 20 successful builds of branch main"]
    );
    let dry = w
        .store()
        .gc(GcOptions {
            dry_run: true,
            stop: None,
        })
        .unwrap();
    let real = w.gc();
    assert_eq!(dry, real);
    assert_eq!(real.builds, vec![feature[2].id, feature[3].id]);
    let mut gone = vec![
        format!("{}:{}", w.repo, feature[2].commit),
        format!("{}:{}", w.repo, feature[3].commit),
        format!("{}:feature-x", w.repo),
    ];
    gone.sort();
    assert_eq!(real.tags, gone);
    for built in [&feature[0], &feature[1], &in_flight, &main[0], &main[1]] {
        assert_eq!(w.tagged(&built.commit), Some(built.digest.clone()));
        pullable(w.store(), &w.repo, &built.digest).unwrap();
    }
    assert_eq!(w.tagged("main"), Some(main[1].digest.clone()));
    check_fsck(w.store(), false);
}

/// A push of a deleted branch brings it back: retention keeps its builds again. A webhook
/// delivery of the deletion sent again after that deletes nothing.
#[test]
fn a_branch_pushed_again_is_kept_again() {
    let mut w = World::new();
    let feature: Vec<Built> = (0..2)
        .map(|i| w.build("feature", "base", &format!("f{i}")))
        .collect();
    let db = &w.store().db;
    let app = w.app.id;
    let ten_days_ago = buildgrid_store::now() - 10 * 86_400;
    assert!(
        db.branch_deleted(app, None, "feature", ten_days_ago, Some("d1"))
            .unwrap()
    );
    // Deleted again (another delivery): the first deletion's time stays.
    let now = buildgrid_store::now();
    assert!(
        db.branch_deleted(app, None, "refs/heads/feature", now, Some("d2"))
            .unwrap()
    );
    let deleted = buildgrid_store::DeletedBranch {
        source_id: None,
        branch: "feature".into(),
        deleted_at: ten_days_ago,
    };
    assert_eq!(db.deleted_branches(app).unwrap(), [deleted]);
    // Past the default of 7 days.
    assert_eq!(reasons(&w, &feature[1].digest), Vec::<String>::new());

    let db = &w.store().db;
    assert!(db.branch_pushed(app, None, "refs/heads/feature").unwrap());
    assert!(!db.branch_pushed(app, None, "feature").unwrap());
    assert_eq!(db.deleted_branches(app).unwrap(), []);
    assert!(
        !db.branch_deleted(app, None, "feature", ten_days_ago, Some("d1"))
            .unwrap(),
        "a delivery seen before"
    );
    assert_eq!(db.deleted_branches(app).unwrap(), []);
    assert!(w.gc().builds.is_empty());
    for built in &feature {
        pullable(w.store(), &w.repo, &built.digest).unwrap();
    }
    assert_eq!(w.tagged("feature"), Some(feature[1].digest.clone()));

    // Deleted, collected, pushed and built again: the new build is the branch's tag and kept.
    w.delete_branch("feature", 8);
    assert_eq!(w.gc().builds, vec![feature[0].id, feature[1].id]);
    assert_eq!(w.tagged("feature"), None);
    assert!(w.store().db.branch_pushed(app, None, "feature").unwrap());
    let again = w.build("feature", "base", "f2");
    assert!(w.gc().builds.is_empty());
    assert_eq!(w.tagged("feature"), Some(again.digest.clone()));
    pullable(w.store(), &w.repo, &again.digest).unwrap();
    check_fsck(w.store(), false);
}

/// A deleted branch is one repository's: the app's `main` going takes none of a source's `main`
/// builds, and the other way round.
#[test]
fn a_deleted_branch_is_of_one_repository_of_the_app() {
    const API_GIT: &str = "https://git.example.com/acme/api.git";
    let mut w = World::new();
    let api = w
        .store()
        .db
        .add_source(
            &w.app,
            &NewSource {
                image_repo: w.app.app.image_repo(API_GIT).unwrap(),
                git_url: API_GIT.into(),
                branch: "main".into(),
                dockerfile: "Dockerfile".into(),
                context: ".".into(),
            },
        )
        .unwrap()
        .unwrap();
    let own = w.build("main", "base", "own");
    let of_api = w.build_of(Some(&api), "main", "base", "api");
    w.drop_deleted_after(0);
    w.delete_branch("main", 0);
    assert_eq!(w.gc().builds, vec![own.id]);
    pullable(w.store(), &api.image_repo, &of_api.digest).unwrap();
    let at = buildgrid_store::now();
    let db = &w.store().db;
    assert!(
        db.branch_deleted(w.app.id, Some(api.id), "main", at, None)
            .unwrap()
    );
    assert_eq!(w.gc().builds, vec![of_api.id]);
    let tag = db.manifest_by_tag(&api.image_repo, &tag_name("main"));
    assert_eq!(tag.unwrap().map(|row| row.digest), None);
    check_fsck(w.store(), false);
}

/// Imports that reuse the layers of images going out of use, while collections run beside
/// them: each import pulls whole afterwards and fsck is clean. (Timing decides whether a
/// collection lands inside an ingest here; the next test stops one there on purpose.)
#[test]
fn imports_racing_collections_lose_nothing() {
    let mut w = World::new();
    let archives: Vec<PathBuf> = (0..12)
        .map(|i| w.archive(&[&format!("shared{}", i % 3), &format!("own{i}")]))
        .collect();
    let store = w.store();
    let repo = w.repo.clone();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let digests = std::thread::scope(|scope| {
        let collector = scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                store.gc(GcOptions::default()).unwrap();
            }
        });
        let mut digests = Vec::new();
        for (i, path) in archives.iter().enumerate() {
            // Every image replaces the one before under one tag, so each becomes garbage at
            // once, its shared layer reused by the next import.
            let report =
                buildgrid_store::ingest::import_archive(store, path, &repo, &tag_name("moving"))
                    .unwrap();
            let kept = format!("keep{i}");
            buildgrid_store::ingest::import_archive(store, path, &repo, &tag_name(&kept)).unwrap();
            digests.push(report.digest);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        collector.join().unwrap();
        digests
    });
    w.gc();
    for digest in &digests {
        pullable(w.store(), &w.repo, digest).unwrap();
    }
    check_fsck(w.store(), false);
}

/// An ingest stopped between publishing its blobs and committing their rows, reusing a layer
/// of an image that just became garbage: collection waits for it, and the new image pulls.
#[test]
fn an_ingest_between_publish_and_commit_holds_collection_off() {
    let mut w = World::new();
    let old = w.archive(&["shared", "old"]);
    let new = w.archive(&["shared", "new"]);
    let other = w.archive(&["other", "x"]);
    let store = w.store();
    let repo = w.repo.clone();
    buildgrid_store::ingest::import_archive(store, &old, &repo, &tag_name("v1")).unwrap();
    // v1 moves away: the old image, and its shared layer with it, are garbage now.
    buildgrid_store::ingest::import_archive(store, &other, &repo, &tag_name("v1")).unwrap();
    let (reached, paused) = std::sync::mpsc::channel::<()>();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    let resumed = std::sync::Mutex::new(resumed);
    *store.between_publish_and_commit.lock().unwrap() = Some(Box::new(move || {
        reached.send(()).unwrap();
        resumed.lock().unwrap().recv().unwrap();
    }));
    let collected = std::sync::atomic::AtomicBool::new(false);
    let digest = std::thread::scope(|scope| {
        let ingest = scope.spawn(|| {
            buildgrid_store::ingest::import_archive(store, &new, &repo, &tag_name("v2"))
                .unwrap()
                .digest
        });
        paused.recv().unwrap();
        let collector = scope.spawn(|| {
            store.gc(GcOptions::default()).unwrap();
            collected.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let ran_early = collected.load(std::sync::atomic::Ordering::SeqCst);
        resume.send(()).unwrap();
        let digest = ingest.join().unwrap();
        collector.join().unwrap();
        assert!(
            !ran_early,
            "collection ran while an ingest was between publish and commit"
        );
        digest
    });
    *store.between_publish_and_commit.lock().unwrap() = None;
    pullable(store, &repo, &digest).unwrap();
    check_fsck(store, false);
}

fn reasons(w: &World, digest: &Digest) -> Vec<String> {
    let reasons = w.store().keep_reasons(&w.repo, digest).unwrap();
    let reasons = reasons.expect("the manifest is stored");
    reasons.iter().map(ToString::to_string).collect()
}

#[test]
fn keep_reasons_name_the_branch_rule_and_the_images_it_lets_go() {
    let mut w = World::new();
    w.retain(2, 3);
    let main: Vec<Built> = (0..3)
        .map(|i| w.build("main", "base", &format!("m{i}")))
        .collect();
    let release = w.import("release", "base", "r0");

    assert_eq!(
        reasons(&w, &main[2].digest),
        [
            "the tag main of branch main names it",
            "the newest of the last 2 successful builds of branch main",
        ]
    );
    assert_eq!(
        reasons(&w, &main[1].digest),
        ["the 2nd newest of the last 2 successful builds of branch main"]
    );
    assert_eq!(reasons(&w, &main[0].digest), Vec::<String>::new());
    assert_eq!(
        reasons(&w, &release),
        ["a tag buildgrid import made (release)"]
    );
    let unknown = Digest::of(b"no such manifest");
    assert_eq!(w.store().keep_reasons(&w.repo, &unknown).unwrap(), None);

    // What the reasons say is what collection does.
    assert_eq!(w.gc().builds, vec![main[0].id]);
    assert_eq!(
        w.store().keep_reasons(&w.repo, &main[0].digest).unwrap(),
        None
    );
}

#[test]
fn keep_reasons_name_pins_deploys_and_rollback_targets() {
    let mut w = World::new();
    let builds: Vec<Built> = (0..5)
        .map(|i| w.build("main", "base", &format!("b{i}")))
        .collect();
    w.store()
        .db
        .pin_image(&w.repo, &tag_name(&builds[0].commit))
        .unwrap()
        .unwrap();
    w.store()
        .db
        .add_service(w.app.id, "web", r#"{"servers": ["s1"]}"#)
        .unwrap();
    w.deploy(builds[1].id, &builds[1].digest);
    w.deploy(builds[2].id, &builds[2].digest);
    w.retain(1, 1);

    assert_eq!(reasons(&w, &builds[0].digest), ["pinned"]);
    assert_eq!(
        reasons(&w, &builds[1].digest),
        ["a rollback target of service web (1 kept)"]
    );
    assert_eq!(
        reasons(&w, &builds[2].digest),
        ["runs now on service web of server s1"]
    );
    assert_eq!(reasons(&w, &builds[3].digest), Vec::<String>::new());
    let kept = w.store().keep_reasons(&w.repo, &builds[2].digest).unwrap();
    assert_eq!(
        kept.unwrap(),
        [buildgrid_store::gc::KeepReason::Runs {
            build: builds[2].id,
            service: "web".into(),
            servers: vec!["s1".into()],
        }]
    );
    assert_eq!(w.gc().builds, vec![builds[3].id]);
}

/// How long pages wait for the next collection's outlook of a store with a few hundred builds
/// (printed; run with `--nocapture`).
#[test]
fn the_outlook_of_a_few_hundred_builds() {
    let mut w = World::new();
    for i in 0..300 {
        w.build(&format!("b{}", i % 10), "base", &format!("n{i}"));
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let outlook = w.store().collection_outlook().unwrap();
        let usage = outlook.usage();
        times.push(started.elapsed());
        assert!(usage.iter().any(|u| u.name == "acme/shop" && u.stored > 0));
    }
    times.sort();
    println!(
        "outlook of 300 builds: median {:?}, all {times:?}",
        times[2]
    );
}
