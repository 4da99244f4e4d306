//! Every write is refused with a message the client prints, and nothing changes.

use crate::support::{Buildgrid, TestImage, run, run_ok};

#[test]
fn docker_push_is_refused_legibly() {
    let buildgrid = Buildgrid::spawn();
    let image = TestImage::build("push me", 0);
    buildgrid.import_ok(&image.archive, "acme/pushed", "v1");
    let before = buildgrid.fingerprint();

    // The same repository, whose blobs exist, and a new one, whose blobs do not.
    for repo in ["acme/pushed:v1", "acme/pushed:v2", "acme/new:v1"] {
        let reference = format!("{}/{repo}", buildgrid.host());
        run_ok("docker", &["tag", &image.tag, &reference]);
        let output = run("docker", &["push", &reference]);
        let _ = run("docker", &["rmi", "--no-prune", &reference]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "docker push {repo} succeeded");
        assert!(
            stderr.contains("this registry is read-only")
                && stderr.contains("push your code to the app's git remote"),
            "docker push {repo} printed:\n{stderr}"
        );
        assert!(!stderr.contains("error parsing HTTP"), "{stderr}");
    }
    assert_eq!(
        before,
        buildgrid.fingerprint(),
        "a refused push changed the store"
    );
}

#[test]
fn skopeo_copy_to_buildgrid_is_refused() {
    let buildgrid = Buildgrid::spawn();
    let image = TestImage::build("skopeo push", 0);
    buildgrid.import_ok(&image.archive, "acme/pushed", "v1");
    // Even an admin's credentials push nothing.
    let creds = format!("admin:{}", buildgrid.token());
    let before = buildgrid.fingerprint();
    let output = run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("docker-archive:{}", image.archive.display()),
            &format!("docker://{}/acme/pushed:v9", buildgrid.host()),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("read-only"), "skopeo printed:\n{stderr}");
    assert_eq!(
        before,
        buildgrid.fingerprint(),
        "a refused copy changed the store"
    );
}
