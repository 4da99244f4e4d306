//! The proxy on a server: the fixed address of the services that publish a port there.
//!
//! How it gets there: buildgrid imports an image made of its own binary (and the shared
//! libraries the binary loads, found with `ldd`) into the server's engine — `docker import`
//! over the same connection as the deploy, so it needs no registry and works on every kind of
//! server — named `buildgrid-proxy:<first 12 hex of the binary's sha256>`. It runs one
//! container per install and binary, `buildgrid-proxy-<install>-<hash>`, on the server's
//! network, with its routes in the volume `buildgrid-proxy-<install>`.
//!
//! How it is upgraded: when buildgrid's binary changes, the next deploy starts the new proxy
//! beside the old one; the new one takes the old one's listening sockets through the control
//! socket in the shared volume (nothing queued is lost), and the old container is then removed.
//!
//! How a deploy switches: `buildgrid proxy deploy` run inside the container (`docker exec`),
//! which checks every new replica's health, switches the route in one step, and returns once
//! the old replicas answered their last request. Only then do they stop.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::part::{engine_message, remove};
use crate::{Install, LABEL_INSTALL};

/// Marks the proxy containers (its value: the binary's hash).
pub const LABEL_PROXY: &str = "buildgrid.proxy";
const STATE: &str = "/state";
const IMAGE_REPO: &str = "buildgrid-proxy";

/// The image of this binary: its tag and the archive `docker import` reads.
struct ProxyImage {
    hash: String,
    archive: bytes::Bytes,
}

static IMAGE: OnceLock<Result<ProxyImage, String>> = OnceLock::new();

fn image() -> Result<&'static ProxyImage, String> {
    IMAGE
        .get_or_init(|| {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find buildgrid's own binary: {e}"))?;
            build_image(&exe).map_err(|e| format!("cannot make the proxy's image: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A root file system holding `exe` as `/buildgrid` and every library it loads at its path.
fn build_image(exe: &Path) -> std::io::Result<ProxyImage> {
    let binary = without_debug_info(exe).map_or_else(|| std::fs::read(exe), Ok)?;
    let hash = hex::encode(&Sha256::digest(&binary)[..6]);
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8], mode: u32| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        archive.append_data(&mut header, path.trim_start_matches('/'), bytes)
    };
    add("/buildgrid", &binary, 0o755)?;
    for library in libraries(exe)? {
        let bytes = std::fs::read(&library)?;
        add(&library.to_string_lossy(), &bytes, 0o755)?;
    }
    // The state volume's mount point, and a /tmp.
    for dir in ["state", "tmp"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o1777);
        header.set_mtime(0);
        header.set_cksum();
        archive.append_data(&mut header, dir, std::io::empty())?;
    }
    let archive = archive.into_inner()?;
    Ok(ProxyImage {
        hash,
        archive: archive.into(),
    })
}

/// `exe` without its debug information (a third of a release binary, most of a debug one),
/// when binutils' `strip` is there; the binary as it is otherwise.
fn without_debug_info(exe: &Path) -> Option<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("buildgrid-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join("buildgrid");
    let stripped = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(exe)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|_| std::fs::read(&out).ok());
    let _ = std::fs::remove_dir_all(&dir);
    stripped
}

/// The shared libraries `exe` loads, as `ldd` lists them (the dynamic loader included).
fn libraries(exe: &Path) -> std::io::Result<Vec<PathBuf>> {
    let output = std::process::Command::new("ldd").arg(exe).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // A static binary needs nothing else.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&output.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(std::io::Error::other(format!(
            "ldd {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libraries = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path
            && path.starts_with('/')
        {
            libraries.push(PathBuf::from(path));
        }
    }
    libraries
}

fn container_name(install: &Install, hash: &str) -> String {
    format!("buildgrid-proxy-{}-{hash}", install.id)
}

fn volume_name(install: &Install) -> String {
    format!("buildgrid-proxy-{}", install.id)
}

/// The install's proxy on `docker`, running this binary: started (and the image imported)
/// when missing, an older one replaced after the new one took its sockets. Its name.
pub(crate) async fn ensure(
    docker: &Docker,
    server: &str,
    install: &Install,
    note: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    let image = image()?;
    let name = container_name(install, &image.hash);
    // The parts of a deploy on one server (one per published service) start its proxy once.
    let lock = {
        static STARTING: OnceLock<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
            OnceLock::new();
        let mut locks = STARTING.get_or_init(Default::default).lock().unwrap();
        locks.entry(server.to_owned()).or_default().clone()
    };
    let _starting = lock.lock().await;
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([(
            "label",
            vec![
                format!("{LABEL_INSTALL}={}", install.id),
                LABEL_PROXY.to_owned(),
            ],
        )]))
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_message(&e))?;
    let mut current_running = false;
    let mut others = Vec::new();
    for container in containers {
        let Some(found) = container.names.as_ref().and_then(|n| n.first()) else {
            continue;
        };
        let found = found.trim_start_matches('/').to_owned();
        let running = container.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
        if found == name {
            if running {
                current_running = true;
            } else {
                // Left stopped: start it again below, with its routes from the volume.
                let _ = remove(docker, &found, 0).await;
            }
        } else {
            others.push(found);
        }
    }
    if !current_running {
        import(docker, image, note).await?;
        note(&format!("starting the proxy {name}"));
        create(docker, install, image, &name).await?;
        wait_ready(docker, &name).await?;
    }
    // An older proxy handed its sockets to the new one when it started; it only finishes the
    // requests it had.
    let replaced = !others.is_empty();
    for old in others {
        let outcome = remove(docker, &old, 30).await;
        note(&crate::part::removal(
            outcome,
            &format!("removed the older proxy {old}"),
        ));
    }
    if replaced {
        // Older proxy images go unless a container (another install's) still uses them.
        let options = bollard::query_parameters::ListImagesOptionsBuilder::new()
            .filters(&HashMap::from([("reference", vec![IMAGE_REPO.to_owned()])]))
            .build();
        for old in docker.list_images(Some(options)).await.unwrap_or_default() {
            let current = format!("{IMAGE_REPO}:{}", image.hash);
            if !old.repo_tags.contains(&current) {
                let _ = docker
                    .remove_image(
                        &old.id,
                        None::<bollard::query_parameters::RemoveImageOptions>,
                        None,
                    )
                    .await;
            }
        }
    }
    Ok(name)
}

async fn import(
    docker: &Docker,
    image: &ProxyImage,
    note: &(dyn Fn(&str) + Sync),
) -> Result<(), String> {
    let reference = format!("{IMAGE_REPO}:{}", image.hash);
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(());
    }
    note(&format!(
        "importing the proxy's image {reference} ({} MB)",
        image.archive.len() / 1_000_000
    ));
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(IMAGE_REPO)
        .tag(&image.hash)
        .build();
    let mut stream = docker.create_image(
        Some(options),
        Some(bollard::body_full(image.archive.clone())),
        None,
    );
    while let Some(item) = stream.next().await {
        let info =
            item.map_err(|e| format!("importing the proxy's image: {}", engine_message(&e)))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(format!("importing the proxy's image: {error}"));
        }
    }
    Ok(())
}

async fn create(
    docker: &Docker,
    install: &Install,
    image: &ProxyImage,
    name: &str,
) -> Result<(), String> {
    let labels = HashMap::from([
        (LABEL_INSTALL.to_owned(), install.id.clone()),
        (LABEL_PROXY.to_owned(), image.hash.clone()),
    ]);
    let body = ContainerCreateBody {
        image: Some(format!("{IMAGE_REPO}:{}", image.hash)),
        cmd: Some(
            ["/buildgrid", "proxy", "run", "--state", STATE]
                .map(String::from)
                .to_vec(),
        ),
        env: Some(vec!["RUST_LOG=info".to_owned()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some("host".to_owned()),
            binds: Some(vec![format!("{}:{STATE}", volume_name(install))]),
            restart_policy: Some(bollard::models::RestartPolicy {
                name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    match docker.create_container(Some(options), body).await {
        Ok(_) => {}
        // Another buildgrid process of this install made it a moment ago.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => return Ok(()),
        Err(e) => return Err(format!("creating the proxy: {}", engine_message(&e))),
    }
    docker
        .start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|e| format!("starting the proxy: {}", engine_message(&e)))
}

/// Waits until the proxy answers on its control socket.
async fn wait_ready(docker: &Docker, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, output) = exec(docker, name, &["proxy", "routes", "--state", STATE]).await?;
        if code == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the proxy {name} did not answer within 20 s: {}",
                output.trim()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Switches `port` (and `host`) of the proxy `name` to `targets` once each passes the health
/// check; returns the proxy's report lines.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn switch(
    docker: &Docker,
    name: &str,
    service: &str,
    port: u16,
    host: Option<&str>,
    targets: &[String],
    health_path: Option<&str>,
    health_timeout: u64,
    drain_timeout: u64,
) -> Result<String, String> {
    let port = port.to_string();
    let health_timeout = health_timeout.to_string();
    let drain_timeout = drain_timeout.to_string();
    let mut args = vec![
        "proxy",
        "deploy",
        "--state",
        STATE,
        "--port",
        &port,
        "--service",
        service,
        "--health-timeout",
        &health_timeout,
        "--drain-timeout",
        &drain_timeout,
    ];
    if let Some(host) = host {
        args.extend(["--host", host]);
    }
    if let Some(path) = health_path {
        args.extend(["--health-path", path]);
    }
    for target in targets {
        args.extend(["--target", target]);
    }
    let (code, output) = exec(docker, name, &args).await?;
    if code == 0 {
        Ok(output)
    } else {
        Err(format!("the proxy did not switch: {}", output.trim()))
    }
}

/// Runs `/buildgrid <args>` in the container `name`: its exit code and output.
async fn exec(docker: &Docker, name: &str, args: &[&str]) -> Result<(i64, String), String> {
    let cmd: Vec<&str> = std::iter::once("/buildgrid")
        .chain(args.iter().copied())
        .collect();
    let options = bollard::exec::CreateExecOptions {
        cmd: Some(cmd),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker
        .create_exec(name, options)
        .await
        .map_err(|e| engine_message(&e))?;
    let mut text = Vec::new();
    match docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| engine_message(&e))?
    {
        bollard::exec::StartExecResults::Attached { mut output, .. } => {
            while let Some(chunk) = output.next().await {
                if let Ok(chunk) = chunk {
                    let _ = text.write_all(&chunk.into_bytes());
                }
            }
        }
        bollard::exec::StartExecResults::Detached => {}
    }
    let inspected = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| engine_message(&e))?;
    Ok((
        inspected.exit_code.unwrap_or(-1),
        String::from_utf8_lossy(&text).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
