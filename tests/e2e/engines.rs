//! Docker engines and published ports for the deploy tests: a second engine the test starts
//! beside the machine's, free host ports, and cleanup of what a test deployed.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::run;

/// A base port with the next three free too (2 replicas × 2 slots), below Linux's ephemeral
/// range so that servers other tests start on port 0 cannot take them meanwhile; each call in
/// this process gets a block of its own.
pub fn free_ports() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = 20_000 + (std::process::id() as usize % 1_000) * 8;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(n < 1_000, "no four free ports below 32000");
        let base = (20_000 + (start - 20_000 + n * 4) % 12_000) as u16;
        if (0..4).all(|i| TcpListener::bind(("0.0.0.0", base + i)).is_ok()) {
            return base;
        }
    }
}

pub fn get(port: u32) -> Option<String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.text().ok())
}

/// Ports of the replicas that answer, among every port the service may use.
pub fn answering(base: u16) -> Vec<u32> {
    (0..4)
        .map(|i| u32::from(base) + i)
        .filter(|p| get(*p).is_some())
        .collect()
}

pub fn containers(app: &str) -> Vec<String> {
    let output = run(
        "docker",
        &[
            "ps",
            "--filter",
            &format!("label=buildgrid.app={app}"),
            "--format",
            "{{.Names}}",
        ],
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

pub struct Cleanup(pub &'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let output = run(
            "docker",
            &[
                "ps",
                "-aq",
                "--filter",
                &format!("label=buildgrid.app={}", self.0),
            ],
        );
        for id in String::from_utf8_lossy(&output.stdout).lines() {
            let _ = run("docker", &["rm", "-f", id]);
        }
    }
}

/// A second Docker engine the test starts beside the machine's: its own data, exec root,
/// containerd namespace, socket and bridge, and no iptables rules; its services use the host's
/// network. (`--bridge none` would make it delete the machine engine's `docker0`.)
pub struct SecondEngine {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    bridge: String,
}

/// `program` run as root: directly when the tests run as root, else through `sudo -n` (as
/// `.ci/run` installs packages).
pub fn as_root(program: &str) -> std::process::Command {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        std::process::Command::new(program)
    } else {
        let mut command = std::process::Command::new("sudo");
        command.args(["-n", program]);
        command
    }
}

pub fn ip(args: &[&str]) {
    let status = as_root("ip")
        .args(args)
        .status()
        .expect("iproute2's ip is needed");
    assert!(status.success(), "ip {args:?} failed");
}

impl SecondEngine {
    pub fn start() -> SecondEngine {
        SecondEngine::start_with(&[])
    }

    /// An engine that also listens on `tcp://127.0.0.1:<port>` with TLS, with the server
    /// certificate `cert` and `key`, and requires client certificates signed by `ca`.
    pub fn start_tls(port: u16, ca: &Path, cert: &Path, key: &Path) -> SecondEngine {
        SecondEngine::start_with(&[
            "-H".into(),
            format!("tcp://127.0.0.1:{port}").into(),
            "--tlsverify".into(),
            "--tlscacert".into(),
            ca.into(),
            "--tlscert".into(),
            cert.into(),
            "--tlskey".into(),
            key.into(),
        ])
    }

    fn start_with(extra_args: &[OsString]) -> SecondEngine {
        // Tests running at once in this process each get a bridge and subnet of their own.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::write(path.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(path.join("dockerd.log")).unwrap();
        let bridge = format!("bge2e{}n{}", std::process::id() % 10_000, n % 100);
        let subnet = format!("172.{}.{}.1/24", 31 - n % 8, std::process::id() % 200);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &subnet, "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let child = as_root("dockerd")
            .arg("--config-file")
            .arg(path.join("daemon.json"))
            .arg("--data-root")
            .arg(path.join("data"))
            .arg("--exec-root")
            .arg(path.join("exec"))
            .arg("--pidfile")
            .arg(path.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", path.join("docker.sock").display()))
            .args(["--bridge", &bridge, "--iptables=false", "--ip-masq=false"])
            .args(["--storage-driver", "vfs"])
            .args(["--containerd-namespace", "buildgrid-e2e"])
            .args(["--containerd-plugins-namespace", "buildgrid-e2e-plugins"])
            .args(extra_args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd is needed (Debian's docker.io)");
        let engine = SecondEngine {
            dir,
            child: Some(child),
            bridge,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !engine.docker(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "the second dockerd did not start: {}",
                std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        engine
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker")
            .args(["-H", &self.url()])
            .args(args)
            .output()
            .unwrap()
    }

    /// Stops the engine (and with it its containers).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = as_root("kill").arg(child.id().to_string()).status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        let _ = as_root("ip").args(["link", "del", &self.bridge]).status();
    }
}
