//! Engines reached over TLS and over SSH: a second engine the test starts with TLS on 127.0.0.1
//! and certificates it makes, and the machine's engine through an `sshd` the test starts with
//! keys it makes. Each is added as a server, refused with a clear error when the credentials are
//! wrong (storing nothing), and deployed to.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::engines::{Cleanup, SecondEngine, answering, containers, free_ports};
use crate::fixtures::{Source, create_app, ensure_base_image};
use crate::support::{Buildgrid, run_ok};

/// A certificate authority made in the test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate and its key, for `names` (an IP address or DNS name each).
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "buildgrid e2e");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `files` (name, content) into `dir` and returns their paths as strings.
fn write_files<const N: usize>(dir: &Path, files: [(&str, &str); N]) -> [String; N] {
    files.map(|(name, content)| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    })
}

/// The error `buildgrid <args>` ends with: one line, which says `expected`.
#[track_caller]
fn refused(buildgrid: &Buildgrid, args: &[&str], expected: &str) -> String {
    let output = buildgrid.cli(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?} was not refused");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains(expected), "{args:?}: {stderr}");
    first.to_owned()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[track_caller]
fn no_servers(buildgrid: &Buildgrid) {
    assert_eq!(
        buildgrid.cli_ok(&["server", "list"]),
        "",
        "a server was stored"
    );
    let kept = std::fs::read_dir(buildgrid.data_dir().join("servers"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(kept, 0, "files of a refused server were kept");
}

#[test]
fn an_engine_over_tls_is_added_with_copies_of_its_files_and_deployed_to() {
    ensure_base_image();
    let ca = Ca::new("buildgrid e2e CA");
    let other_ca = Ca::new("another CA");
    let (engine_cert, engine_key) = ca.issue(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let (stranger_cert, stranger_key) =
        other_ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let certs = tempfile::tempdir().unwrap();
    let [ca_pem, other_ca_pem, engine_cert, engine_key] = write_files(
        certs.path(),
        [
            ("ca.pem", &ca.pem),
            ("other-ca.pem", &other_ca.pem),
            ("engine-cert.pem", &engine_cert),
            ("engine-key.pem", &engine_key),
        ],
    );
    let user = tempfile::tempdir().unwrap();
    let [user_ca, cert, key, stranger_cert, stranger_key] = write_files(
        user.path(),
        [
            ("ca.pem", &ca.pem),
            ("cert.pem", &client_cert),
            ("key.pem", &client_key),
            ("stranger-cert.pem", &stranger_cert),
            ("stranger-key.pem", &stranger_key),
        ],
    );
    let port = free_ports();
    let second = SecondEngine::start_tls(
        port,
        Path::new(&ca_pem),
        Path::new(&engine_cert),
        Path::new(&engine_key),
    );
    let url = format!("tcp://127.0.0.1:{port}");
    let buildgrid = Buildgrid::spawn();

    let add = |ca: &str, cert: &str, key: &str| -> Vec<String> {
        [
            "server",
            "add",
            "secure",
            "--docker",
            &url,
            "--tls-ca",
            ca,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let stranger = add(&user_ca, &stranger_cert, &stranger_key);
    refused(
        &buildgrid,
        &strs(&stranger),
        "the engine refused the client certificate",
    );
    let wrong_ca = add(&other_ca_pem, &cert, &key);
    refused(
        &buildgrid,
        &strs(&wrong_ca),
        "the engine's certificate is not signed by the CA given with --tls-ca",
    );
    refused(
        &buildgrid,
        &[
            "server",
            "add",
            "secure",
            "--docker",
            &url,
            "--tls-ca",
            &user_ca,
            "--tls-cert",
            &cert,
        ],
        "TLS needs --tls-ca, --tls-cert and --tls-key together: --tls-key missing",
    );
    refused(
        &buildgrid,
        &["server", "add", "secure", "--docker", &url],
        "the engine speaks TLS: add it with --tls-ca, --tls-cert and --tls-key",
    );
    no_servers(&buildgrid);

    let added = buildgrid.cli_ok(&strs(&add(&user_ca, &cert, &key)));
    assert!(added.contains("server secure added: Docker"), "{added}");
    let kept = buildgrid.data_dir().join("servers/secure");
    for name in ["ca.pem", "cert.pem", "key.pem"] {
        let mode = std::fs::metadata(kept.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // Deploys use the copies, not the user's files.
    drop(user);

    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/secure", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/secure", "off"]);
    buildgrid.cli_ok(&["build", "acme/secure", "--wait"]);
    let base = free_ports();
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/secure",
        "edge",
        "--command",
        "exec httpd -f -p $PORT -h /www",
        "--port",
        &format!("{base}:8080"),
        "--network-host",
        "--health-http",
        "/",
        "--stop-grace",
        "1",
        "--server",
        "secure",
    ]);
    let deployed = buildgrid.cli_ok(&["deploy", "acme/secure"]);
    assert!(deployed.contains("deploy 1 succeeded"), "{deployed}");
    assert!(deployed.contains("[secure edge] pulled"), "{deployed}");
    assert_eq!(answering(base).len(), 1, "edge answers on 127.0.0.1");
    let listed = buildgrid.cli_ok(&["server", "list"]);
    assert!(
        listed.contains("reachable, 1 containers of buildgrid"),
        "{listed}"
    );
    let running = second.docker(&["ps", "--format", "{{.Names}}"]);
    assert!(
        String::from_utf8_lossy(&running.stdout).contains("bg.acme.secure.edge.d1.r0"),
        "on the TLS engine"
    );
}

/// An `sshd` the test starts on 127.0.0.1 that lets the current user in with a key it makes.
struct Sshd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    user: String,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let user = run_ok("id", &["-un"]).trim().to_owned();
        for key in ["client", "stranger"] {
            keygen(&dir.path().join(key));
        }
        std::fs::copy(
            dir.path().join("client.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let mut sshd = Sshd {
            dir,
            child: None,
            port: free_ports(),
            user,
        };
        sshd.restart_with_new_host_key();
        sshd
    }

    /// Starts sshd (again, on the same port) with a host key it has not had before.
    fn restart_with_new_host_key(&mut self) {
        self.stop();
        let path = self.dir.path();
        let _ = std::fs::remove_file(path.join("host_key"));
        let _ = std::fs::remove_file(path.join("host_key.pub"));
        keygen(&path.join("host_key"));
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             AllowUsers {user}\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n",
            port = self.port,
            dir = path.display(),
            user = self.user,
        );
        std::fs::write(path.join("sshd_config"), config).unwrap();
        if run_ok("id", &["-u"]).trim() == "0" {
            // Where sshd, run as root, drops its privileges to.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let log = std::fs::File::create(path.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(path.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/sshd is needed: install Debian's openssh-server (see .ci/run)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(path.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("sshd.log"));
            eprintln!("--- sshd log ---\n{}", log.unwrap_or_default());
        }
    }
}

fn keygen(path: &Path) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "buildgrid-e2e", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen is needed: install Debian's openssh-client (see .ci/run)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn an_engine_over_ssh_is_added_with_its_key_and_deployed_to() {
    ensure_base_image();
    let _cleanup = Cleanup("acme/viassh");
    let mut sshd = Sshd::start();
    let url = sshd.url();
    let key = sshd.key("client");
    let key = key.to_str().unwrap();
    let stranger = sshd.key("stranger");
    let buildgrid = Buildgrid::spawn();

    refused(
        &buildgrid,
        &[
            "server",
            "add",
            "viassh",
            "--docker",
            &url,
            "--ssh-key",
            stranger.to_str().unwrap(),
        ],
        "Permission denied (publickey)",
    );
    refused(
        &buildgrid,
        &[
            "server",
            "add",
            "viassh",
            "--docker",
            "unix:///var/run/docker.sock",
            "--ssh-key",
            key,
        ],
        "--ssh-key is for ssh:// URLs",
    );
    no_servers(&buildgrid);

    let added = buildgrid.cli_ok(&[
        "server",
        "add",
        "viassh",
        "--docker",
        &url,
        "--ssh-key",
        key,
    ]);
    assert!(added.contains("server viassh added: Docker"), "{added}");
    // Trusted on first use (ssh may store the host name hashed).
    let known_hosts = buildgrid.data_dir().join("ssh/known_hosts");
    run_ok(
        "ssh-keygen",
        &[
            "-F",
            &format!("[127.0.0.1]:{}", sshd.port),
            "-f",
            known_hosts.to_str().unwrap(),
        ],
    );
    let listed = buildgrid.cli_ok(&["server", "list"]);
    assert!(
        listed.contains(&format!("viassh\t{url}\tDocker")) && listed.contains("\treachable, "),
        "{listed}"
    );

    let source = Source::example();
    let (_upstream, git_url) = source.bare_clone();
    create_app(&buildgrid, "acme/viassh", &git_url);
    buildgrid.cli_ok(&["app", "auto-deploy", "acme/viassh", "off"]);
    buildgrid.cli_ok(&["build", "acme/viassh", "--wait"]);
    buildgrid.cli_ok(&[
        "service",
        "add",
        "acme/viassh",
        "worker",
        "--command",
        "exec sleep 600",
        "--health-running",
        "1",
        "--stop-grace",
        "1",
        "--server",
        "viassh",
    ]);
    let deployed = buildgrid.cli_ok(&["deploy", "acme/viassh"]);
    assert!(deployed.contains("deploy 1 succeeded"), "{deployed}");
    assert_eq!(
        containers("acme/viassh"),
        vec!["bg.acme.viassh.worker.d1.r0".to_owned()],
        "on the machine's engine, through ssh"
    );

    // The machine now shows another host key: refused, with what to do.
    sshd.restart_with_new_host_key();
    let printed = refused(
        &buildgrid,
        &["server", "add", "again", "--docker", &url, "--ssh-key", key],
        "the SSH host key of 127.0.0.1 changed since buildgrid first trusted it",
    );
    assert!(printed.contains("remove line 1 of "), "{printed}");
}
