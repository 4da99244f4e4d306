//! Pulling imported images with the Docker engine, skopeo and plain HTTP.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Buildgrid, TestImage, raw_http, run, run_ok, sha256_hex};

#[test]
fn docker_pull_then_run() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    // With a layer of random bytes, stored as a plain tar: the engine pulls both kinds.
    let image = TestImage::build("hello from a pulled image", 1);
    let digest = buildgrid.import_ok(&image.archive, "acme/hello.example-com-acme-hello", "v1");
    let reference = format!("{}/acme/hello.example-com-acme-hello:v1", buildgrid.host());

    let pulled = run_ok("docker", &["pull", &reference]);
    assert!(pulled.contains(&digest), "docker pull printed:\n{pulled}");
    let printed = run_ok("docker", &["run", "--rm", &reference]);
    assert_eq!(printed.trim(), "hello from a pulled image");
    run_ok("docker", &["rmi", "--no-prune", &reference]);
}

#[test]
fn skopeo_inspect_and_copy_verify_every_digest() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("skopeo", 1);
    let digest = buildgrid.import_ok(&image.archive, "acme/skopeo", "v1");
    let source = format!("docker://{}/acme/skopeo:v1", buildgrid.host());

    let inspect: Value = serde_json::from_str(&run_ok(
        "skopeo",
        &["inspect", "--tls-verify=false", &source],
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["RepoTags"], serde_json::json!(["v1"]));
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);
    // The layer of random bytes is stored as a plain tar (gzip would not shrink it), the
    // others compressed.
    let raw: Value = serde_json::from_str(&run_ok(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &source],
    ))
    .unwrap();
    let mut types: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ]
    );

    let target = tempfile::tempdir().unwrap();
    let layout = target.path().join("layout");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            // An OCI layout would otherwise get the plain layer compressed, a new manifest.
            "--preserve-digests",
            &source,
            &format!("oci:{}", layout.display()),
        ],
    );
    let mut verified = 0;
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            entry.file_name().to_str().unwrap(),
            "blob content does not match its name"
        );
        verified += 1;
    }
    // manifest, config and three layers
    assert_eq!(verified, 5);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
}

/// One full pull over HTTP: the manifest, then every blob, each checked against its digest.
fn pull_over_http(client: &reqwest::blocking::Client, base: &str, expected: &str) {
    let response = client
        .get(format!("{base}/manifests/v1"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), expected);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    for digest in digests {
        let response = client.get(format!("{base}/blobs/{digest}")).send().unwrap();
        assert_eq!(response.status(), 200, "{digest}");
        let body = response.bytes().unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&body)), digest);
    }
}

#[test]
fn parallel_pulls_while_another_image_is_imported() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let served = TestImage::build("served", 4);
    let incoming = TestImage::build("incoming", 48);
    let digest = buildgrid.import_ok(&served.archive, "acme/served", "v1");
    let before = buildgrid.fingerprint();

    let base = buildgrid.url("/v2/acme/served");
    std::thread::scope(|scope| {
        let import = scope.spawn(|| buildgrid.import(&incoming.archive, "acme/incoming", "v1"));
        let pulls: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(120))
                        .build()
                        .unwrap();
                    for _ in 0..3 {
                        pull_over_http(&client, &base, &digest);
                    }
                })
            })
            .collect();
        for pull in pulls {
            pull.join().expect("a pull failed");
        }
        let output = import.join().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
    let after = buildgrid.fingerprint();
    assert_ne!(before, after, "the import stored nothing");
    // The served image is untouched and the new one is complete.
    let client = reqwest::blocking::Client::new();
    pull_over_http(&client, &base, &digest);
    let tags: Value = client
        .get(buildgrid.url("/v2/acme/incoming/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
}

#[test]
fn bad_input_gets_oci_errors() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("bad input", 0);
    let digest = buildgrid.import_ok(&image.archive, "acme/bad", "v1");
    let host = buildgrid.host();
    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET", "/v2/Acme/bad/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2/acme/b..ad/tags/list", 400, "NAME_INVALID"),
        (
            "GET",
            "/v2/acme/../../etc/passwd/manifests/v1",
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/acme/%2e%2e/bad/manifests/v1",
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/acme/bad/blobs/sha256:../../../etc/passwd",
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/acme/bad/blobs/sha256:1234",
            400,
            "DIGEST_INVALID",
        ),
        (
            "HEAD",
            "/v2/acme/bad/manifests/md5:abc",
            400,
            "DIGEST_INVALID",
        ),
        ("GET", "/v2/acme/bad/manifests/-v1", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/acme/bad/manifests/v2", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/acme/nothing/manifests/v1", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/acme/bad/nonsense", 404, "NAME_UNKNOWN"),
        ("POST", "/v2/acme/bad/blobs/uploads/", 405, "UNSUPPORTED"),
    ];
    for (method, path, status, code) in cases {
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (actual, body) = raw_http(buildgrid.addr, &request);
        assert_eq!(actual, *status, "{method} {path}: {body}");
        if *method != "HEAD" {
            let error: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
            assert_eq!(error["errors"][0]["code"], *code, "{method} {path}");
            assert!(
                error["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }

    let manifest: Value = reqwest::blocking::get(buildgrid.url("/v2/acme/bad/manifests/v1"))
        .unwrap()
        .json()
        .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let client = reqwest::blocking::Client::new();
    for range in [
        "bytes=999999999999-",
        "bytes=5-2",
        "bytes=-0",
        "bytes=abc",
        "lines=1-2",
        "bytes=18446744073709551615-18446744073709551616",
    ] {
        let response = client
            .get(buildgrid.url(&format!("/v2/acme/bad/blobs/{layer}")))
            .header("Range", range)
            .send()
            .unwrap();
        assert_eq!(response.status(), 416, "{range}");
        let error: Value = response.json().unwrap();
        assert_eq!(error["errors"][0]["code"], "RANGE_INVALID", "{range}");
    }
    let status = run("docker", &["pull", &format!("{host}/acme/bad@{digest}")]).status;
    assert!(status.success(), "pull by digest failed after bad requests");
    let _ = run(
        "docker",
        &["rmi", "--no-prune", &format!("{host}/acme/bad@{digest}")],
    );
}
