//! Services with a git repository of their own: each repository builds one image, services of
//! one repository share it, and a second build definition for a repository is refused.

use crate::engines::{Cleanup, containers, free_ports, get};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::fixtures::{Source, create_app, ensure_base_image, wait_for_build};
use crate::support::Buildgrid;

#[test]
fn a_service_runs_the_image_of_its_own_repository_beside_the_apps() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/multi");
    let buildgrid = Buildgrid::spawn();
    let app_source = Source::example();
    app_source.write("index.html", "from the app's repository\n");
    app_source.commit("app page");
    let (_app_upstream, app_git) = app_source.bare_clone();
    let api_source = Source::example();
    api_source.write("index.html", "from the api's own repository\n");
    api_source.commit("api page");
    let (_api_upstream, api_git) = api_source.bare_clone();
    create_app(&buildgrid, "acme/multi", &app_git);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/multi", "off"]);
    buildgrid.cli_ok(&["build", "acme/multi", "--wait"]);
    buildgrid.add_local_server();
    let (web_port, api_port) = (free_ports(), free_ports());
    let service = |name: &str, port: u16, extra: &[&str]| {
        let port = format!("{port}:8080");
        let mut args = vec![
            "service",
            "add",
            "acme/multi",
            name,
            "--command",
            "hello serve",
            "--port",
            &port,
            "--health-http",
            "/",
            "--stop-grace",
            "1",
            "--server",
            "local",
        ];
        args.extend_from_slice(extra);
        buildgrid.cli(&args)
    };
    assert!(service("web", web_port, &[]).status.success());
    let added = service("api", api_port, &["--git", &api_git]);
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(added.status.success(), "{said}");
    assert!(
        said.contains("build it with `buildgrid build acme/multi --service api`"),
        "{said}"
    );

    // One repository, one build definition.
    for extra in [
        vec![
            "--git",
            api_git.as_str(),
            "--dockerfile",
            "Other.Dockerfile",
        ],
        vec!["--git", app_git.as_str(), "--context", "sub"],
    ] {
        let refused = service("again", free_ports(), &extra);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success());
        assert!(
            stderr.contains("two build definitions for one repository"),
            "{stderr}"
        );
    }

    // The api's repository is not built yet: the deploy says how to build it.
    let early = buildgrid.cli(&["deploy", "acme/multi"]);
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(!early.status.success());
    assert!(
        stderr.contains(
            "which has no successful build: run `buildgrid build acme/multi --service api`"
        ),
        "{stderr}"
    );
    assert!(containers("acme/multi").is_empty());

    let built = buildgrid.cli_ok(&["build", "acme/multi", "--service", "api", "--wait"]);
    let api_commit = api_source.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let app_commit = app_source.git(&["rev-parse", "HEAD"]).trim().to_owned();
    assert!(built.contains(&api_commit), "{built}");
    let deployed = buildgrid.cli_ok(&["deploy", "acme/multi"]);
    assert!(deployed.contains("deploy 1 succeeded"), "{deployed}");
    assert!(
        deployed.contains("service api runs build 2"),
        "the api runs its own build: {deployed}"
    );
    assert_eq!(
        get(u32::from(web_port)).as_deref(),
        Some("from the app's repository\n")
    );
    assert_eq!(
        get(u32::from(api_port)).as_deref(),
        Some("from the api's own repository\n")
    );
    // Two images: the app's repository's and the api's, each tagged with its own commit.
    let images = String::from_utf8_lossy(
        &std::process::Command::new("docker")
            .args([
                "ps",
                "--filter",
                "label=buildgrid.app=acme/multi",
                "--format",
                "{{.Image}}",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(images.contains(&app_commit), "{images}");
    assert!(images.contains(&api_commit), "{images}");

    // The app's webhook, told of a push to the api's repository, builds that repository.
    buildgrid.make_public("acme");
    // The timeline's deploy cards are read anonymously below: the namespace publishes its logs.
    buildgrid.cli_ok(&["namespace", "publish-logs", "acme", "on"]);
    api_source.write("index.html", "api, second version\n");
    let second = api_source.commit("api v2");
    api_source.git(&["push", "-q", &api_git, "main"]);
    let push = serde_json::json!({
        "ref": "refs/heads/main",
        "after": second,
        "repository": { "clone_url": api_git },
    });
    let body = serde_json::to_vec(&push).unwrap();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(crate::fixtures::WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let response = reqwest::blocking::Client::new()
        .post(buildgrid.url("/hooks/github/acme/multi"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "api-1")
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let queued: serde_json::Value = response.json().unwrap();
    let build = wait_for_build(&buildgrid, queued["build"].as_i64().unwrap());
    assert_eq!(build["state"], "succeeded", "{build}");
    assert_eq!(build["commit"], second.as_str(), "{build}");
    let redeployed = buildgrid.cli_ok(&["deploy", "acme/multi"]);
    assert!(redeployed.contains("deploy 2 succeeded"), "{redeployed}");
    let answer = get(u32::from(api_port)).or_else(|| get(u32::from(api_port) + 1));
    assert_eq!(answer.as_deref(), Some("api, second version\n"));

    // The timeline's deploy card names each service's image.
    let store = buildgrid_store::Store::open(&buildgrid.data_dir()).unwrap();
    let images = store.db.deploy_images(&[2]).unwrap();
    let services: Vec<&str> = images.iter().map(|i| i.service.as_str()).collect();
    assert_eq!(services, ["api", "web"]);
    assert_ne!(images[0].digest, images[1].digest);
    let page = reqwest::blocking::get(buildgrid.url("/apps/acme/multi"))
        .unwrap()
        .text()
        .unwrap();
    for image in &images {
        assert!(
            page.contains(&format!("title=\"{}\"", image.digest)),
            "the card shows {}'s image",
            image.service
        );
    }
    // The api's builds link to the api's image page.
    let api_repo = images[0]
        .image_ref
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .unwrap()
        .0
        .to_owned();
    assert!(api_repo.starts_with("acme/multi."), "{api_repo}");
    assert!(
        page.contains(&format!("href=\"/images/{api_repo}/{second}\"")),
        "{page}"
    );
}
