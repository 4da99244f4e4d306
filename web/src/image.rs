//! An image's page (`/images/{repository}/{tag or digest}`), in tabs as a package registry shows
//! them: how to install it and how to run it, with the real registry host filled in.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use buildgrid_core::{Reference, RepoName};
use buildgrid_store::{Build, ManifestRow};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::{PageError, blocking};
use crate::image_tabs::{self, TabData, Want};
use crate::{Viewer, Web, format, layout, storage};

/// The tabs, as a package registry shows them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Installation,
    Contents,
    Details,
    Run,
    Download,
}

const TABS: &[(Tab, &str, &str)] = &[
    (Tab::Installation, "installation", "Installation"),
    (Tab::Contents, "contents", "Contents"),
    (Tab::Details, "details", "Details"),
    (Tab::Run, "run", "Run"),
    (Tab::Download, "download", "Download"),
];

/// The name of the pull secret the Kubernetes snippet creates and uses.
const PULL_SECRET: &str = "buildgrid-registry";

#[derive(Deserialize)]
pub struct ImageQuery {
    tab: Option<String>,
    /// The directory the Contents tab shows.
    path: Option<String>,
    /// Where in a big directory the Contents tab starts.
    from: Option<usize>,
}

struct Image {
    repo: RepoName,
    /// The tag or digest the page was asked for, as given.
    reference: String,
    manifest: ManifestRow,
    /// The build that made it, when a build did, and that build's app.
    build: Option<Build>,
    app: Option<String>,
    /// Anyone may pull it: no sign-in steps.
    public: bool,
    /// The config's `ExposedPorts` (`8080/tcp`), for the Run tab.
    ports: Vec<String>,
    /// Why the next collection keeps it.
    kept: Option<storage::Kept>,
}

/// The repository and reference of an image path (`<repo>/<tag or digest>`) the viewer may
/// read; "no such image" otherwise, so private images stay unknown.
pub(crate) fn image_path(
    viewer: &Viewer,
    path: &str,
) -> Result<(RepoName, String, Reference), PageError> {
    let not_found = || PageError::NotFound(format!("There is no image {path}"));
    let (repo, reference) = path.rsplit_once('/').ok_or_else(not_found)?;
    let repo = RepoName::parse(repo).map_err(|_| not_found())?;
    let parsed = Reference::parse(reference).map_err(|_| not_found())?;
    if !viewer.may_read(repo.namespace()) {
        return Err(not_found());
    }
    Ok((repo, reference.to_owned(), parsed))
}

/// The manifest a tag or digest names in `repo`.
pub(crate) fn manifest(
    store: &buildgrid_store::Store,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<ManifestRow>, PageError> {
    Ok(match reference {
        Reference::Tag(tag) => store.db.manifest_by_tag(repo, tag)?,
        Reference::Digest(digest) => store.db.manifest_by_digest(repo, digest)?,
    })
}

pub async fn page(
    viewer: Viewer,
    path: web::Path<String>,
    query: web::Query<ImageQuery>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let path = path.into_inner();
    let not_found = || PageError::NotFound(format!("There is no image {path}"));
    let (repo, reference, parsed) = image_path(&viewer, &path)?;
    let reference = reference.as_str();
    let tab = match query.tab.as_deref() {
        None => Tab::Installation,
        Some(name) => TABS
            .iter()
            .find(|(_, slug, _)| *slug == name)
            .map(|(tab, _, _)| *tab)
            .ok_or_else(|| PageError::NotFound(format!("There is no tab {name:?}")))?,
    };
    let want = match tab {
        Tab::Contents => Some(Want::Contents {
            path: image_tabs::clean_path(query.path.as_deref()),
            from: query.from.unwrap_or(0),
        }),
        Tab::Details => Some(Want::Details),
        Tab::Download => Some(Want::Download),
        Tab::Installation | Tab::Run => None,
    };
    let archive = image_tabs::archive_name(state.settings.registry_host(), &repo, reference);
    let store = state.store.clone();
    let lookup = repo.clone();
    let asked = reference.to_owned();
    let found = blocking(move || {
        let app_of = |build: &Option<Build>| -> Result<Option<String>, PageError> {
            Ok(match build {
                Some(build) => store
                    .db
                    .app_by_id(build.app_id)?
                    .map(|app| app.app.to_string()),
                None => None,
            })
        };
        let Some(manifest) = manifest(&store, &lookup, &parsed)? else {
            let removed = store.db.removed_image_build(&lookup, &asked)?;
            let app = app_of(&removed)?;
            return Ok(Err(removed.map(|build| (build, app))));
        };
        let build = store.db.image_build(&lookup, &manifest.digest)?;
        let app = app_of(&build)?;
        let public = store.db.namespace_is_public(lookup.namespace())?;
        let ports = match tab {
            Tab::Run => buildgrid_store::image::image_details(&store, &lookup, &manifest.digest)?
                .map(|details| details.exposed_ports)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let data = match want {
            Some(want) => Some(image_tabs::load(
                &store,
                &lookup,
                &manifest.digest,
                archive.as_deref(),
                want,
            )?),
            None => None,
        };
        Ok(Ok((manifest, build, app, data, public, ports)))
    })
    .await?;
    let (manifest, build, app, data, public, ports) = match found {
        Ok(found) => found,
        Err(Some((build, app))) => {
            let markup = removed(&viewer, &repo, reference, &build, app.as_deref());
            return Ok(layout::html_response(StatusCode::GONE, &markup));
        }
        Err(None) => return Err(not_found()),
    };
    let kept = storage::kept(&state, &repo, &manifest.digest).await?;
    let image = Image {
        kept,
        repo,
        reference: reference.to_owned(),
        manifest,
        build,
        app,
        public,
        ports,
    };
    let markup = render(
        &viewer,
        &image,
        tab,
        data.as_ref(),
        state.settings.registry_host(),
    );
    Ok(layout::html_response(StatusCode::OK, &markup))
}

fn render(viewer: &Viewer, image: &Image, tab: Tab, data: Option<&TabData>, host: &str) -> Markup {
    let repo = image.repo.as_str();
    let reference = format::pull_reference(host, repo, &image.reference);
    let by_digest = format::pull_reference(host, repo, &image.manifest.digest.to_string());
    let content = html! {
        dl.facts {
            dt { "Repository" } dd { code { (repo) } }
            dt { "Reference" } dd { code { (image.reference) } }
            dt { "Manifest digest" } dd { code { (image.manifest.digest) } }
            @if let Some(build) = &image.build {
                dt { "Built by" } dd {
                    a href={ "/builds/" (build.id) } { "build #" (build.id) }
                    @if let Some(message) = &build.commit_message { " — " (format::subject(message)) }
                }
            }
            @if let Some(kept) = &image.kept {
                (storage::kept_markup(viewer, &image.repo, kept))
            }
        }
        nav.tabs aria-label="Image" {
            @for (each, slug, label) in TABS {
                a href={ "?tab=" (slug) } aria-current=[(*each == tab).then_some("page")] { (label) }
            }
        }
        section aria-label=(TABS.iter().find(|t| t.0 == tab).map_or("", |t| t.2)) {
            @match tab {
                Tab::Installation => { (installation(host, &reference, &by_digest, image.public)) }
                Tab::Run => { (run(host, repo, &reference, image)) }
                _ => {
                    @if let Some(data) = data {
                        (image_tabs::render(
                            data,
                            &format!("/images/{repo}/{}", image.reference),
                            &format!("/archives/{repo}/{}", image.reference),
                        ))
                    }
                }
            }
        }
    };
    let short = if image.reference.contains(':') {
        format!("@{}", format::short_digest(&image.reference))
    } else if image.reference.len() == 40 {
        format!(":{}", format::short_commit(&image.reference))
    } else {
        format!(":{}", image.reference)
    };
    let title = format!("{repo}{short}");
    match &image.app {
        Some(app) => layout::page_for(viewer, &title, &[(app, &format!("/apps/{app}"))], content),
        None => layout::page_for(viewer, &title, &[], content),
    }
}

/// The page of an image collection removed: 410, naming the build that made it.
fn removed(
    viewer: &Viewer,
    repo: &RepoName,
    reference: &str,
    build: &Build,
    app: Option<&str>,
) -> Markup {
    let content = html! {
        p.notice #image-removed {
            "This image was removed by retention: no retention rule, deploy or pin kept it. "
            "Its build's record and log stay."
        }
        dl.facts {
            dt { "Repository" } dd { code { (repo) } }
            dt { "Reference" } dd { code { (reference) } }
            @if let Some(digest) = &build.image_digest {
                dt { "Manifest digest" } dd { code { (digest) } }
            }
            dt { "Built by" } dd {
                a #removed-build href={ "/builds/" (build.id) } { "build #" (build.id) }
                @if let Some(message) = &build.commit_message { " — " (format::subject(message)) }
            }
        }
    };
    let title = format!("{repo} (removed)");
    match app {
        Some(app) => layout::page_for(viewer, &title, &[(app, &format!("/apps/{app}"))], content),
        None => layout::page_for(viewer, &title, &[], content),
    }
}

fn installation(host: &str, reference: &str, by_digest: &str, public: bool) -> Markup {
    html! {
        @if public {
            p.muted #public-note { "A public image: it pulls without signing in." }
        } @else {
            h2 { "Log in" }
            p.muted { "With your registry credentials or an API token:" }
            p { (layout::copyable("login-command", &format!("docker login {host}"))) }
        }
        h2 { "Pull" }
        p { (layout::copyable("pull-command", &format!("docker pull {reference}"))) }
        p.muted { "Or by digest, which never moves:" }
        p { (layout::copyable("pull-digest-command", &format!("docker pull {by_digest}"))) }
    }
}

/// `-p 8080:8080 -p 53:53/udp`: each exposed port published on the same host port.
fn publish_flags(ports: &[String]) -> String {
    ports
        .iter()
        .map(|port| match port.split_once('/') {
            Some((number, "tcp")) | Some((number, "")) => format!(" -p {number}:{number}"),
            Some((number, protocol)) => format!(" -p {number}:{number}/{protocol}"),
            None => format!(" -p {port}:{port}"),
        })
        .collect()
}

fn run(host: &str, repo: &str, reference: &str, image: &Image) -> Markup {
    let name = format::kubernetes_name(repo);
    let secret = format!(
        "kubectl create secret docker-registry {PULL_SECRET} \\\n  --docker-server={host} \\\n  --docker-username=<username> \\\n  --docker-password=<password or token>"
    );
    let pull_secrets = if image.public {
        String::new()
    } else {
        format!("      imagePullSecrets:\n        - name: {PULL_SECRET}\n")
    };
    let container_ports: String = image
        .ports
        .iter()
        .map(|port| match port.split_once('/') {
            Some((number, protocol)) if !protocol.is_empty() && protocol != "tcp" => format!(
                "            - containerPort: {number}\n              protocol: {}\n",
                protocol.to_ascii_uppercase()
            ),
            Some((number, _)) => format!("            - containerPort: {number}\n"),
            None => format!("            - containerPort: {port}\n"),
        })
        .collect();
    let ports_yaml = if container_ports.is_empty() {
        String::new()
    } else {
        format!("          ports:\n{container_ports}")
    };
    let deployment = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
{pull_secrets}      containers:
        - name: {name}
          image: {reference}
{ports_yaml}"
    );
    let first_port = image.ports.first().and_then(|p| {
        let (number, protocol) = p.split_once('/').unwrap_or((p, "tcp"));
        (protocol == "tcp").then_some(number)
    });
    html! {
        h2 { "Docker" }
        @if !image.public {
            p.muted { "Log in first: " code { "docker login " (host) } }
        }
        p.muted { "In the background, with each port the image exposes published on the same port of this machine:" }
        (layout::copyable_block("run-command", &format!("docker run -d{} {reference}", publish_flags(&image.ports))))
        @if let Some(port) = first_port {
            p.muted { "Then open " code { "http://localhost:" (port) "/" } "." }
        }
        p.muted {
            code { "docker run" } " prints the new container's id: "
            code { "docker logs -f <id>" } " shows its output, " code { "docker stop <id>" } " stops it."
        }
        h2 { "Kubernetes" }
        @if !image.public {
            p.muted { "The cluster pulls with a secret holding your registry credentials:" }
            (layout::copyable_block("secret-command", &secret))
            p.muted { "Then a Deployment of the image:" }
        } @else {
            p.muted { "A Deployment of the image (public: the cluster pulls it without a secret):" }
        }
        (layout::copyable_block("deployment-yaml", &deployment))
    }
}
