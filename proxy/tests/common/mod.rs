//! Test harness: real processes on loopback. Starts the demo origin and Sluice with
//! a policy written by the test, and talks to them with a real HTTP client.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built filter module; the test command builds them first (filters/build.sh).
pub fn filter(name: &str) -> PathBuf {
    let p = repo().join("filters/out").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run filters/build.sh first",
        p.display()
    );
    p
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr}");
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the demo origin on a free port with the given id.
pub fn origin(id: &str) -> Proc {
    origin_at(free_addr(), id, None)
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Starts the demo origin on `addr` with the given id, serving static files from
/// `root` when given (the origin's default root otherwise).
pub fn origin_at(addr: SocketAddr, id: &str, root: Option<&Path>) -> Proc {
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluice-origin");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p sluice-origin",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", &addr.to_string(), "--id", id, "--threads", "1"]);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn origin");
    wait_for(addr, &mut child, "origin");
    Proc { child, addr }
}

/// A running Sluice with its traffic and admin addresses.
pub struct Sluice {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The policy file.
    pub policy: PathBuf,
    /// The `[server]` section the harness wrote.
    pub server: String,
}

impl Sluice {
    /// The base URL of the traffic listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proc.addr, path)
    }

    /// A URL of the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Rewrites the policy file with the same `[server]` section and a new body.
    pub fn rewrite(&self, body: &str) {
        let tmp = self.policy.with_extension("tmp");
        std::fs::write(&tmp, format!("{}{body}", self.server)).unwrap();
        std::fs::rename(&tmp, &self.policy).unwrap();
    }

    /// `GET /admin/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        client()
            .get(self.admin_url("/admin/status"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// The log Sluice wrote so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }
}

/// Writes `body` as a policy (after a `[server]` section with free ports) and returns
/// its path, the traffic address and the admin address.
pub fn write_policy(dir: &Path, body: &str) -> (PathBuf, SocketAddr, SocketAddr, String) {
    write_policy_with(dir, body, "")
}

/// [`write_policy`] with extra `[server]` keys.
pub fn write_policy_with(
    dir: &Path,
    body: &str,
    server_extra: &str,
) -> (PathBuf, SocketAddr, SocketAddr, String) {
    let listen = free_addr();
    let admin = free_addr();
    let path = dir.join("policy.toml");
    let server = format!(
        "[server]\nlisten = [\"{listen}\"]\nadmin = \"{admin}\"\nthreads = 1\n{server_extra}\n"
    );
    let mut f = std::fs::File::create(&path).unwrap();
    write!(f, "{server}{body}").unwrap();
    (path, listen, admin, server)
}

/// Starts Sluice on a policy (without its `[server]` section, which the harness adds).
pub fn sluice(policy: &str) -> Sluice {
    sluice_with_env(policy, &[])
}

/// Starts Sluice with extra environment variables; its log goes to `dir/sluice.log`.
pub fn sluice_with_env(policy: &str, env: &[(&str, &str)]) -> Sluice {
    start(tempfile::tempdir().unwrap(), policy, "", env)
}

/// Starts Sluice with its policy in `dir` (files the policy names relatively go there).
pub fn sluice_in(dir: tempfile::TempDir, policy: &str) -> Sluice {
    start(dir, policy, "", &[])
}

/// Starts Sluice with extra `[server]` keys (e.g. `h2c = true\n`).
pub fn sluice_with_server(policy: &str, server_extra: &str) -> Sluice {
    start(tempfile::tempdir().unwrap(), policy, server_extra, &[])
}

/// Waits until something listens on `addr`.
pub fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(dir: tempfile::TempDir, policy: &str, server_extra: &str, env: &[(&str, &str)]) -> Sluice {
    let (path, listen, admin, server) = write_policy_with(dir.path(), policy, server_extra);
    let log = std::fs::File::create(dir.path().join("sluice.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["run", "--policy"])
        .arg(&path)
        .env("SLUICE_LOG", "warn,sluice::filter=info,sluice::swap=info")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sluice");
    wait_for(listen, &mut child, "sluice");
    wait_for(admin, &mut child, "sluice admin");
    Sluice {
        proc: Proc {
            child,
            addr: listen,
        },
        admin,
        dir,
        policy: path,
        server,
    }
}

/// Runs `sluice check` on policy text written as-is.
pub fn check(policy_text: &str) -> (Output, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--policy"])
        .arg(&path)
        .output()
        .unwrap();
    (out, path, dir)
}

/// A blocking HTTP client with no proxy and no redirects.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The TOML path of a filter module.
pub fn module(name: &str) -> String {
    format!("{:?}", filter(name).display().to_string())
}

/// A request header as the demo origin's `/echo` saw it.
pub fn echo_header(echo: &serde_json::Value, name: &str) -> Option<String> {
    echo["headers"]
        .as_array()?
        .iter()
        .find(|p| p[0].as_str() == Some(name))
        .and_then(|p| p[1].as_str())
        .map(str::to_string)
}

/// A policy body: pool `o` on `origin`, one filter `name` (module path as TOML, and a
/// TOML config table or `""` for none), one route through it.
pub fn one_filter(origin: &Proc, name: &str, module_toml: &str, config: &str) -> String {
    let config = if config.is_empty() {
        String::new()
    } else {
        format!("config = {config}\n")
    };
    format!(
        "[pools.o]\npeers = [\"{}\"]\n[filters.{name}]\nmodule = {module_toml}\n{config}[[routes]]\nfilters = [\"{name}\"]\npool = \"o\"\n",
        origin.addr
    )
}

/// Starts the demo origin serving static files from `root`.
pub fn origin_root(id: &str, root: &Path) -> Proc {
    origin_at(free_addr(), id, Some(root))
}
