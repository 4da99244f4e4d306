//! Moving branch tags: a branch's tag follows its newest successful build, never moves back to
//! an older one, and never takes a tag it did not make (an import's, another branch's).

use buildgrid_core::Digest;
use buildgrid_store::TagMove;

use crate::support::{Image, TestStore, docker_save, layer, repo_name, tag_name, tar, test_store};

fn image(t: &TestStore, seed: &str, tag: &str) -> Digest {
    let archive = tar(&docker_save(&[(
        "x:y",
        &Image::new("amd64", &[layer(seed)]),
    )]));
    t.import(&format!("{seed}.tar"), &archive, "acme/app.repo", tag)
        .unwrap()
        .digest
}

fn tagged(t: &TestStore, tag: &str) -> Option<Digest> {
    t.store
        .db
        .manifest_by_tag(&repo_name("acme/app.repo"), &tag_name(tag))
        .unwrap()
        .map(|row| row.digest)
}

#[test]
fn a_branch_tag_follows_the_newest_build_and_leaves_other_tags_alone() {
    let t = test_store();
    let repo = repo_name("acme/app.repo");
    let commit1 = "1".repeat(40);
    let commit2 = "2".repeat(40);
    let first = image(&t, "first", &commit1);
    let second = image(&t, "second", &commit2);
    let main = tag_name("main");
    let db = &t.store.db;

    assert_eq!(
        db.move_branch_tag(&repo, &main, "main", 5, &first).unwrap(),
        TagMove::Moved
    );
    assert_eq!(tagged(&t, "main"), Some(first.clone()));
    // An older build that ends later does not take the tag back.
    assert_eq!(
        db.move_branch_tag(&repo, &main, "main", 4, &second)
            .unwrap(),
        TagMove::Newer(5)
    );
    assert_eq!(tagged(&t, "main"), Some(first.clone()));
    assert_eq!(
        db.move_branch_tag(&repo, &main, "main", 6, &second)
            .unwrap(),
        TagMove::Moved
    );
    assert_eq!(tagged(&t, "main"), Some(second.clone()));
    // Commit tags never move.
    assert_eq!(tagged(&t, &commit1), Some(first.clone()));
    assert_eq!(tagged(&t, &commit2), Some(second.clone()));

    // `feature/x` maps to the tag `feature-x`, which the branch `feature-x` holds.
    let feature = tag_name("feature-x");
    assert_eq!(
        db.move_branch_tag(&repo, &feature, "feature-x", 7, &first)
            .unwrap(),
        TagMove::Moved
    );
    assert_eq!(
        db.move_branch_tag(&repo, &feature, "feature/x", 8, &second)
            .unwrap(),
        TagMove::Taken {
            branch: Some("feature-x".to_owned())
        }
    );
    assert_eq!(tagged(&t, "feature-x"), Some(first.clone()));

    // A tag an import made is not a branch's.
    image(&t, "third", "release");
    let release = tagged(&t, "release");
    assert_eq!(
        db.move_branch_tag(&repo, &tag_name("release"), "release", 9, &first)
            .unwrap(),
        TagMove::Taken { branch: None }
    );
    assert_eq!(tagged(&t, "release"), release);

    let branches: Vec<(String, Option<String>, Option<i64>)> = db
        .branch_tags(&repo)
        .unwrap()
        .into_iter()
        .map(|tag| (tag.name, tag.branch, tag.build_id))
        .collect();
    assert_eq!(
        branches,
        [
            (
                "feature-x".to_owned(),
                Some("feature-x".to_owned()),
                Some(7)
            ),
            ("main".to_owned(), Some("main".to_owned()), Some(6)),
        ]
    );
    // An import over a branch tag makes it an import's tag: no branch moves it any more.
    image(&t, "fourth", "main");
    assert_eq!(db.branch_tags(&repo).unwrap().len(), 1);
    assert_eq!(
        db.move_branch_tag(&repo, &main, "main", 10, &first)
            .unwrap(),
        TagMove::Taken { branch: None }
    );
}

#[test]
fn tags_list_newest_first_in_pages() {
    let t = test_store();
    let repo = repo_name("acme/app.repo");
    let old = image(&t, "old", "v1");
    image(&t, "older-name", "a-second-tag");
    // Times are in seconds: the next tags are a second newer.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let commit = "0".repeat(40);
    let new = image(&t, "new", &commit);
    // Moved in the same second as the commit tag, as a build does: listed first.
    t.store
        .db
        .move_branch_tag(&repo, &tag_name("main"), "main", 1, &new)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.store
        .db
        .move_branch_tag(&repo, &tag_name("dev"), "dev", 2, &old)
        .unwrap();
    let page = |before: Option<&buildgrid_store::TagRow>, limit| {
        let before = before.map(|tag| (tag.updated_at, tag.branch.is_some(), tag.name.as_str()));
        t.store.db.tags_newest_first(&repo, before, limit).unwrap()
    };
    let names = |tags: &[buildgrid_store::TagRow]| -> Vec<String> {
        tags.iter().map(|tag| tag.name.clone()).collect()
    };
    let all = page(None, 10);
    assert_eq!(
        names(&all),
        ["dev", "main", commit.as_str(), "a-second-tag", "v1"]
    );
    // Every page starts right after the last tag of the one before.
    for size in 1..=4 {
        let mut seen = Vec::new();
        let mut last: Option<buildgrid_store::TagRow> = None;
        loop {
            let tags = page(last.as_ref(), size);
            if tags.is_empty() {
                break;
            }
            seen.extend(names(&tags));
            last = tags.last().cloned();
        }
        assert_eq!(seen, names(&all), "pages of {size}");
    }
}
