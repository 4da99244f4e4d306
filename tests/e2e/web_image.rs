//! The image page in a real browser: its files, its checksums, and an archive download that
//! matches them and that `docker load` accepts.

use fantoccini::Locator;

use crate::support::{Buildgrid, TestImage, run_ok, sha256_hex};
use crate::web::Driver;

#[test]
fn the_downloaded_archive_has_the_sha256_shown_and_docker_loads_it() {
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    let image = TestImage::build("hello from a downloaded archive", 0);
    buildgrid.import_ok(&image.archive, "acme/download", "v1");
    let page = buildgrid.url("/images/acme/download/v1");
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (shown_sha256, href, busybox_listed) = runtime.block_on(async {
        let browser = driver.browser().await;
        // Contents: the busybox the image was built with, reached by clicking into /bin.
        browser.goto(&format!("{page}?tab=contents")).await.unwrap();
        browser
            .find(Locator::LinkText("bin/"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let files = browser
            .wait()
            .for_element(Locator::Css("#files"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Details: the checksums; Download: the link.
        browser.goto(&format!("{page}?tab=details")).await.unwrap();
        let sha256 = browser
            .find(Locator::Css("#details #sha256"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        browser.goto(&format!("{page}?tab=download")).await.unwrap();
        let href = browser
            .find(Locator::Css("#download-link"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        browser.close().await.unwrap();
        (sha256, href, files.contains("busybox"))
    });
    assert!(busybox_listed, "the Contents tab lists /bin/busybox");
    assert_eq!(shown_sha256.len(), 64, "{shown_sha256}");

    let bytes = reqwest::blocking::get(buildgrid.url(&href))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(sha256_hex(&bytes), shown_sha256);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("download.tar");
    std::fs::write(&archive, &bytes).unwrap();
    let loaded = run_ok("docker", &["load", "-i", archive.to_str().unwrap()]);
    let name = format!("{}/acme/download:v1", buildgrid.host());
    assert!(loaded.contains(&name), "docker load printed: {loaded}");
    let printed = run_ok("docker", &["run", "--rm", &name]);
    assert_eq!(printed.trim(), "hello from a downloaded archive");
    run_ok("docker", &["rmi", "--no-prune", &name]);
}
