//! The *Contents*, *Details* and *Download* tabs of an image's page, and the archive download.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use buildgrid_core::{Digest, Reference, RepoName};
use buildgrid_store::image::{self, FileEntry, FileKind, ImageDetails, ImageDir, PlatformManifest};
use buildgrid_store::{ArchiveChecksums, Store, StoreError};
use maud::{Markup, html};

use crate::error::{PageError, blocking};
use crate::{Viewer, Web, format};

/// Entries one page of a directory lists.
const DIR_PAGE: usize = 1000;

/// What a tab shows, read off the async threads.
pub enum TabData {
    /// A multi-platform index: its images, each with a page of its own.
    Platforms(Vec<PlatformManifest>),
    Contents {
        path: String,
        dir: ImageDir,
        from: usize,
    },
    Details {
        details: Box<ImageDetails>,
        sums: Option<ArchiveChecksums>,
    },
    Download {
        sums: Option<ArchiveChecksums>,
        size: u64,
    },
}

/// The name `docker load` gives the image: `host/repo:tag`, when the page is of a tag.
pub fn archive_name(host: &str, repo: &RepoName, reference: &str) -> Option<String> {
    match Reference::parse(reference) {
        Ok(Reference::Tag(tag)) => Some(format!("{host}/{repo}:{tag}")),
        _ => None,
    }
}

/// `/` or `/usr/bin`: a clean absolute path without `.` or `..`.
pub fn clean_path(path: Option<&str>) -> String {
    let parts: Vec<&str> = path
        .unwrap_or("/")
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect();
    format!("/{}", parts.join("/"))
}

pub enum Want {
    Contents { path: String, from: usize },
    Details,
    Download,
}

/// Reads what the tab needs: `None` when the manifest is an index (then its platforms are shown).
pub fn load(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    archive: Option<&str>,
    want: Want,
) -> Result<TabData, StoreError> {
    if let Some(platforms) = image::platform_manifests(store, repo, digest)? {
        return Ok(TabData::Platforms(platforms));
    }
    Ok(match want {
        Want::Contents { path, from } => {
            let dir =
                image::image_dir(store, repo, digest, &path)?.unwrap_or(ImageDir::NotCollected);
            TabData::Contents { path, dir, from }
        }
        Want::Details => {
            let details = image::image_details(store, repo, digest)?;
            let sums = image::archive_checksums(store, repo, digest, archive)?;
            match details {
                Some(details) => TabData::Details {
                    details: Box::new(details),
                    sums,
                },
                None => TabData::Platforms(Vec::new()),
            }
        }
        Want::Download => {
            let sums = image::archive_checksums(store, repo, digest, archive)?;
            let size = image::image_details(store, repo, digest)?.map_or(0, |d| d.compressed_size);
            TabData::Download { sums, size }
        }
    })
}

pub fn render(data: &TabData, page_base: &str, download_url: &str) -> Markup {
    match data {
        TabData::Platforms(platforms) => platforms_list(platforms, page_base),
        TabData::Contents { path, dir, from } => contents(path, dir, *from),
        TabData::Details { details, sums } => details_tab(details, sums.as_ref()),
        TabData::Download { sums, size } => download(sums.as_ref(), *size, download_url),
    }
}

fn platforms_list(platforms: &[PlatformManifest], page_base: &str) -> Markup {
    // `page_base` is `/images/<repo>/<reference>`; platform pages go by digest.
    let repo_base = page_base
        .rsplit_once('/')
        .map_or(page_base, |(base, _)| base);
    html! {
        @if platforms.is_empty() {
            p.notice { "This manifest is not an image (an artifact, for example): it has no files or archive." }
        } @else {
            p { "A multi-platform image. Each platform is an image of its own:" }
            ul {
                @for platform in platforms {
                    li {
                        a href={ (repo_base) "/" (platform.digest) } { (platform.platform) }
                        " " code { (format::short_digest(&platform.digest.to_string())) }
                    }
                }
            }
        }
    }
}

fn mode_text(kind: FileKind, mode: u32) -> String {
    let mut text = String::with_capacity(10);
    text.push(match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Hardlink => 'h',
        FileKind::Other => 'c',
        FileKind::File => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

/// `1 pull`, `2 pulls`.
fn counted(count: u64, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

pub(crate) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn contents_link(path: &str) -> String {
    format!("?tab=contents&path={}", url_escape(path))
}

fn url_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Where a symlink in `dir` points, as a path of the image.
fn link_target(dir: &str, target: &str) -> String {
    if target.starts_with('/') {
        clean_path(Some(target))
    } else {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        format!("/{}", parts.join("/"))
    }
}

fn contents(path: &str, dir: &ImageDir, from: usize) -> Markup {
    let mut crumbs = vec![("/".to_owned(), "/".to_owned())];
    let mut so_far = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        so_far.push('/');
        so_far.push_str(part);
        crumbs.push((part.to_owned(), so_far.clone()));
    }
    html! {
        nav.steps aria-label="Directory" {
            @for (label, target) in &crumbs {
                a href=(contents_link(target)) { (label) }
            }
        }
        @match dir {
            ImageDir::NotCollected => {
                p.notice { "This image was stored before buildgrid listed image files (or has a layer it cannot read), so its files are not known. Rebuilding it lists them." }
            }
            ImageDir::NotADirectory => {
                p.notice { "The image has no directory " code { (path) } "." }
            }
            ImageDir::Entries(entries) => {
                @let shown = entries.iter().skip(from).take(DIR_PAGE);
                p.muted { (counted(entries.len() as u64, "entry", "entries")) }
                table.list #files {
                    thead { tr { th { "Name" } th { "Mode" } th { "Size" } } }
                    tbody {
                        @if path != "/" {
                            tr { td { a href=(contents_link(&link_target(path, ".."))) { ".." } } td {} td {} }
                        }
                        @for entry in shown {
                            (entry_row(path, entry))
                        }
                    }
                }
                @if entries.len() > from + DIR_PAGE {
                    nav.pager {
                        a href={ (contents_link(path)) "&from=" (from + DIR_PAGE) } { "Next " (DIR_PAGE) }
                    }
                }
            }
        }
    }
}

fn entry_row(dir: &str, entry: &FileEntry) -> Markup {
    let path = child_path(dir, &entry.name);
    html! {
        tr {
            td {
                @match entry.kind {
                    FileKind::Dir => { a href=(contents_link(&path)) { (entry.name) "/" } }
                    FileKind::Symlink => {
                        (entry.name) " → "
                        @if let Some(target) = &entry.link {
                            a href=(contents_link(&link_target(dir, target))) { (target) }
                        }
                    }
                    FileKind::Hardlink => {
                        (entry.name) " ⇒ " @if let Some(target) = &entry.link { code { "/" (target) } }
                    }
                    _ => { (entry.name) }
                }
            }
            td { code { (mode_text(entry.kind, entry.mode)) } }
            td {
                @match entry.kind {
                    FileKind::Dir => { span.muted { (counted(entry.children, "entry", "entries")) } }
                    FileKind::File | FileKind::Hardlink => { (size_text(entry.size)) }
                    _ => {}
                }
            }
        }
    }
}

fn checksums(sums: Option<&ArchiveChecksums>) -> Markup {
    html! {
        @match sums {
            Some(sums) => {
                dt { "MD5" } dd { code #md5 { (sums.md5) } }
                dt { "SHA1" } dd { code #sha1 { (sums.sha1) } }
                dt { "SHA256" } dd { code #sha256 { (sums.sha256) } }
                dt { "SHA512" } dd { code #sha512 { (sums.sha512) } }
                dt { "Archive size" } dd { (size_text(sums.size)) " (" (sums.size) " bytes)" }
            }
            None => { dt { "Checksums" } dd { "not available for this manifest" } }
        }
    }
}

/// The `org.opencontainers.image.*` labels a page names, with their titles.
const NAMED_LABELS: &[(&str, &str)] = &[
    ("org.opencontainers.image.description", "Description"),
    ("org.opencontainers.image.url", "Homepage"),
    ("org.opencontainers.image.source", "Source"),
    ("org.opencontainers.image.licenses", "Licenses"),
    ("org.opencontainers.image.revision", "Revision"),
    ("org.opencontainers.image.version", "Version"),
];

fn details_tab(details: &ImageDetails, sums: Option<&ArchiveChecksums>) -> Markup {
    let uncompressed = details.files.as_ref().map(|f| f.size);
    html! {
        dl.facts #details {
            (checksums(sums))
            dt { "Manifest digest" } dd { code { (details.digest) } }
            dt { "Image ID" } dd {
                code #image-id { (details.config_digest) }
                span.muted { " the config digest, which " code { "docker images" } " shows as IMAGE ID" }
            }
            dt { "Platform" } dd { (details.platform) }
            dt { "Size" } dd {
                (size_text(details.compressed_size)) " compressed"
                @if let Some(size) = uncompressed { ", " (size_text(size)) " of files" }
            }
            dt { "Files" } dd {
                @match &details.files { Some(files) => { (files.files) } None => { "not listed for this image" } }
            }
            dt { "Operating system" } dd {
                @match details.files.as_ref().and_then(|f| f.os.as_ref()).and_then(|os| os.display_name()) {
                    Some(name) => { (name) }
                    None => { span.muted { "unknown (no /etc/os-release)" } }
                }
            }
            dt { "Layers" } dd { (details.layers.len()) }
            @if !details.exposed_ports.is_empty() {
                dt { "Exposed ports" } dd { @for port in &details.exposed_ports { code { (port) } " " } }
            }
            dt { "Base images" } dd {
                @if details.bases.is_empty() { span.muted { "none recorded" } }
                @for base in &details.bases { code { (base) } " " }
            }
            dt { "Downloads" } dd #downloads {
                span #pulls { (counted(details.downloads, "pull", "pulls")) }
                ", "
                span #archive-downloads { (counted(details.archive_downloads, "archive download", "archive downloads")) }
                br;
                span.muted { "A pull is a client reading the manifest; an engine that has the image already only checks it, which is not counted." }
            }
            dt { "Pushed" } dd { (format::datetime(details.stored_at)) }
            @if let Some(created) = &details.created { dt { "Created" } dd { (created) } }
            @for (label, title) in NAMED_LABELS {
                @if let Some(value) = details.labels.get(*label) {
                    dt { (title) } dd {
                        @if value.starts_with("https://") || value.starts_with("http://") {
                            a href=(value) rel="nofollow noopener" { (value) }
                        } @else { (value) }
                    }
                }
            }
        }
        h2 { "Layers" }
        table.list {
            thead { tr { th { "#" } th { "Digest" } th { "Size" } } }
            tbody {
                @for (index, layer) in details.layers.iter().enumerate() {
                    tr { td { (index + 1) } td { code { (layer.digest) } } td { (size_text(layer.size)) } }
                }
            }
        }
        @let other: Vec<_> = details.labels.iter().filter(|(k, _)| !NAMED_LABELS.iter().any(|(n, _)| n == k)).collect();
        @if !other.is_empty() {
            h2 { "Labels" }
            dl.facts {
                @for (key, value) in other { dt { code { (key) } } dd { (value) } }
            }
        }
    }
}

fn download(sums: Option<&ArchiveChecksums>, size: u64, url: &str) -> Markup {
    html! {
        p {
            a #download-link href=(url) download { "Download the image archive" }
            " (" (size_text(sums.map_or(size, |s| s.size))) ")"
        }
        p.muted { "A " code { "docker save" } "-style archive: load it with " code { "docker load -i <file>" } ". Its checksums:" }
        dl.facts { (checksums(sums)) }
    }
}

/// `GET /archives/<repo>/<tag or digest>`: the archive, streamed from the store.
pub async fn archive(
    viewer: Viewer,
    path: web::Path<String>,
    state: web::Data<Web>,
) -> Result<HttpResponse, PageError> {
    let path = path.into_inner();
    let not_found = || PageError::NotFound(format!("There is no image {path}"));
    let (repo, reference, parsed) = crate::image::image_path(&viewer, &path)?;
    let reference = reference.as_str();
    let name = archive_name(state.settings.registry_host(), &repo, reference);
    let store = state.store.clone();
    let lookup = repo.clone();
    let key = name.clone();
    let found = blocking(move || {
        let Some(manifest) = crate::image::manifest(&store, &lookup, &parsed)? else {
            return Ok(None);
        };
        if image::platform_manifests(&store, &lookup, &manifest.digest)?.is_some() {
            return Ok(None);
        }
        let known = store
            .db
            .archive_checksums(&manifest.digest, key.as_deref().unwrap_or(""))?;
        Ok(Some((manifest.digest, known)))
    })
    .await?;
    let (digest, known) = found.ok_or_else(not_found)?;
    // At most a few writers at once, each on a blocking thread: more downloads answer 503
    // rather than take every blocking thread the pages and the registry need.
    let permit = state.settings.shared.start_archive()?;
    let timeout = state.settings.shared.limits().archive_write_timeout;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    let store = state.store.clone();
    let writer_repo = repo.clone();
    let runtime = tokio::runtime::Handle::current();
    let finished = Arc::new(AtomicBool::new(false));
    let written = finished.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChannelWriter {
            sender: sender.clone(),
            buffer: Vec::with_capacity(CHUNK),
            runtime,
            timeout,
        };
        let result =
            image::write_image_archive(&store, &writer_repo, &digest, name.as_deref(), &mut out)
                .map_err(std::io::Error::other)
                .and_then(|_| out.flush_chunk());
        match result {
            Ok(()) => {
                written.store(true, Ordering::Release);
                // Counted once written whole: a download cut short is not a download.
                if let Err(error) = store.db.add_archive_download(&writer_repo, &digest) {
                    tracing::warn!(%error, "cannot count an image archive download");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "an image archive download stopped");
                let _ = sender.try_send(Err(error));
            }
        }
    });
    let file = format!(
        "{}-{}.tar",
        repo.as_str().replace('/', "_"),
        reference.trim_start_matches("sha256:")
    );
    let mut response = HttpResponse::build(StatusCode::OK);
    response
        .insert_header((CONTENT_TYPE, "application/x-tar"))
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ));
    let stream = tokio_stream(receiver, finished);
    Ok(match known {
        Some(sums) => {
            response.insert_header((CONTENT_LENGTH, sums.size));
            response.no_chunking(sums.size).streaming(stream)
        }
        None => response.streaming(stream),
    })
}

const CHUNK: usize = 256 << 10;

/// Writes into a bounded channel from a blocking thread: the download never holds more than a
/// few chunks in memory, and stops when the client goes away or reads nothing for `timeout`.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    /// The runtime whose timers bound each wait for room in the channel.
    runtime: tokio::runtime::Handle,
    timeout: std::time::Duration,
}

impl ChannelWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        let sending = tokio::time::timeout(self.timeout, self.sender.send(Ok(chunk)));
        match self.runtime.block_on(sending) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client left",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", self.timeout.as_secs()),
            )),
        }
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The chunks the writer sends; a writer that stopped before the end (it failed, or timed out
/// while its error could not be queued) ends the body with an error, so the connection is cut
/// rather than a short archive ending like a whole one.
fn tokio_stream(
    mut receiver: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    finished: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let mut ended = false;
    futures_util::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        match receiver.poll_recv(cx) {
            std::task::Poll::Ready(None) if !finished.load(Ordering::Acquire) => {
                ended = true;
                std::task::Poll::Ready(Some(Err(std::io::Error::other(
                    "the archive writer stopped before the end",
                ))))
            }
            other => other,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_modes() {
        assert_eq!(clean_path(None), "/");
        assert_eq!(clean_path(Some("usr//bin/")), "/usr/bin");
        assert_eq!(clean_path(Some("/../etc/./x")), "/etc/x");
        assert_eq!(link_target("/usr/bin", "../lib/x"), "/usr/lib/x");
        assert_eq!(link_target("/", "usr/lib"), "/usr/lib");
        assert_eq!(link_target("/bin", "/bin/busybox"), "/bin/busybox");
        assert_eq!(mode_text(FileKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_text(FileKind::File, 0o644), "-rw-r--r--");
        assert_eq!(size_text(999), "999 B");
        assert_eq!(size_text(1_500_000), "1.5 MB");
        assert_eq!(url_escape("/a b&c"), "/a%20b%26c");
    }
}
