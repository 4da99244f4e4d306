//! Timings of ingest and of the image page's store side, printed (no harness):
//! `cargo bench -p buildgrid-store --bench image_files`.
//!
//! The image: a base layer of 50,000 small files in 1,000 directories, a layer of one 128 MiB
//! file, and a small layer that deletes and replaces some base files.

use std::path::Path;
use std::time::{Duration, Instant};

use buildgrid_core::{Digest, RepoName, Tag};
use buildgrid_store::Store;
use buildgrid_store::image::{
    ImageDir, archive_checksums, image_details, image_dir, write_image_archive,
};
use buildgrid_store::ingest::import_archive;
use serde_json::json;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let started = Instant::now();
    write_archive(&archive);
    println!(
        "archive: {:.1} MB written in {:.2} s",
        std::fs::metadata(&archive).unwrap().len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let repo = RepoName::parse("bench/app").unwrap();
    let tag = Tag::parse("v1").unwrap();
    let mut times = Vec::new();
    let mut digest = None;
    for run in 0..3 {
        let data = dir.path().join(format!("data-{run}"));
        let store = Store::open(&data).unwrap();
        let started = Instant::now();
        let report = import_archive(&store, &archive, &repo, &tag).unwrap();
        times.push(started.elapsed());
        digest = Some(report.digest);
    }
    print_times("ingest into a fresh store", &mut times);
    let digest = digest.unwrap();
    let data = dir.path().join("data-0");

    // A fresh `Store` has no tree cached: the first listing merges the layers' lists.
    let (mut cold, mut warm, mut big) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let store = Store::open(&data).unwrap();
        let started = Instant::now();
        let root = image_dir(&store, &repo, &digest, "/").unwrap().unwrap();
        cold.push(started.elapsed());
        assert!(
            matches!(root, ImageDir::Entries(ref e) if e.len() == 4),
            "{root:?}"
        );
        for _ in 0..20 {
            let started = Instant::now();
            image_dir(&store, &repo, &digest, "usr/share/pkg-0042").unwrap();
            warm.push(started.elapsed());
            let started = Instant::now();
            let listing = image_dir(&store, &repo, &digest, "usr/share")
                .unwrap()
                .unwrap();
            big.push(started.elapsed());
            assert!(matches!(listing, ImageDir::Entries(ref e) if e.len() == 990));
        }
    }
    print_times("first listing (merge of 50,000 entries, then /)", &mut cold);
    print_times("listing of a cached tree, 50 entries", &mut warm);
    print_times("listing of a cached tree, 990 entries", &mut big);

    let store = Store::open(&data).unwrap();
    let mut details = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let d = image_details(&store, &repo, &digest).unwrap().unwrap();
        details.push(started.elapsed());
        assert_eq!(d.files.unwrap().files, 49_454);
    }
    print_times("image details", &mut details);

    let started = Instant::now();
    let sums = archive_checksums(&store, &repo, &digest, Some("bench/app:v1"))
        .unwrap()
        .unwrap();
    let first = started.elapsed();
    println!(
        "archive checksums, first request: {:.1} MB archive hashed in {:.2} s ({:.0} MB/s)",
        sums.size as f64 / 1e6,
        first.as_secs_f64(),
        sums.size as f64 / 1e6 / first.as_secs_f64()
    );
    let started = Instant::now();
    archive_checksums(&store, &repo, &digest, Some("bench/app:v1")).unwrap();
    println!(
        "archive checksums, stored: {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    write_image_archive(
        &store,
        &repo,
        &digest,
        Some("bench/app:v1"),
        &mut std::io::sink(),
    )
    .unwrap();
    println!(
        "archive write (checksums stored): {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

fn print_times(what: &str, times: &mut [Duration]) {
    times.sort();
    println!(
        "{what}: min {:.2} ms, median {:.2} ms, max {:.2} ms ({} runs)",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}

fn tar_header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn add_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) {
    let mut header = tar_header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
    builder.append_data(&mut header, path, bytes).unwrap();
}

fn add_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut header = tar_header(tar::EntryType::Directory, 0, 0o755);
    builder.append_data(&mut header, path, &[][..]).unwrap();
}

fn base_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    add_dir(&mut builder, "etc/");
    add_file(
        &mut builder,
        "etc/os-release",
        b"PRETTY_NAME=\"Bench Linux 1\"\nNAME=\"Bench Linux\"\nVERSION_ID=\"1\"\n",
    );
    add_dir(&mut builder, "usr/");
    add_dir(&mut builder, "usr/share/");
    for d in 0..1000 {
        add_dir(&mut builder, &format!("usr/share/pkg-{d:04}/"));
        for f in 0..50 {
            let text = format!("package {d} file {f}\n").repeat(10 + (d * 7 + f) % 90);
            add_file(
                &mut builder,
                &format!("usr/share/pkg-{d:04}/file-{f:02}.txt"),
                text.as_bytes(),
            );
        }
    }
    builder.into_inner().unwrap()
}

fn big_layer() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let words = ["alpha ", "beta ", "gamma ", "delta ", "layer ", "image\n"];
    let mut bytes = Vec::with_capacity(128 << 20);
    while bytes.len() < 128 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(words[(state % 6) as usize].as_bytes());
        bytes.extend_from_slice(&state.to_le_bytes()[..2]);
    }
    let mut builder = tar::Builder::new(Vec::new());
    add_dir(&mut builder, "data/");
    add_file(&mut builder, "data/big.bin", &bytes);
    builder.into_inner().unwrap()
}

fn top_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    add_dir(&mut builder, "usr/share/");
    for d in 0..10 {
        add_file(&mut builder, &format!("usr/share/.wh.pkg-{d:04}"), b"");
    }
    add_dir(&mut builder, "usr/share/pkg-0500/");
    add_file(&mut builder, "usr/share/pkg-0500/.wh..wh..opq", b"");
    add_file(&mut builder, "usr/share/pkg-0500/new.txt", b"new\n");
    add_dir(&mut builder, "app/");
    add_file(
        &mut builder,
        "app/main",
        &b"#!/bin/sh\necho hello\n".repeat(100),
    );
    builder.into_inner().unwrap()
}

/// A legacy `docker save` archive of the bench image.
fn write_archive(path: &Path) {
    let layers = [base_layer(), big_layer(), top_layer()];
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/app/main"], "Labels": {"org.opencontainers.image.title": "bench"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        let mut header = tar_header(tar::EntryType::Regular, layer.len() as u64, 0o644);
        builder.append_data(&mut header, &name, &layer[..]).unwrap();
        names.push(name);
    }
    let mut header = tar_header(tar::EntryType::Regular, config.len() as u64, 0o644);
    builder
        .append_data(&mut header, &config_name, &config[..])
        .unwrap();
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": ["bench/app:v1"],
        "Layers": names,
    }]))
    .unwrap();
    let mut header = tar_header(tar::EntryType::Regular, manifest.len() as u64, 0o644);
    builder
        .append_data(&mut header, "manifest.json", &manifest[..])
        .unwrap();
    builder.into_inner().unwrap();
}
