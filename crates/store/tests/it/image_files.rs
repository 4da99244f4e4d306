//! The final file tree of an image (whiteouts, opaque directories, links), its summary, and
//! images whose files were not collected.

use buildgrid_core::Digest;
use buildgrid_store::Store;
use buildgrid_store::image::{
    FileEntry, FileKind, ImageDir, ImageFiles, OsRelease, image_details, image_dir, image_files,
};

use crate::support::{
    Image, LayerFormat, Member, TestStore, docker_save, file, layer, oci_image, oci_single,
    repo_name, tar, test_store,
};

fn dir(name: &str) -> Member {
    Member::Dir(name.to_owned())
}

fn symlink(name: &str, target: &str) -> Member {
    Member::Symlink(name.to_owned(), target.to_owned())
}

fn hardlink(name: &str, target: &str) -> Member {
    Member::Hardlink(name.to_owned(), target.to_owned())
}

/// The image in both layouts whose layers take different ingest paths: a legacy `docker save`
/// (plain tars, compressed by buildgrid) and an OCI layout with gzip layers (kept as they are).
fn layouts(image: &Image) -> [(&'static str, Vec<u8>); 2] {
    [
        ("docker save", tar(&docker_save(&[("app:v1", image)]))),
        (
            "oci gzip",
            tar(&oci_single(&oci_image(image, LayerFormat::Gzip))),
        ),
    ]
}

fn import(t: &TestStore, archive: &[u8], repo: &str) -> Digest {
    t.import("image.tar", archive, repo, "v1").unwrap().digest
}

/// `(name, kind, size)` of each entry of `path`, in order; `None` if it is not a directory.
fn listing(store: &Store, digest: &Digest, path: &str) -> Option<Vec<(String, FileKind, u64)>> {
    match image_dir(store, &repo_name("app"), digest, path).unwrap() {
        Some(ImageDir::Entries(entries)) => Some(
            entries
                .into_iter()
                .map(|e| (e.name, e.kind, e.size))
                .collect(),
        ),
        Some(ImageDir::NotADirectory) => None,
        other => panic!("{path}: {other:?}"),
    }
}

#[track_caller]
fn check_dir(store: &Store, digest: &Digest, path: &str, expected: &[(&str, FileKind, u64)]) {
    let expected: Vec<(String, FileKind, u64)> = expected
        .iter()
        .map(|(n, k, s)| ((*n).to_owned(), *k, *s))
        .collect();
    assert_eq!(listing(store, digest, path), Some(expected), "{path}");
}

fn entry(store: &Store, digest: &Digest, dir: &str, name: &str) -> FileEntry {
    match image_dir(store, &repo_name("app"), digest, dir).unwrap() {
        Some(ImageDir::Entries(entries)) => entries.into_iter().find(|e| e.name == name).unwrap(),
        other => panic!("{dir}: {other:?}"),
    }
}

fn totals(store: &Store, digest: &Digest) -> (u64, u64) {
    match image_files(store, &repo_name("app"), digest)
        .unwrap()
        .unwrap()
    {
        ImageFiles::Collected(tree) => (tree.files(), tree.size()),
        ImageFiles::NotCollected => panic!("files not collected"),
    }
}

#[test]
fn whiteouts_opaque_dirs_and_replacements_apply_in_layer_order() {
    use FileKind::{Dir, File};
    let base = tar(&[
        dir("etc/"),
        file("etc/a.conf", "a"),
        file("etc/b.conf", "b"),
        dir("usr/"),
        dir("usr/lib/"),
        file("usr/lib/x.so", "xx"),
        dir("usr/lib/sub/"),
        file("usr/lib/sub/z", "zzz"),
        dir("opt/"),
        dir("opt/keep/"),
        file("opt/keep/inner", "inner"),
        dir("var/"),
        dir("var/old/"),
        file("var/old/data", "data"),
    ]);
    let changes = tar(&[
        dir("etc/"),
        file("etc/.wh.a.conf", ""),
        file("etc/b.conf", "bigger b"),
        dir("usr/lib/"),
        file("usr/lib/.wh..wh..opq", ""),
        file("usr/lib/new.so", "new"),
        file(".wh.var", ""),
        file("opt/keep", "now a file"),
        // Without its parent directory in this layer, as some tools write them.
        file("srv/www/index.html", "<p>"),
    ]);
    let top = tar(&[dir("var/"), file("var/fresh", "fresh")]);
    let image = Image::new("amd64", &[base, changes, top]);
    for (layout, archive) in layouts(&image) {
        let t = test_store();
        let digest = import(&t, &archive, "app");
        let s = &t.store;
        check_dir(
            s,
            &digest,
            "/",
            &[
                ("etc", Dir, 0),
                ("opt", Dir, 0),
                ("srv", Dir, 0),
                ("usr", Dir, 0),
                ("var", Dir, 0),
            ],
        );
        check_dir(s, &digest, "etc", &[("b.conf", File, 8)]);
        check_dir(s, &digest, "/usr/lib/", &[("new.so", File, 3)]);
        check_dir(s, &digest, "opt", &[("keep", File, 10)]);
        check_dir(s, &digest, "var", &[("fresh", File, 5)]);
        check_dir(s, &digest, "srv/www", &[("index.html", File, 3)]);
        for gone in [
            "usr/lib/sub",
            "opt/keep",
            "var/old",
            "nowhere",
            "etc/b.conf",
        ] {
            assert_eq!(listing(s, &digest, gone), None, "{layout}: {gone}");
        }
        let usr = entry(s, &digest, "", "usr");
        assert_eq!((usr.mode, usr.children), (0o755, 1), "{layout}");
        assert_eq!(entry(s, &digest, "", "srv").children, 1, "{layout}");
        assert_eq!(entry(s, &digest, "etc", "b.conf").mode, 0o644, "{layout}");
        // b.conf, new.so, keep, fresh, index.html
        assert_eq!(totals(s, &digest), (5, 8 + 3 + 10 + 5 + 3), "{layout}");
    }
}

#[test]
fn links_keep_their_targets() {
    use FileKind::{File, Hardlink, Symlink};
    let bin = tar(&[
        dir("bin/"),
        file("bin/tool", "x".repeat(100)),
        hardlink("bin/alias", "bin/tool"),
        symlink("bin/sh", "tool"),
    ]);
    // The target of the hard link goes; the link keeps the data.
    let removal = tar(&[dir("bin/"), file("bin/.wh.tool", "")]);
    let image = Image::new("amd64", &[bin, removal]);
    for (layout, archive) in layouts(&image) {
        let t = test_store();
        let digest = import(&t, &archive, "app");
        check_dir(
            &t.store,
            &digest,
            "bin",
            &[("alias", Hardlink, 100), ("sh", Symlink, 0)],
        );
        let alias = entry(&t.store, &digest, "bin", "alias");
        assert_eq!(alias.link.as_deref(), Some("bin/tool"), "{layout}");
        let sh = entry(&t.store, &digest, "bin", "sh");
        assert_eq!(sh.link.as_deref(), Some("tool"), "{layout}");
        assert_eq!(totals(&t.store, &digest).0, 2, "{layout}");
    }
    let image = Image::new(
        "amd64",
        &[tar(&[file("tool", "abc"), hardlink("alias", "./tool")])],
    );
    let t = test_store();
    let digest = import(&t, &layouts(&image)[0].1, "app");
    check_dir(
        &t.store,
        &digest,
        "/",
        &[("alias", Hardlink, 3), ("tool", File, 3)],
    );
    assert_eq!(
        totals(&t.store, &digest),
        (2, 3),
        "a hard link's data counts once"
    );
}

const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                      VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";
const ALPINE: &str = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n";

fn os_of(layers: &[Vec<u8>]) -> Option<OsRelease> {
    let t = test_store();
    let image = Image::new("amd64", layers);
    let digest = import(&t, &layouts(&image)[0].1, "app");
    let details = image_details(&t.store, &repo_name("app"), &digest).unwrap();
    details.unwrap().files.expect("files collected").os
}

#[test]
fn os_release_comes_from_the_final_tree() {
    let debian = tar(&[
        dir("etc/"),
        symlink("etc/os-release", "../usr/lib/os-release"),
        dir("usr/lib/"),
        file("usr/lib/os-release", DEBIAN),
    ]);
    let os = os_of(&[debian.clone(), layer("app")]).unwrap();
    assert_eq!(
        os.pretty_name.as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert_eq!(
        (os.name.as_deref(), os.version_id.as_deref()),
        (Some("Debian GNU/Linux"), Some("12"))
    );

    // A later layer replaces the file the link points to.
    let upgrade = tar(&[file("usr/lib/os-release", ALPINE)]);
    let os = os_of(&[debian.clone(), upgrade]).unwrap();
    assert_eq!(os.display_name().as_deref(), Some("Alpine Linux 3.19.1"));

    // Only usr/lib/os-release; an absolute link; then both deleted.
    let os = os_of(&[tar(&[file("usr/lib/os-release", ALPINE)])]).unwrap();
    assert_eq!(os.id.as_deref(), Some("alpine"));
    let absolute = tar(&[
        file("usr/lib/os-release", ALPINE),
        symlink("etc/os-release", "/usr/lib/os-release"),
    ]);
    assert_eq!(os_of(&[absolute]).unwrap().id.as_deref(), Some("alpine"));
    let removal = tar(&[
        file("etc/.wh.os-release", ""),
        file("usr/lib/.wh.os-release", ""),
    ]);
    assert_eq!(os_of(&[debian, removal]), None);
    assert_eq!(os_of(&[layer("app")]), None);
}

/// Deletes what ingest collected, as if the images had been stored before it did.
fn forget_file_lists(t: &TestStore) {
    let conn = rusqlite::Connection::open(t.store.root().join("buildgrid.db")).unwrap();
    conn.execute_batch("DELETE FROM image_files; DELETE FROM layer_files;")
        .unwrap();
}

#[test]
fn reused_layers_keep_their_file_lists() {
    let base = layer("base");
    let first = Image::new("amd64", &[base.clone(), layer("first")]);
    let second = Image::new("amd64", &[base, layer("second")]);
    for (layout, archive) in layouts(&second) {
        let t = test_store();
        import(&t, &tar(&docker_save(&[("a:b", &first)])), "first");
        let report = t.import("second.tar", &archive, "app", "v1").unwrap();
        if layout == "docker save" {
            assert_eq!(report.layers_reused, 1, "{layout}");
        }
        // A fresh handle: nothing cached, the tree comes from the stored lists.
        let store = Store::open(t.store.root()).unwrap();
        let names: Vec<String> = listing(&store, &report.digest, "etc")
            .unwrap()
            .into_iter()
            .map(|(name, ..)| name)
            .collect();
        assert_eq!(names, ["base.conf", "second.conf"], "{layout}");
        let rows = t.store.db.row_counts().unwrap();
        assert!(
            rows.contains(&("layer_files".into(), 3)),
            "{layout}: {rows:?}"
        );
    }
}

#[test]
fn images_stored_before_file_lists_say_so() {
    let base = layer("base");
    let old = Image::new("amd64", &[base.clone(), layer("old")]);
    let t = test_store();
    let old_digest = import(&t, &tar(&docker_save(&[("a:b", &old)])), "app");
    forget_file_lists(&t);
    let store = Store::open(t.store.root()).unwrap();
    let repo = repo_name("app");
    assert!(matches!(
        image_files(&store, &repo, &old_digest).unwrap(),
        Some(ImageFiles::NotCollected)
    ));
    assert_eq!(
        image_dir(&store, &repo, &old_digest, "/").unwrap(),
        Some(ImageDir::NotCollected)
    );
    let details = image_details(&store, &repo, &old_digest).unwrap().unwrap();
    assert_eq!(details.files, None);
    assert_eq!(details.layers.len(), 2);

    // A new image on the old base: its reused layer is listed from the new archive.
    let new = Image::new("amd64", &[base, layer("new")]);
    let report = t
        .import("new.tar", &tar(&docker_save(&[("a:b", &new)])), "app", "v2")
        .unwrap();
    assert_eq!(report.layers_reused, 1);
    let names: Vec<String> = listing(&store, &report.digest, "etc")
        .unwrap()
        .into_iter()
        .map(|(name, ..)| name)
        .collect();
    assert_eq!(names, ["base.conf", "new.conf"]);
    // The old image's own top layer is still unlisted.
    assert!(matches!(
        image_files(&store, &repo, &old_digest).unwrap(),
        Some(ImageFiles::NotCollected)
    ));
}

#[test]
fn unknown_images_and_unlistable_layers() {
    let t = test_store();
    let image = Image::new("amd64", &[layer("base")]);
    let digest = import(&t, &layouts(&image)[0].1, "app");
    let nobody = Digest::of(b"nothing");
    assert!(
        image_files(&t.store, &repo_name("app"), &nobody)
            .unwrap()
            .is_none()
    );
    assert!(
        image_files(&t.store, &repo_name("other"), &digest)
            .unwrap()
            .is_none()
    );
    assert!(
        image_details(&t.store, &repo_name("other"), &digest)
            .unwrap()
            .is_none()
    );

    // A layer that is gzip but not a tar is stored as it is, and left unlisted.
    let not_tar = b"just some bytes, not a tar".repeat(40);
    let image = Image::new("amd64", &[layer("base"), not_tar]);
    let digest = import(&t, &layouts(&image)[1].1, "app");
    assert!(matches!(
        image_files(&t.store, &repo_name("app"), &digest).unwrap(),
        Some(ImageFiles::NotCollected)
    ));
}
