use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use buildgrid_store::Store;
use sha2::{Digest as _, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_buildgrid");

/// A `buildgrid serve` process on a free loopback port, killed when dropped.
pub struct Buildgrid {
    pub data: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Child,
    /// Variables given to `serve` and to every command run through [`Buildgrid::cli`].
    env: Vec<(String, String)>,
}

impl Buildgrid {
    pub fn spawn() -> Buildgrid {
        let data = tempfile::tempdir().unwrap();
        Buildgrid::spawn_in(data)
    }

    pub fn spawn_in(data: tempfile::TempDir) -> Buildgrid {
        let (child, addr) = start(data.path(), &[], &[]);
        Buildgrid {
            data,
            addr,
            child,
            env: Vec::new(),
        }
    }

    /// A server started with extra variables and `serve` arguments; the variables go to
    /// every command [`Buildgrid::cli`] runs too (e.g. an object store's).
    pub fn spawn_with_env_and_args(env: &[(&str, &str)], args: &[&str]) -> Buildgrid {
        let data = tempfile::tempdir().unwrap();
        let (child, addr) = start(data.path(), env, args);
        Buildgrid {
            data,
            addr,
            child,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Starts the server again on the same data directory with these variables (kept for
    /// later commands) and `args`.
    pub fn restart_with_env_and_args(&mut self, env: &[(&str, &str)], args: &[&str]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart_with_args(args);
    }

    /// Starts the server again on the same data directory and variables, with `args`.
    pub fn restart_with_args(&mut self, args: &[&str]) {
        self.kill();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (child, addr) = start(self.data.path(), &env, args);
        self.child = child;
        self.addr = addr;
    }

    /// A server started with extra `serve` arguments (e.g. `--metrics-listen`).
    pub fn spawn_with_args(args: &[&str]) -> Buildgrid {
        let data = tempfile::tempdir().unwrap();
        let (child, addr) = start(data.path(), &[], args);
        Buildgrid {
            data,
            addr,
            child,
            env: Vec::new(),
        }
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the server to exit by itself; its status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A server with extra environment variables (e.g. another `DOCKER_HOST`).
    pub fn spawn_with_env(env: &[(&str, &str)]) -> Buildgrid {
        let data = tempfile::tempdir().unwrap();
        let (child, addr) = start(data.path(), env, &[]);
        Buildgrid {
            data,
            addr,
            child,
            env: Vec::new(),
        }
    }

    /// Runs `buildgrid <args> --data <data>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--data")
            .arg(self.data_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "buildgrid {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A new admin token.
    pub fn token(&self) -> String {
        self.cli_ok(&["token", "create", "--name", "e2e", "--scope", "admin"])
            .trim()
            .to_owned()
    }

    /// Registers the machine's Docker engine as the server `local`.
    pub fn add_local_server(&self) {
        self.cli_ok(&[
            "server",
            "add",
            "local",
            "--docker",
            "unix:///var/run/docker.sock",
        ]);
    }

    /// Creates the user `name`, a member of `namespace`; returns its web password.
    pub fn web_user(&self, name: &str, namespace: &str) -> String {
        let created = self.cli_ok(&["user", "create", name]);
        self.cli_ok(&["namespace", "add-member", namespace, name]);
        created
            .lines()
            .find_map(|l| l.strip_prefix("web password (shown once): "))
            .expect("the web password is printed once")
            .to_owned()
    }

    /// Lets anyone pull the namespace's images (namespaces start private).
    pub fn make_public(&self, namespace: &str) {
        self.cli_ok(&["namespace", "public", namespace]);
    }

    /// Stops the server the hard way, as a crash or power loss would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A server running as process 1 of a PID namespace of its own, as in a container: through
    /// `unshare --pid --fork --mount-proc --kill-child` (needs root).
    pub fn spawn_as_pid1() -> Buildgrid {
        let data = tempfile::tempdir().unwrap();
        let (child, addr) = start_in(data.path(), &[], &[], PID1);
        Buildgrid {
            data,
            addr,
            child,
            env: Vec::new(),
        }
    }

    /// Kills the server of [`Buildgrid::spawn_as_pid1`] with SIGKILL (`kill -9`, as a crash
    /// would) and starts it again the same way: process 1 of a new PID namespace again.
    pub fn restart_as_pid1(&mut self) {
        let (serve, _) = self.pid1_serve();
        run_ok("kill", &["-9", &serve.to_string()]);
        // `unshare` ends with its child.
        let _ = self.child.wait();
        let (child, addr) = start_in(self.data.path(), &[], &[], PID1);
        self.child = child;
        self.addr = addr;
    }

    /// The process id of the server of [`Buildgrid::spawn_as_pid1`] (the child of `unshare`)
    /// here, and in its own PID namespace.
    pub fn pid1_serve(&self) -> (u32, u32) {
        let unshare = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
        let serve: u32 = children
            .split_whitespace()
            .next()
            .expect("unshare has started serve")
            .parse()
            .unwrap();
        let status = std::fs::read_to_string(format!("/proc/{serve}/status")).unwrap();
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last())
            .expect("the status names the process ids of its namespaces")
            .parse()
            .unwrap();
        (serve, inner)
    }

    /// Starts the server again on the same data directory (on a new port).
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr) = start(self.data.path(), &[], &[]);
        self.child = child;
        self.addr = addr;
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn import(&self, archive: &Path, repo: &str, tag: &str) -> Output {
        Command::new(BIN)
            .arg("import")
            .arg(archive)
            .args(["--repo", repo, "--tag", tag, "--data"])
            .arg(self.data_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    /// Imports and returns the manifest digest it printed.
    pub fn import_ok(&self, archive: &Path, repo: &str, tag: &str) -> String {
        let output = self.import(archive, repo, tag);
        assert!(
            output.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        stdout
            .split_whitespace()
            .nth(1)
            .expect("import prints `<repo>:<tag> <digest>`")
            .to_owned()
    }

    /// Row counts of every table and the blob files: what a refused request must not change.
    pub fn fingerprint(&self) -> (Vec<(String, i64)>, Vec<String>) {
        let store = Store::open(&self.data_dir()).unwrap();
        let counts = store.db.row_counts().unwrap();
        let mut files = Vec::new();
        walk(&self.data_dir().join("blobs"), &mut files);
        files.sort();
        (counts, files)
    }
}

/// What runs `serve` as process 1 of a new PID namespace (with its own `/proc`), killed when
/// `unshare` is.
const PID1: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

/// Starts `buildgrid serve` on a free port with its data in `<dir>/data`.
fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (Child, SocketAddr) {
    start_in(dir, env, args, &[])
}

/// [`start`], through the command `wrapper` (with its arguments) when it is not empty.
fn start_in(
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    wrapper: &[&str],
) -> (Child, SocketAddr) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(BIN);
            command
        }
        None => Command::new(BIN),
    };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("data"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start buildgrid serve");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Keep reading what it prints later (the admin token), so its stdout never breaks.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("buildgrid listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line of buildgrid serve: {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn walk(dir: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path.display().to_string());
        }
    }
}

impl Drop for Buildgrid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.data.path().join("serve.log"));
            eprintln!("--- buildgrid serve log ---\n{}", log.unwrap_or_default());
        }
    }
}

/// Runs a command and returns its output; panics with what to install when it is missing.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; install it (see .ci/run) — these tests need it")
        })
}

#[track_caller]
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A Docker image built in the test from `FROM scratch` and Debian's busybox-static, saved with
/// `docker save`, and removed from the engine when dropped.
pub struct TestImage {
    pub tag: String,
    pub archive: PathBuf,
    _dir: tempfile::TempDir,
}

static IMAGE_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestImage {
    /// `message` is what the image prints when run; `random_mib` adds a layer of random bytes.
    pub fn build(message: &str, random_mib: usize) -> TestImage {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "/bin/busybox is missing: install Debian's busybox-static (see .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context");
        std::fs::create_dir(&context).unwrap();
        std::fs::copy(busybox, context.join("busybox")).unwrap();
        let mut dockerfile = String::from(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        );
        if random_mib > 0 {
            let mut bytes = vec![0u8; random_mib << 20];
            let mut state =
                IMAGE_COUNTER.load(Ordering::Relaxed) as u64 ^ std::process::id() as u64;
            for chunk in bytes.chunks_mut(8) {
                // xorshift: incompressible, and cheap to make
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let n = chunk.len();
                chunk.copy_from_slice(&state.to_le_bytes()[..n]);
            }
            std::fs::write(context.join("random.bin"), bytes).unwrap();
            dockerfile.push_str("COPY random.bin /data/random.bin\n");
        }
        dockerfile.push_str(&format!("CMD [\"/bin/echo\", \"{message}\"]\n"));
        std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        let n = IMAGE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("buildgrid-e2e-{}-{n}:latest", std::process::id());
        // Without the cache, no step reuses an intermediate image another test's `docker rmi`
        // may remove at the same moment ("unable to find image sha256:…").
        run_ok(
            "docker",
            &[
                "build",
                "-q",
                "--no-cache",
                "-t",
                &tag,
                context.to_str().unwrap(),
            ],
        );
        let archive = dir.path().join("image.tar");
        run_ok("docker", &["save", "-o", archive.to_str().unwrap(), &tag]);
        TestImage {
            tag,
            archive,
            _dir: dir,
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = run("docker", &["rmi", "-f", "--no-prune", &self.tag]);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Sends `request` as raw bytes (no client normalises the path) and returns the response.
pub fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    status_and_body(&response)
}

/// The status (0 without one) and the body of a raw HTTP response.
pub fn status_and_body(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
