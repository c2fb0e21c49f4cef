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
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluice-origin");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p sluice-origin",
        bin.display()
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(bin)
        .args(["--listen", &addr.to_string(), "--id", id, "--threads", "1"])
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
}

impl Sluice {
    /// The base URL of the traffic listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proc.addr, path)
    }
}

/// Writes `body` as a policy (after a `[server]` section with free ports) and returns
/// its path, the traffic address and the admin address.
pub fn write_policy(dir: &Path, body: &str) -> (PathBuf, SocketAddr, SocketAddr) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.join("policy.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "[server]\nlisten = [\"{listen}\"]\nadmin = \"{admin}\"\nthreads = 1\n\n{body}"
    )
    .unwrap();
    (path, listen, admin)
}

/// Starts Sluice on a policy (without its `[server]` section, which the harness adds).
pub fn sluice(policy: &str) -> Sluice {
    let dir = tempfile::tempdir().unwrap();
    let (path, listen, admin) = write_policy(dir.path(), policy);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--policy"])
        .arg(&path)
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice");
    wait_for(listen, &mut child, "sluice");
    wait_for(admin, &mut child, "sluice admin");
    Sluice {
        proc: Proc {
            child,
            addr: listen,
        },
        admin,
        dir,
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
