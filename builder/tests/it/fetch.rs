//! The app's bare repository: created on first use and updated from a `file://` upstream.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use buildgrid_builder::fetch::{FetchError, fetch, has_commit, open_or_init, resolve};
use git2::{Oid, Repository};

use crate::support::{Node, commit, file_url, isolate_git};

/// An upstream repository with branches `main` and `feature`, a lightweight tag `v1` and an
/// annotated tag `v2`.
struct Upstream {
    _dir: tempfile::TempDir,
    repo: Repository,
    first: Oid,
    second: Oid,
    feature: Oid,
}

fn upstream() -> Upstream {
    isolate_git();
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("upstream")).unwrap();
    let first = commit(
        &repo,
        Some("refs/heads/main"),
        "First commit\n\nWith a body.",
        &[Node::File("Dockerfile", b"FROM scratch\n")],
        &[],
    );
    let second = commit(
        &repo,
        Some("refs/heads/main"),
        "Second commit",
        &[
            Node::File("Dockerfile", b"FROM scratch\n"),
            Node::File("README.md", b"# two\n"),
        ],
        &[first],
    );
    let feature = commit(
        &repo,
        Some("refs/heads/feature"),
        "Feature work",
        &[Node::File("Dockerfile", b"FROM alpine\n")],
        &[first],
    );
    repo.tag_lightweight("v1", &repo.find_object(first, None).unwrap(), false)
        .unwrap();
    let tagger = git2::Signature::new(
        "Release Bot",
        "bot@example.com",
        &git2::Time::new(crate::support::COMMIT_TIME, 0),
    )
    .unwrap();
    repo.tag(
        "v2",
        &repo.find_object(second, None).unwrap(),
        &tagger,
        "release two",
        false,
    )
    .unwrap();
    Upstream {
        _dir: dir,
        repo,
        first,
        second,
        feature,
    }
}

impl Upstream {
    fn url(&self) -> String {
        file_url(self.repo.workdir().unwrap())
    }
}

fn references(repo: &Repository) -> BTreeSet<String> {
    repo.references()
        .unwrap()
        .map(|r| r.unwrap().name().unwrap().to_owned())
        .collect()
}

/// The distinct objects of the repository. (libgit2's `file://` transport sends an annotated
/// tag and all it points at again on each fetch, so packs hold duplicates.)
fn object_count(repo: &Repository) -> usize {
    let mut objects = BTreeSet::new();
    repo.odb()
        .unwrap()
        .foreach(|id| {
            objects.insert(*id);
            true
        })
        .unwrap();
    objects.len()
}

#[test]
fn open_or_init_creates_a_bare_repository_that_accepts_pushes() {
    isolate_git();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("git/acme/web.git");
    let repo = open_or_init(&path).unwrap();
    assert!(repo.is_bare());
    assert_eq!(repo.path(), path.join("").as_path());
    assert!(repo.config().unwrap().get_bool("http.receivepack").unwrap());
    drop(repo);
    // The second time it opens what is there.
    let object = {
        let repo = open_or_init(&path).unwrap();
        repo.blob(b"kept\n").unwrap()
    };
    let repo = open_or_init(&path).unwrap();
    assert!(repo.find_blob(object).is_ok());
    assert!(repo.config().unwrap().get_bool("http.receivepack").unwrap());
}

#[test]
fn open_or_init_reports_a_path_it_cannot_create() {
    isolate_git();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let path = file.join("web.git");
    let Err(error) = open_or_init(&path) else {
        panic!("a file is in the way of {}", path.display());
    };
    let FetchError::Open { path: reported, .. } = &error else {
        panic!("unexpected error: {error:?}");
    };
    assert_eq!(reported, &path.display().to_string());
}

#[test]
fn fetch_mirrors_branches_and_tags_then_only_what_is_new() {
    let upstream = upstream();
    let dir = tempfile::tempdir().unwrap();
    let repo = open_or_init(&dir.path().join("mirror.git")).unwrap();
    fetch(&repo, &upstream.url()).unwrap();
    assert_eq!(
        references(&repo),
        BTreeSet::from(
            [
                "refs/remotes/origin/feature",
                "refs/remotes/origin/main",
                "refs/tags/v1",
                "refs/tags/v2",
            ]
            .map(String::from)
        )
    );
    let target = |name: &str| repo.refname_to_id(name).unwrap();
    assert_eq!(target("refs/remotes/origin/main"), upstream.second);
    assert_eq!(target("refs/remotes/origin/feature"), upstream.feature);
    assert_eq!(target("refs/tags/v1"), upstream.first);
    // The annotated tag arrives as a tag object.
    let v2 = repo.find_tag(target("refs/tags/v2")).unwrap();
    assert_eq!(v2.target_id(), upstream.second);
    assert_eq!(v2.message().unwrap(), Some("release two"));
    // Commits: 3; trees: 3 (the two main trees and feature's); blobs: 3; the tag object: 1.
    assert_eq!(object_count(&repo), 10);

    // A new upstream commit on main: the second fetch brings it and nothing else.
    let third = commit(
        &upstream.repo,
        Some("refs/heads/main"),
        "Third commit",
        &[
            Node::File("Dockerfile", b"FROM scratch\n"),
            Node::File("README.md", b"# three\n"),
        ],
        &[upstream.second],
    );
    assert!(!has_commit(&repo, &third.to_string()));
    fetch(&repo, &upstream.url()).unwrap();
    assert!(has_commit(&repo, &third.to_string()));
    assert_eq!(target("refs/remotes/origin/main"), third);
    assert_eq!(resolve(&repo, "main").unwrap().id, third);
    // The commit, its tree and the one changed blob.
    assert_eq!(object_count(&repo), 13);

    // A rewritten branch is followed too (force-pushed upstream).
    let rewritten = commit(
        &upstream.repo,
        None,
        "Feature, rewritten",
        &[Node::File("Dockerfile", b"FROM alpine:3.20\n")],
        &[upstream.first],
    );
    upstream
        .repo
        .reference("refs/heads/feature", rewritten, true, "rewrite")
        .unwrap();
    fetch(&repo, &upstream.url()).unwrap();
    assert_eq!(target("refs/remotes/origin/feature"), rewritten);
}

#[track_caller]
fn check_resolve(repo: &Repository, git_ref: &str, expected: Result<(Oid, &str, &str), &str>) {
    let actual = resolve(repo, git_ref)
        .map(|info| (info.id, info.message, info.author))
        .map_err(|error| match error {
            FetchError::UnknownRef(name) => {
                assert_eq!(name, git_ref);
                format!("unknown {name}")
            }
            other => panic!("unexpected error: {other:?}"),
        });
    let expected = expected
        .map(|(id, message, author)| (id, message.to_owned(), author.to_owned()))
        .map_err(str::to_owned);
    assert_eq!(actual, expected, "resolving {git_ref:?}");
}

#[test]
fn resolve_branches_tags_and_commit_ids() {
    let upstream = upstream();
    let dir = tempfile::tempdir().unwrap();
    let repo = open_or_init(&dir.path().join("mirror.git")).unwrap();
    fetch(&repo, &upstream.url()).unwrap();
    let first = upstream.first.to_string();
    let blob = repo
        .find_commit(upstream.first)
        .unwrap()
        .tree()
        .unwrap()
        .get_name("Dockerfile")
        .unwrap()
        .id()
        .to_string();
    let ada = "Ada Lovelace";
    check_resolve(&repo, "main", Ok((upstream.second, "Second commit", ada)));
    check_resolve(
        &repo,
        "refs/heads/main",
        Ok((upstream.second, "Second commit", ada)),
    );
    check_resolve(
        &repo,
        "feature",
        Ok((upstream.feature, "Feature work", ada)),
    );
    // The summary is the first line of the message.
    check_resolve(&repo, "v1", Ok((upstream.first, "First commit", ada)));
    check_resolve(
        &repo,
        "refs/tags/v1",
        Ok((upstream.first, "First commit", ada)),
    );
    // An annotated tag is peeled to its commit.
    check_resolve(&repo, "v2", Ok((upstream.second, "Second commit", ada)));
    check_resolve(&repo, &first, Ok((upstream.first, "First commit", ada)));
    check_resolve(
        &repo,
        &first.to_uppercase(),
        Ok((upstream.first, "First commit", ada)),
    );
    check_resolve(
        &repo,
        &first[..10],
        Ok((upstream.first, "First commit", ada)),
    );
    check_resolve(&repo, "nope", Err("unknown nope"));
    check_resolve(&repo, "refs/heads/nope", Err("unknown refs/heads/nope"));
    // Well-formed ids of commits the repository lacks, or of objects that are no commits.
    check_resolve(
        &repo,
        "0123456789abcdef0123456789abcdef01234567",
        Err("unknown 0123456789abcdef0123456789abcdef01234567"),
    );
    check_resolve(&repo, &blob, Err(&format!("unknown {blob}")));

    // A branch pushed to buildgrid (refs/heads/*) resolves when nothing was fetched for it.
    let pushed = commit(
        &repo,
        Some("refs/heads/pushed"),
        "Pushed to buildgrid",
        &[Node::File("Dockerfile", b"FROM busybox\n")],
        &[],
    );
    check_resolve(&repo, "pushed", Ok((pushed, "Pushed to buildgrid", ada)));
}

#[track_caller]
fn check_fetch_error(url: &str, expected_url: &str, secret: &str) {
    isolate_git();
    let dir = tempfile::tempdir().unwrap();
    let repo = open_or_init(&dir.path().join("mirror.git")).unwrap();
    let started = Instant::now();
    let error = fetch(&repo, url).expect_err("there is nothing to fetch from");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fetching {url} took {:?}",
        started.elapsed()
    );
    let FetchError::Fetch {
        url: reported,
        message,
    } = &error
    else {
        panic!("unexpected error: {error:?}");
    };
    assert_eq!(reported, expected_url);
    assert!(!message.is_empty());
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("cannot fetch {expected_url}: ")),
        "{shown}"
    );
    if !secret.is_empty() {
        assert!(!shown.contains(secret), "the password leaks: {shown}");
        assert!(
            !format!("{error:?}").contains(secret),
            "the password leaks: {error:?}"
        );
    }
}

#[test]
fn fetch_failures_name_the_url_without_its_password() {
    // Nothing listens on port 1: connections are refused at once.
    check_fetch_error(
        "https://user:secret@127.0.0.1:1/x.git",
        "https://***@127.0.0.1:1/x.git",
        "secret",
    );
    check_fetch_error(
        "http://user:hunter2@127.0.0.1:1/x.git",
        "http://***@127.0.0.1:1/x.git",
        "hunter2",
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = file_url(&dir.path().join("missing.git"));
    check_fetch_error(&missing, &missing, "");
}

// https:// URLs get as far as the connection: libgit2 is built with TLS.
#[test]
fn https_urls_are_fetched_over_tls() {
    isolate_git();
    let dir = tempfile::tempdir().unwrap();
    let repo = open_or_init(&dir.path().join("mirror.git")).unwrap();
    let error = fetch(&repo, "https://127.0.0.1:1/x.git").expect_err("nothing listens on port 1");
    let shown = error.to_string();
    assert!(
        !shown.contains("no TLS stream"),
        "libgit2 cannot speak https: {shown}"
    );
}
