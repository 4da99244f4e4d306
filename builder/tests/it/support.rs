//! Git fixtures without network (after cargo's `cargo-test-support/src/git.rs`) and a store in
//! a temporary directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use buildgrid_core::{AppRef, RepoName};
use buildgrid_store::{App, NewApp, Store};
use git2::{Oid, Repository, Signature, Time};

/// Points libgit2's global, XDG and system configuration at an empty directory, so that no
/// `url.*.insteadOf`, `init.defaultBranch` or identity of the machine running the tests leaks
/// into them. Every test that touches git calls this first.
pub fn isolate_git() {
    static EMPTY_CONFIG: OnceLock<tempfile::TempDir> = OnceLock::new();
    EMPTY_CONFIG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
        ] {
            // SAFETY: libgit2's search path is global state that must not change while another
            // thread uses libgit2. Every test reaches libgit2 only after this call, and
            // `OnceLock` makes the other threads wait until it has returned.
            #[allow(unsafe_code)]
            unsafe {
                git2::opts::set_search_path(level, dir.path()).unwrap();
            }
        }
        dir
    });
}

/// One entry of a commit's tree, by its full path.
pub enum Node<'a> {
    File(&'a str, &'a [u8]),
    Executable(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    /// A gitlink: a submodule at this commit.
    Submodule(&'a str, Oid),
}

pub const FILE: i32 = 0o100644;
pub const EXECUTABLE: i32 = 0o100755;
pub const SYMLINK: i32 = 0o120000;
pub const SUBMODULE: i32 = 0o160000;
const TREE: i32 = 0o040000;

/// Writes the tree of `nodes`, nested directories included, straight into the object database.
pub fn write_tree(repo: &Repository, nodes: &[Node<'_>]) -> Oid {
    let entries: Vec<(String, i32, Oid)> = nodes
        .iter()
        .map(|node| match *node {
            Node::File(path, bytes) => (path.to_owned(), FILE, repo.blob(bytes).unwrap()),
            Node::Executable(path, bytes) => {
                (path.to_owned(), EXECUTABLE, repo.blob(bytes).unwrap())
            }
            Node::Symlink(path, target) => (
                path.to_owned(),
                SYMLINK,
                repo.blob(target.as_bytes()).unwrap(),
            ),
            Node::Submodule(path, commit) => (path.to_owned(), SUBMODULE, commit),
        })
        .collect();
    nested_tree(repo, &entries)
}

fn nested_tree(repo: &Repository, entries: &[(String, i32, Oid)]) -> Oid {
    let mut builder = repo.treebuilder(None).unwrap();
    let mut directories: BTreeMap<&str, Vec<(String, i32, Oid)>> = BTreeMap::new();
    for (path, mode, oid) in entries {
        match path.split_once('/') {
            Some((directory, rest)) => {
                directories
                    .entry(directory)
                    .or_default()
                    .push((rest.to_owned(), *mode, *oid))
            }
            None => {
                builder.insert(path, *oid, *mode).unwrap();
            }
        }
    }
    for (directory, children) in directories {
        let tree = nested_tree(repo, &children);
        builder.insert(directory, tree, TREE).unwrap();
    }
    builder.write().unwrap()
}

/// A commit at a fixed time by a fixed author, so that ids do not depend on the clock or on
/// the machine's git identity.
pub fn commit(
    repo: &Repository,
    update_ref: Option<&str>,
    message: &str,
    nodes: &[Node<'_>],
    parents: &[Oid],
) -> Oid {
    let tree = repo.find_tree(write_tree(repo, nodes)).unwrap();
    let parents: Vec<_> = parents
        .iter()
        .map(|id| repo.find_commit(*id).unwrap())
        .collect();
    let parents: Vec<_> = parents.iter().collect();
    let time = Time::new(COMMIT_TIME + parents.len() as i64, 0);
    let signature = Signature::new("Ada Lovelace", "ada@example.com", &time).unwrap();
    repo.commit(update_ref, &signature, &signature, message, &tree, &parents)
        .unwrap()
}

/// The time of the first commit of every fixture: 2023-11-14T22:13:20Z.
pub const COMMIT_TIME: i64 = 1_700_000_000;

/// A `file://` URL of a local repository: what an app's git URL is in these tests.
pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A store whose data directory is `<dir>/data`.
pub struct TestStore {
    _dir: tempfile::TempDir,
    pub store: Store,
}

pub fn test_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    TestStore { _dir: dir, store }
}

impl TestStore {
    /// Registers `app` (`namespace/name`) building `branch`.
    pub fn create_app(&self, app: &str, branch: &str) -> App {
        let app = AppRef::parse(app).unwrap();
        let image_repo = RepoName::parse(&format!("{app}.demo")).unwrap();
        self.store
            .db
            .create_app(&NewApp {
                app,
                git_url: "https://git.example.com/acme/demo.git".into(),
                branch: branch.into(),
                dockerfile: "Dockerfile".into(),
                context: String::new(),
                build_args: BTreeMap::new(),
                image_repo,
                webhook_secret: "it-webhook-s3cret".into(),
            })
            .unwrap()
    }
}
