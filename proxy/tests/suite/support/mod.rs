//! What the suite's tests share: real processes on loopback (the demo origin, Sluice with
//! a policy written by the test), a real HTTP client, raw exchanges and metric samples
//! ([`exchange`]), waiting for a state ([`wait`]), external requirements ([`require`])
//! and filters written in WebAssembly text ([`wat`]).
//!
//! # Ports: no bind-then-release race
//!
//! Tests run in parallel, each with its own processes. Picking a port by binding port 0,
//! dropping the socket and handing the number to a child is a race: between the drop and
//! the child's bind, another test (or the kernel, for an outgoing connection) can take it.
//! The suite avoids it two ways:
//!
//! - **The demo origin binds port 0 itself** and prints the address it got
//!   (`sluice-origin ... listening on http://ADDR`); [`origin`] reads that line. No port
//!   number changes hands, so there is no race at all.
//! - **Sluice** reads its addresses from the policy, which must name them before it starts
//!   (and a policy's `listen` is compared across reloads, so port 0 cannot stand in).
//!   [`spawn_on_fresh_ports`] picks fresh ports, starts the child and, when the child
//!   exits because a port was taken in the meantime ("Address already in use" in its
//!   log), starts it again on new ports (up to [`PORT_ATTEMPTS`] times). A port another
//!   process took answers connections too, so a start only counts once the child is
//!   still alive after every port answers. The same helper starts nginx and Prometheus.
//! - A **dead peer** (a pool nobody listens on) is [`DEAD_PEER`], a port below the
//!   kernel's ephemeral range: no port-0 bind of another test can ever be handed it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod exchange;
mod pki;
mod require;
mod wait;
mod wat;

pub use exchange::*;
pub use pki::*;
pub use require::*;
pub use wait::*;
pub use wat::*;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built filter module; the test command builds them first (filters/build.sh). A
/// missing module always fails the test: the suite tests the filters.
pub fn filter(name: &str) -> PathBuf {
    let p = repo().join("filters/out").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run filters/build.sh first",
        p.display()
    );
    p
}

/// A peer nobody listens on: port 9 (discard), below the ephemeral range that port-0
/// binds draw from, so no other test can be listening there.
pub const DEAD_PEER: &str = "127.0.0.1:9";

/// How many times [`spawn_on_fresh_ports`] tries fresh ports.
pub const PORT_ATTEMPTS: usize = 5;

/// A loopback address free at the time of the call: for [`spawn_on_fresh_ports`] (which
/// retries when it was taken meanwhile); anywhere else it is a bind-then-release race.
pub fn fresh_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts a child that binds `n` loopback addresses it is given (in its command line or
/// configuration): `spawn` gets fresh addresses and returns the child and the file its
/// stderr goes to. Returns once the child listens on every address; when it exits with
/// "Address already in use" (a port taken between our check and its bind), starts it
/// again on new addresses. Panics with the child's log on any other early exit.
pub fn spawn_on_fresh_ports(
    n: usize,
    what: &str,
    mut spawn: impl FnMut(&[SocketAddr]) -> (Child, PathBuf),
) -> (Child, Vec<SocketAddr>) {
    for attempt in 1..=PORT_ATTEMPTS {
        let addrs: Vec<SocketAddr> = (0..n).map(|_| fresh_addr()).collect();
        let (mut child, log) = spawn(&addrs);
        match wait_listening(&addrs, &mut child) {
            Ok(()) => return (child, addrs),
            Err(status) => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let taken = text.to_ascii_lowercase().contains("address already in use")
                    || text.contains("AddrInUse");
                let _ = child.kill();
                let _ = child.wait();
                assert!(
                    taken && attempt < PORT_ATTEMPTS,
                    "{what} did not start on {addrs:?} ({status}, attempt {attempt}):\n{text}"
                );
            }
        }
    }
    unreachable!()
}

/// Waits until something listens on every address and the child still runs then (a
/// port another process took answers too). `Err` with the reason when the child exits.
fn wait_listening(addrs: &[SocketAddr], child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited: {status}"));
        }
        pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
        if pending.is_empty() {
            // Every port answers; the child binds all of them at start, so one it could
            // not bind has made it exit by now.
            std::thread::sleep(Duration::from_millis(20));
            return match child.try_wait() {
                Ok(Some(status)) => Err(format!("exited: {status}")),
                _ => Ok(()),
            };
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {pending:?} after 30 s"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits until something listens on `addr` (a listener the test itself started).
pub fn wait_port(addr: SocketAddr) {
    until(secs(20), &format!("a listener on {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
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

/// Starts the demo origin with the given id on a port it picks itself.
pub fn origin(id: &str) -> Proc {
    origin_with(id, None)
}

/// Starts the demo origin serving static files from `root`.
pub fn origin_root(id: &str, root: &Path) -> Proc {
    origin_with(id, Some(root))
}

/// Starts the demo origin on `127.0.0.1:0` and reads the address it bound from its
/// first stderr line; the rest of its stderr is drained (and dropped) by a thread.
fn origin_with(id: &str, root: Option<&Path>) -> Proc {
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluice-origin");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p sluice-origin",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--id", id, "--threads", "1"]);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn origin");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = tx.take() {
                let _ = t.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("origin {id}: no startup line ({:?})", child.try_wait()));
    let addr = line
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("origin {id} did not start: {line}"));
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

/// How the harness starts Sluice; `Opts::default()` is what [`sluice`] does.
#[derive(Default)]
pub struct Opts<'a> {
    /// Extra `[server]` keys (e.g. `"h2c = true\n"`).
    pub server_extra: &'a str,
    /// `[server] threads`: worker threads, each with its own VMs (1 when 0).
    pub threads: usize,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// A command Sluice runs under (e.g. `["prlimit", "--nofile=256:256"]`).
    pub wrapper: &'a [&'a str],
    /// `SLUICE_LOG` (the harness's default when `None`).
    pub log: Option<&'a str>,
}

/// Starts Sluice on a policy (without its `[server]` section, which the harness adds).
pub fn sluice(policy: &str) -> Sluice {
    sluice_opts(tempfile::tempdir().unwrap(), policy, &Opts::default())
}

/// Starts Sluice with extra environment variables; its log goes to `dir/sluice.log`.
pub fn sluice_with_env(policy: &str, env: &[(&str, &str)]) -> Sluice {
    let opts = Opts {
        env,
        ..Opts::default()
    };
    sluice_opts(tempfile::tempdir().unwrap(), policy, &opts)
}

/// Starts Sluice with extra `[server]` keys (e.g. `h2c = true\n`).
pub fn sluice_with_server(policy: &str, server_extra: &str) -> Sluice {
    let opts = Opts {
        server_extra,
        ..Opts::default()
    };
    sluice_opts(tempfile::tempdir().unwrap(), policy, &opts)
}

/// Starts Sluice with `threads` worker threads: where the per-thread VM model matters
/// (each worker has its own VMs, ticks, queue consumers).
pub fn sluice_threads(policy: &str, threads: usize) -> Sluice {
    let opts = Opts {
        threads,
        ..Opts::default()
    };
    sluice_opts(tempfile::tempdir().unwrap(), policy, &opts)
}

/// Starts Sluice in `dir` as `opts` says, on fresh ports (see the module doc); its
/// stderr goes to `dir/sluice.log`.
pub fn sluice_opts(dir: tempfile::TempDir, policy: &str, opts: &Opts) -> Sluice {
    sluice_ports(dir, 0, |_| policy.to_string(), opts).0
}

/// [`sluice_opts`] with `extra` more fresh addresses Sluice listens on (e.g. a `[tls]`
/// listener): `body` writes the policy body for them, and they come back with Sluice.
pub fn sluice_ports(
    dir: tempfile::TempDir,
    extra: usize,
    body: impl Fn(&[SocketAddr]) -> String,
    opts: &Opts,
) -> (Sluice, Vec<SocketAddr>) {
    let path = dir.path().join("policy.toml");
    let log_path = dir.path().join("sluice.log");
    let threads = opts.threads.max(1);
    let mut server = String::new();
    let (child, addrs) = spawn_on_fresh_ports(2 + extra, "sluice", |addrs| {
        server = format!(
            "[server]\nlisten = [\"{}\"]\nadmin = \"{}\"\nthreads = {threads}\n{}\n",
            addrs[0], addrs[1], opts.server_extra
        );
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "{server}{}", body(&addrs[2..])).unwrap();
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = match opts.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_sluice"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_sluice")),
        };
        cmd.args(["run", "--policy"])
            .arg(&path)
            .env(
                "SLUICE_LOG",
                opts.log
                    .unwrap_or("warn,sluice::filter=info,sluice::swap=info"),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        (cmd.spawn().expect("spawn sluice"), log_path.clone())
    });
    let s = Sluice {
        proc: Proc {
            child,
            addr: addrs[0],
        },
        admin: addrs[1],
        dir,
        policy: path,
        server,
    };
    (s, addrs[2..].to_vec())
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

/// Every value of request header `name` (any case) the demo origin's `/echo` saw, in
/// order.
pub fn echo_header_all(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .map(|p| p[1].as_str().unwrap_or_default().to_string())
        .collect()
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
