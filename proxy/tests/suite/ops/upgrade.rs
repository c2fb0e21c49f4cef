//! Zero-downtime binary upgrade: `sluice run --upgrade` takes the listening sockets
//! over from the running Sluice (Pingora's hand-over on `[server] upgrade_sock`) while
//! clients keep sending requests, on new connections and on keep-alive ones. No request
//! fails, and requests in flight on the old process (a slow origin) finish there before
//! it exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// How long the slow origin holds each response: longer than Pingora's 5 s overlap, so
/// the old process still has these requests when it stops accepting.
const SLOW: Duration = Duration::from_secs(7);

/// An origin that answers every request after [`SLOW`].
fn slow_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(SLOW);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                );
            });
        }
    });
    addr
}

/// One request on a new connection (as many clients do): the status, 0 when the
/// connection failed or closed without an answer.
fn request(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: upgrade.test\r\nConnection: close\r\n\r\n");
    if c.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    status_of(&out)
}

/// A keep-alive client: requests one after the other on one connection until the
/// server answers `Connection: close` (then a new one). Each answer counts in `ok`, each
/// request without a whole answer in `failed`.
fn keep_alive_client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<(usize, u64, u16)>>>,
) {
    let mut n = 0u64;
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Relaxed) {
        n += 1;
        let c = match conn.take() {
            Some(c) => c,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(c) => c,
                Err(_) => {
                    failed.lock().unwrap().push((99, n, 0));
                    continue;
                }
            },
        };
        let mut c = c;
        let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
        let answered = (|| -> Option<(u16, bool)> {
            c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: upgrade.test\r\n\r\n")
                .ok()?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if c.read(&mut byte).ok()? == 0 {
                    return None;
                }
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            let mut body = vec![0u8; len];
            c.read_exact(&mut body).ok()?;
            Some((status_of(&head), text.contains("connection: close")))
        })();
        match answered {
            Some((200, close)) => {
                ok.fetch_add(1, Relaxed);
                if !close {
                    conn = Some(c);
                }
            }
            Some((status, _)) => failed.lock().unwrap().push((99, n, status)),
            None => failed.lock().unwrap().push((99, n, 0)),
        }
    }
}

#[test]
fn an_upgrade_takes_the_sockets_over_with_no_failed_request() {
    let o = origin("upgrade");
    let slow = slow_origin();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let extra = format!("upgrade_sock = {:?}\n", sock.display().to_string());
    let body = format!(
        "[pools.o]\npeers = [\"{}\"]\n[pools.slow]\npeers = [\"{slow}\"]\nread_timeout_ms = 30000\n\
         [[routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\npool = \"slow\"\n\
         [[routes]]\npool = \"o\"\n",
        o.addr
    );
    let mut old = sluice_opts(
        dir,
        &body,
        &Opts {
            server_extra: &extra,
            log: Some("info"),
            ..Opts::default()
        },
    );
    let addr = old.proc.addr;
    let old_pid = old.proc.child.id();
    assert_eq!(old.status()["pid"], old_pid);
    assert_eq!(request(addr, "/echo/warm"), 200);

    // Clients: four loops of requests, each on a new connection, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    n += 1;
                    match request(addr, &format!("/echo/{i}/{n}")) {
                        200 => ok.fetch_add(1, Relaxed),
                        status => {
                            failed.lock().unwrap().push((i, n, status));
                            0
                        }
                    };
                }
            })
        })
        .collect();
    // And two on keep-alive connections: the old process's idle ones get a last call.
    let keep_alive: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || keep_alive_client(addr, stop, ok, failed))
        })
        .collect();
    // Requests in flight on the old process when it hands over.
    let in_flight: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let started = Instant::now();
                (request(addr, &format!("/slow/{i}")), started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = ok.load(Relaxed);
    assert!(before > 0, "the clients run");

    // The new binary (the same one here) takes over.
    let new_log = old.dir.path().join("sluice-new.log");
    let new = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--upgrade", "--policy"])
        .arg(&old.policy)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_log).unwrap())
        .spawn()
        .unwrap();
    let mut new = Proc { child: new, addr };
    let new_pid = new.child.id();
    until(secs(30), "the new process serving the admin API", || {
        client()
            .get(old.admin_url("/admin/status"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|s| s["pid"] == new_pid)
    });
    assert!(
        new.child.try_wait().unwrap().is_none(),
        "{}",
        std::fs::read_to_string(&new_log).unwrap()
    );
    // The old process finishes what it has and exits by itself, 0.
    let deadline = Instant::now() + secs(30);
    let exit = loop {
        if let Some(status) = old.proc.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the old process still runs:\n{}",
            old.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "old process: {exit}\n{}", old.log());
    let old_log = old.log();
    assert!(
        old_log.contains("SIGUSR2: handing the listening sockets"),
        "{old_log}"
    );
    for t in in_flight {
        let (status, took) = t.join().unwrap();
        assert_eq!(status, 200, "a request in flight on the old process");
        assert!(took >= SLOW, "{took:?}");
    }
    // The new process serves alone for a while.
    let handed = ok.load(Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Relaxed);
    for c in clients.into_iter().chain(keep_alive) {
        c.join().unwrap();
    }
    let total = ok.load(Relaxed);
    let failed = failed.lock().unwrap().clone();
    println!(
        "upgrade: {total} requests answered 200 ({before} before, {} after the old process exited), {} failed",
        total - handed,
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests (client, n, status): {failed:?}\nold:\n{old_log}\nnew:\n{}",
        std::fs::read_to_string(&new_log).unwrap()
    );
    assert!(total > handed, "the new process answered");
    assert_eq!(request(addr, "/echo/after"), 200);
    let _ = new.child.kill();
    let _ = new.child.wait();
}
