//! A one-node Garage (an S3-compatible object store) on loopback for one test: its own data and
//! metadata directories, a key, and a bucket the key may read, write and own. Killed and removed
//! when dropped. Test crates include this file with
//! `#[path = "../tests/garage.rs"] mod garage;`.
//!
//! Needs the `garage` binary in PATH or in `$HOME/.cargo/bin`:
//! `cargo install garage --version 2.5.0 --locked`.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "cargo install garage --version 2.5.0 --locked";
/// Garage's own startup takes well under a second; this bounds a machine under heavy load.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running one-node Garage; the fields are what an S3 client needs to reach its bucket.
pub struct Garage {
    /// `http://127.0.0.1:<s3 port>`.
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// A bucket the key may read, write and own.
    pub bucket: String,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Child,
    // Dropped last: the directories go once the server is stopped.
    dir: tempfile::TempDir,
}

impl Garage {
    /// Starts a server, gives its node the whole layout, and creates a key and a bucket.
    pub fn start() -> Garage {
        let binary = find_binary().unwrap_or_else(|| {
            panic!("no `garage` in PATH or in $HOME/.cargo/bin; the S3 tests start a one-node Garage: {INSTALL}")
        });
        // Free ports are picked by binding port 0 and letting go, so another process may take
        // one before Garage binds it: start again with new ports when that happens.
        let mut attempt = 1;
        let mut garage = loop {
            match Garage::spawn(&binary) {
                Ok(garage) => break garage,
                Err(log) if attempt < 5 && log.contains("Address already in use") => attempt += 1,
                Err(log) => panic!("garage server did not start:\n{log}"),
            }
        };
        let node = garage.run(&["node", "id", "--quiet"]);
        let node = node.split('@').next().unwrap_or_default().trim().to_owned();
        garage.run(&[
            "layout",
            "assign",
            "--zone",
            "dc1",
            "--capacity",
            "1G",
            &node,
        ]);
        garage.run(&["layout", "apply", "--version", "1"]);
        let key = garage.run(&["key", "create", "test-key"]);
        garage.access_key = field(&key, "Key ID:");
        garage.secret_key = field(&key, "Secret key:");
        garage.bucket = "test-bucket".to_owned();
        garage.create_bucket("test-bucket");
        garage
    }

    /// Creates another bucket the key may read, write and own.
    pub fn create_bucket(&self, name: &str) {
        self.run(&["bucket", "create", name]);
        let key = self.access_key.as_str();
        self.run(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", key,
        ]);
    }

    /// The environment an AWS SDK (or `buildgrid --blob-store s3://…`) needs to reach this
    /// server with the key.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    /// Writes the config and starts `garage server`, then waits until it answers over RPC and
    /// its S3 port is open; the server's log when it exits or finds a port taken.
    fn spawn(binary: &Path) -> Result<Garage, String> {
        let dir = tempfile::tempdir().expect("a temporary directory for garage");
        let [rpc, s3, admin] = free_ports();
        let config = dir.path().join("garage.toml");
        let meta = dir.path().join("meta");
        let data = dir.path().join("data");
        let region = "garage";
        fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{region}"
api_bind_addr = "127.0.0.1:{s3}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
                meta = meta.display(),
                data = data.display(),
                secret = random_hex(32),
                token = random_hex(32),
            ),
        )
        .expect("writing garage.toml");
        let log = dir.path().join("server.log");
        let log_file = File::create(&log).expect("creating garage's log file");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .env("NO_COLOR", "1")
            // These would replace the config's secrets.
            .env_remove("GARAGE_RPC_SECRET")
            .env_remove("GARAGE_RPC_SECRET_FILE")
            .env_remove("GARAGE_ADMIN_TOKEN")
            .env_remove("GARAGE_ADMIN_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("garage's log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        let mut garage = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: region.to_owned(),
            access_key: String::new(),
            secret_key: String::new(),
            bucket: String::new(),
            binary: binary.to_owned(),
            config,
            log,
            child,
            dir,
        };
        // Ready once its log says that it (not another process) listens on the S3 port, and
        // `garage status` gets an answer over RPC. A port taken by another process ends the
        // server (RPC) or only its S3 API (which leaves the server running).
        let listening = format!("S3 API server listening on {}", garage.endpoint);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = garage.server_log();
            let exited = garage.child.try_wait().expect("polling garage server");
            if exited.is_some() || log.contains("Address already in use") {
                return Err(log);
            }
            if log.contains(&listening) && garage.command(&["status"]).status.success() {
                return Ok(garage);
            }
            if Instant::now() > deadline {
                panic!(
                    "garage server did not answer within {START_TIMEOUT:?}:\n{}",
                    garage.server_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a `garage` command against this server; its standard output. Panics with the
    /// command's output and the server's log when it fails.
    fn run(&self, args: &[&str]) -> String {
        let Output {
            status,
            stdout,
            stderr,
        } = self.command(args);
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        if !status.success() {
            panic!(
                "garage {} failed ({status}):\n{stdout}{}\nserver log:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&stderr),
                self.server_log()
            );
        }
        stdout
    }

    fn command(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            // These would replace the config's RPC settings.
            .env_remove("GARAGE_RPC_HOST")
            .env_remove("GARAGE_RPC_SECRET")
            .env_remove("GARAGE_RPC_SECRET_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("running garage {args:?}: {error}"))
    }

    fn server_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "garage server log ({}):\n{}",
                self.endpoint,
                self.server_log()
            );
        }
    }
}

/// `garage` from PATH, else from `$HOME/.cargo/bin` (where `cargo install` puts it).
fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|dir| dir.join("garage"))
        .find(|candidate| candidate.is_file())
}

/// Three distinct free loopback ports: all bound at once, then let go.
fn free_ports() -> [u16; 3] {
    let listeners =
        [(); 3].map(|()| TcpListener::bind("127.0.0.1:0").expect("binding a loopback port"));
    listeners.map(|listener| listener.local_addr().expect("a bound port").port())
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0; bytes];
    File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut random))
        .expect("reading /dev/urandom");
    random.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The value after `label` on its line of a `garage` command's output.
fn field(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no `{label}` in garage's output:\n{output}"))
}
