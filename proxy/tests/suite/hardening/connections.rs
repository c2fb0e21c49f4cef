//! Hardening tests: connections (issue #15, items 3 and 5's stop signals). Slow and
//! silent clients, connection limits, the open-file limit, a connection storm's memory,
//! SIGTERM/SIGQUIT and a port already in use; raw sockets against the real proxy.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A policy routing everything to `origin`, with `extra` sections appended.
fn routed(origin: &Proc, extra: &str) -> String {
    format!(
        "[pools.o]\npeers = [\"{}\"]\n\n[[routes]]\npool = \"o\"\n\n{extra}",
        origin.addr
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Waits up to `within` for the peer to close `s` (EOF or reset); the time it took.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if start.elapsed() >= within {
                    return None;
                }
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

/// Reads one HTTP/1 response with a `content-length` (head and body) within `within`.
fn read_response(s: &mut TcpStream, within: Duration) -> Option<String> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&got[..end + 4 + len]).into_owned());
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Trickles a byte every 200 ms into each of `conns` (non-blocking, each with part of
/// a head sent) for up to `within` of `start`: when each was closed (after `start`),
/// for those that were.
fn trickle_until_closed(
    conns: &mut [TcpStream],
    start: Instant,
    within: Duration,
) -> Vec<Duration> {
    let mut closed: Vec<Option<Duration>> = vec![None; conns.len()];
    let mut buf = [0u8; 256];
    while start.elapsed() < within && closed.iter().any(Option::is_none) {
        for (s, c) in conns
            .iter_mut()
            .zip(&mut closed)
            .filter(|(_, c)| c.is_none())
        {
            let gone = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            } || s.write(b"x").is_err();
            if gone {
                *c = Some(start.elapsed());
            }
        }
        // Measures when each connection closes: a sampling period, not a wait.
        std::thread::sleep(Duration::from_millis(200));
    }
    closed.into_iter().flatten().collect()
}

fn get(s: &mut TcpStream, path: &str) -> Option<String> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes())
        .ok()?;
    read_response(s, Duration::from_secs(5))
}

fn admin_answers(sluice: &Sluice) -> bool {
    client()
        .get(sluice.admin_url("/admin/status"))
        .timeout(Duration::from_secs(3))
        .send()
        .is_ok_and(|r| r.status() == 200)
}

fn signal(sluice: &Sluice, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &sluice.proc.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

fn wait_exit(
    sluice: &mut Sluice,
    within: Duration,
) -> Option<(std::process::ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(st) = sluice.proc.child.try_wait().unwrap() {
            return Some((st, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

const SHORT: &str = "[timeouts]\nheader_ms = 1000\nkeepalive_ms = 1000\nh2_preface_ms = 1000\nbody_idle_ms = 1000\n";

/// 200 slowloris connections trickle a request head a byte at a time, faster than any
/// per-read timeout: every one is closed within `header_ms` (1 s) plus slack.
#[test]
fn slowloris_heads_are_closed_after_header_ms() {
    let origin = origin("slow");
    let sluice = sluice(&routed(&origin, SHORT));
    let n = 200;
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = connect(sluice.proc.addr);
            s.write_all(b"GET /echo HTTP/1.1\r\nhost: x\r\n").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let closed = trickle_until_closed(&mut conns, Instant::now(), Duration::from_secs(6));
    assert_eq!(
        closed.len(),
        n,
        "slowloris connections still open after 6 s"
    );
    let last = closed.iter().max().unwrap();
    eprintln!("slowloris: {n} connections closed, last after {last:?} (header_ms 1000)");
    assert!(
        *last < Duration::from_millis(2500),
        "last closed after {last:?}"
    );
    assert!(
        metric(
            &sluice,
            "sluice_connection_timeouts_total{phase=\"header\"}"
        ) >= n as f64
    );
}

/// On kept-alive connections the next request's head has the same deadline as the
/// first's, however its bytes came: a head trickled after a partial first read is
/// closed within `header_ms`, while heads read whole keep no deadline, so requests
/// answered after longer than `header_ms` (a slow origin) are not cut, before or after
/// a trickled one on another connection.
#[test]
fn kept_alive_connections_trickling_their_next_head_are_closed_after_header_ms() {
    let (slow, _) = counting_origin(|mut r, mut w| {
        while read_request(&mut r) {
            std::thread::sleep(Duration::from_millis(1500));
            if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
                .is_err()
            {
                return;
            }
        }
    });
    let sluice = sluice(&format!(
        "[pools.o]\npeers = [\"{slow}\"]\n\n[[routes]]\npool = \"o\"\n\n{SHORT}"
    ));
    let n = 20;
    let mut conns: Vec<TcpStream> = (0..n).map(|_| connect(sluice.proc.addr)).collect();
    for s in &mut conns {
        s.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    }
    for s in &mut conns {
        let r = read_response(s, Duration::from_secs(5)).expect("first answer");
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("slow"), "{r}");
    }
    // Half of them send their next head whole, the others a part of it, then a byte
    // every 200 ms.
    let (whole, trickled) = conns.split_at_mut(n / 2);
    for s in whole.iter_mut() {
        s.write_all(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    }
    let start = Instant::now();
    for s in trickled.iter_mut() {
        s.write_all(b"GET /b HTTP/1.1\r\nhost: x\r\n").unwrap();
        s.set_nonblocking(true).unwrap();
    }
    let closed = trickle_until_closed(trickled, start, Duration::from_secs(5));
    assert_eq!(
        closed.len(),
        n / 2,
        "trickling connections still open after 5 s"
    );
    let last = closed.iter().max().unwrap();
    eprintln!("kept-alive slowloris: closed, last after {last:?} (header_ms 1000)");
    assert!(
        *last < Duration::from_millis(2500),
        "last closed after {last:?}"
    );
    for s in whole.iter_mut() {
        let r = read_response(s, Duration::from_secs(5)).expect("second answer");
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("slow"), "{r}");
    }
    // All at once: one after the other, the last would idle past `keepalive_ms`.
    for s in whole.iter_mut() {
        s.write_all(b"GET /c HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    }
    for s in whole.iter_mut() {
        let r = read_response(s, Duration::from_secs(5)).expect("third answer, kept alive");
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("slow"), "{r}");
    }
    assert!(
        metric(
            &sluice,
            "sluice_connection_timeouts_total{phase=\"header\"}"
        ) >= (n / 2) as f64
    );
}

/// With h2c on, an 18-byte HTTP/1.0 request (shorter than the 24-byte h2 preface
/// Pingora waits for) is answered.
#[test]
fn short_http10_request_is_answered_with_h2c() {
    let origin = origin("h10");
    let sluice = sluice_with_server(&routed(&origin, SHORT), "h2c = true\n");
    let mut s = connect(sluice.proc.addr);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1."), "no answer: {resp:?}");
    // HTTP/2 with prior knowledge still works.
    let h2 = reqwest::blocking::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(sluice.url("/echo")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

/// A connection that sends nothing is closed, with h2c on (the preface wait) and off.
#[test]
fn silent_connections_are_closed() {
    let origin = origin("silent");
    for server in ["h2c = true\n", ""] {
        let sluice = sluice_with_server(&routed(&origin, SHORT), server);
        let mut s = connect(sluice.proc.addr);
        let took = closed_within(&mut s, Duration::from_secs(5));
        eprintln!("silent connection ({server:?}): closed after {took:?}");
        assert!(
            took.is_some_and(|t| t < Duration::from_millis(2500)),
            "silent connection ({server:?}) still open: {took:?}"
        );
    }
}

/// An idle keep-alive connection is closed after `keepalive_ms`, not kept forever.
#[test]
fn idle_keepalive_is_closed_after_keepalive_ms() {
    let origin = origin("ka");
    let sluice = sluice(&routed(&origin, SHORT));
    let mut s = connect(sluice.proc.addr);
    let r = get(&mut s, "/echo").expect("first response");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = get(&mut s, "/echo").expect("kept alive for a second request");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let took = closed_within(&mut s, Duration::from_secs(5));
    eprintln!("idle keep-alive closed after {took:?} (keepalive_ms 1000)");
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(800) && t < Duration::from_millis(2500)),
        "idle keep-alive: {took:?}"
    );
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    out
}

/// A HEADERS frame ending the stream `id` (a GET of `/`, HPACK static-table entries;
/// with `authority` a literal `:authority`, without it a request missing both
/// `:authority` and `Host`, which the server must refuse).
fn h2_get(id: u32, authority: Option<&str>) -> Vec<u8> {
    // :method GET, :scheme http, :path / (static table 2, 6, 4).
    let mut block = vec![0x82, 0x86, 0x84];
    if let Some(a) = authority {
        // Literal without indexing, name = static entry 1 (:authority).
        block.push(0x01);
        block.push(a.len() as u8);
        block.extend_from_slice(a.as_bytes());
    }
    let len = block.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x1, 0x5];
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&block);
    frame
}

/// Reads HTTP/2 frames from `s` for up to `within`: (type, stream id, payload) of each,
/// and whether the server closed the connection.
fn h2_frames(s: &mut TcpStream, within: Duration) -> (Vec<(u8, u32, Vec<u8>)>, bool) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    let mut closed = false;
    while let Some(left) = within.checked_sub(start.elapsed()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while got.len() >= at + 9 {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got.len() < at + 9 + len {
            break;
        }
        let id =
            u32::from_be_bytes([got[at + 5], got[at + 6], got[at + 7], got[at + 8]]) & !(1 << 31);
        frames.push((got[at + 3], id, got[at + 9..at + 9 + len].to_vec()));
        at += 9 + len;
    }
    (frames, closed)
}

/// Sluice serves HTTP/2 streams in its own accept loop (`listener/h2.rs`); it keeps
/// Pingora's bound on malformed streams: a request with no authority is refused and
/// its siblings go on, but the 32nd such stream closes the connection.
#[test]
fn h2_malformed_streams_close_the_connection_at_the_bound() {
    let origin = origin("h2bad");
    let sluice = sluice_with_server(&routed(&origin, ""), "h2c = true\n");
    // Below the bound: 20 refused streams, then a valid one is answered 200.
    let mut s = connect(sluice.proc.addr);
    let mut out = h2_preface();
    for i in 0..20 {
        out.extend(h2_get(1 + 2 * i, None));
    }
    out.extend(h2_get(41, Some("sluice.test")));
    s.write_all(&out).unwrap();
    let (frames, closed) = h2_frames(&mut s, Duration::from_secs(3));
    assert!(!closed, "closed below the bound");
    // A response HEADERS frame on stream 41 whose first field is `:status 200`
    // (HPACK static entry 8).
    assert!(
        frames
            .iter()
            .any(|(t, id, p)| *t == 1 && *id == 41 && p.first() == Some(&0x88)),
        "no 200 on the valid stream: {:?}",
        frames.iter().map(|(t, id, _)| (t, id)).collect::<Vec<_>>()
    );
    // At the bound: the connection is closed.
    let mut s = connect(sluice.proc.addr);
    let mut out = h2_preface();
    for i in 0..40 {
        out.extend(h2_get(1 + 2 * i, None));
    }
    s.write_all(&out).unwrap();
    let (_, closed) = h2_frames(&mut s, Duration::from_secs(5));
    assert!(
        closed,
        "40 malformed streams and the connection is still open"
    );
}

/// An HTTP/2 connection with no stream in flight is closed after `keepalive_ms`; one
/// that keeps asking is not.
#[test]
fn idle_h2_connection_is_closed_after_keepalive_ms() {
    let origin = origin("h2idle");
    let sluice = sluice_with_server(&routed(&origin, SHORT), "h2c = true\n");
    let mut s = connect(sluice.proc.addr);
    s.write_all(&h2_preface()).unwrap();
    s.write_all(&h2_get(1, Some("sluice.test"))).unwrap();
    let start = Instant::now();
    let (frames, closed) = h2_frames(&mut s, Duration::from_secs(5));
    let took = start.elapsed();
    assert!(
        frames
            .iter()
            .any(|(t, id, p)| *t == 1 && *id == 1 && p.first() == Some(&0x88)),
        "no 200 before the idle close"
    );
    eprintln!("idle h2 connection closed after {took:?} (keepalive_ms 1000)");
    assert!(
        closed && took >= Duration::from_millis(800) && took < Duration::from_millis(3000),
        "idle h2 connection: closed {closed} after {took:?}"
    );
}

/// A request body that stops arriving fails after `body_idle_ms`.
#[test]
fn stalled_body_is_cut_after_body_idle_ms() {
    let origin = origin("body");
    let sluice = sluice(&routed(&origin, SHORT));
    let mut s = connect(sluice.proc.addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc")
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(5));
    eprintln!("stalled body: closed after {took:?} (body_idle_ms 1000)");
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(2500)),
        "{took:?}"
    );
}

/// Past `max_per_client` a connection is answered 503 at once and closed; the admin API
/// answers meanwhile; a freed slot serves again.
#[test]
fn per_client_limit_answers_503_early() {
    let origin = origin("perclient");
    let sluice = sluice(&routed(
        &origin,
        "[connections]\nmax_per_client = 5\n[timeouts]\nheader_ms = 20000\n",
    ));
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect(sluice.proc.addr)).collect();
    until_value(
        secs(10),
        "the 5 held connections open",
        || metric(&sluice, "sluice_connections_open"),
        |n| *n >= 5.0,
    );
    let start = Instant::now();
    let mut extra = connect(sluice.proc.addr);
    let r = get(&mut extra, "/echo").unwrap_or_default();
    eprintln!(
        "6th connection answered in {:?}: {:?}",
        start.elapsed(),
        r.lines().next()
    );
    assert!(r.starts_with("HTTP/1.1 503"), "6th connection: {r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        admin_answers(&sluice),
        "admin API while the client is at its limit"
    );
    assert!(metric(&sluice, "sluice_overload_refused_total{reason=\"client\"}") >= 1.0);
    drop(held.pop());
    until_value(
        secs(10),
        "the dropped connection closed",
        || metric(&sluice, "sluice_connections_open"),
        |n| *n <= 4.0,
    );
    let mut again = connect(sluice.proc.addr);
    let r = get(&mut again, "/echo").unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 200"), "after a slot freed: {r:?}");
}

/// Past `connections.max` on the listener, the same.
#[test]
fn per_listener_limit_answers_503_early() {
    let origin = origin("perlistener");
    let sluice = sluice(&routed(
        &origin,
        "[connections]\nmax = 3\n[timeouts]\nheader_ms = 20000\n",
    ));
    let _held: Vec<TcpStream> = (0..3).map(|_| connect(sluice.proc.addr)).collect();
    until_value(
        secs(10),
        "the 3 held connections open",
        || metric(&sluice, "sluice_connections_open"),
        |n| *n >= 3.0,
    );
    let mut extra = connect(sluice.proc.addr);
    let r = get(&mut extra, "/echo").unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 503"), "4th connection: {r:?}");
    assert!(admin_answers(&sluice));
    assert!(
        metric(
            &sluice,
            "sluice_overload_refused_total{reason=\"listener\"}"
        ) >= 1.0
    );
}

/// Waits (10 s at most) until `n` HTTP/1 requests are being served (`what` names them
/// in the failure).
fn until_in_flight(sluice: &Sluice, n: usize, what: &str) {
    until_value(
        secs(10),
        what,
        || metric(sluice, "sluice_h1_requests_in_flight"),
        |v| *v >= n as f64,
    );
}

/// Past `max_h1_in_flight` requests being served, the next request gets 503 at once.
#[test]
fn h1_in_flight_limit_answers_503() {
    let origin = origin("inflight");
    let sluice = sluice(&routed(
        &origin,
        "[connections]\nmax_h1_in_flight = 2\n[timeouts]\nbody_idle_ms = 20000\n",
    ));
    // Two uploads in flight, their bodies unfinished.
    let mut uploads: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(sluice.proc.addr);
            s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab")
                .unwrap();
            s
        })
        .collect();
    until_in_flight(&sluice, 2, "the 2 uploads in flight");
    let mut third = connect(sluice.proc.addr);
    let r = get(&mut third, "/echo").unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 503"), "third request: {r:?}");
    // An upgrade request is refused the same way, not handed on to pingora-proxy.
    let mut upgrade = connect(sluice.proc.addr);
    upgrade
        .write_all(
            b"GET /echo HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        )
        .unwrap();
    let r = read_response(&mut upgrade, Duration::from_secs(5)).unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 503"), "upgrade request: {r:?}");
    assert!(
        metric(
            &sluice,
            "sluice_overload_refused_total{reason=\"h1_in_flight\"}"
        ) >= 1.0
    );
    for s in &mut uploads {
        s.write_all(b"cdefghij").unwrap();
        let r = read_response(s, Duration::from_secs(5)).unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 200"), "upload: {r:?}");
    }
    let mut fourth = connect(sluice.proc.addr);
    let r = get(&mut fourth, "/echo").unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 200"), "after the uploads: {r:?}");
}

/// Under a low open-file limit, a flood of connections leaves room for the admin API
/// (Pingora alone stops accepting anything, admin included, at EMFILE).
#[test]
fn admin_answers_at_the_open_file_limit() {
    let origin = origin("nofile");
    let opts = Opts {
        wrapper: &["prlimit", "--nofile=256:256"],
        log: Some("warn"),
        ..Opts::default()
    };
    let proxy = sluice_opts(
        tempfile::tempdir().unwrap(),
        &routed(&origin, "[timeouts]\nheader_ms = 30000\n"),
        &opts,
    );
    let (listen, admin) = (proxy.proc.addr, proxy.admin);
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect_timeout(&listen, Duration::from_secs(1)) {
            flood.push(s);
        }
    }
    // Lets the flood land on the proxy (the stimulus: at the fd limit there is no state
    // to wait for, accepts fail).
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let ok = client()
        .get(format!("http://{admin}/admin/status"))
        .timeout(Duration::from_secs(3))
        .send()
        .is_ok_and(|r| r.status() == 200);
    eprintln!(
        "admin API with 400 connections flooding a 256-fd process: {ok} in {:?}",
        start.elapsed()
    );
    assert!(ok, "admin API unreachable at the fd limit");
    drop(flood);
    let r = until_value(
        secs(10),
        "a request served after the flood",
        || get(&mut connect(listen), "/echo").unwrap_or_default(),
        |r| r.starts_with("HTTP/1.1 200"),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "after the flood: {r:?}");
}

/// An upload in flight survives SIGTERM: the listener closes at once, the upload
/// completes, the process exits 0 once drained (before the grace period ends).
#[test]
fn sigterm_finishes_an_upload_in_flight() {
    let origin = origin("term");
    let mut sluice = sluice_with_server(
        &routed(&origin, "[timeouts]\nbody_idle_ms = 10000\n"),
        "grace_period_ms = 8000\n",
    );
    let total = 400_000usize;
    let mut s = connect(sluice.proc.addr);
    s.write_all(
        format!("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {total}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    s.write_all(&vec![b'a'; total / 2]).unwrap();
    until_in_flight(&sluice, 1, "the upload in flight");
    signal(&sluice, "TERM");
    until(secs(5), "the listener closed after SIGTERM", || {
        TcpStream::connect_timeout(&sluice.proc.addr, Duration::from_secs(1)).is_err()
    });
    let refused = TcpStream::connect_timeout(&sluice.proc.addr, Duration::from_secs(1)).is_err();
    assert!(refused, "the listener still accepts after SIGTERM");
    assert!(
        sluice.proc.child.try_wait().unwrap().is_none(),
        "exited with the upload in flight"
    );
    s.write_all(&vec![b'b'; total - total / 2]).unwrap();
    let r = read_response(&mut s, Duration::from_secs(5)).unwrap_or_default();
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "upload after SIGTERM: {:?}",
        r.lines().next()
    );
    let (status, after) =
        wait_exit(&mut sluice, Duration::from_secs(5)).expect("no exit after drain");
    eprintln!("SIGTERM: upload completed, exit {status} {after:?} after the response");
    assert!(status.success(), "exit status {status}");
}

/// SIGQUIT exits at once, even with a request in flight.
#[test]
fn sigquit_exits_at_once() {
    let origin = origin("quit");
    let mut sluice = sluice_with_server(
        &routed(&origin, "[timeouts]\nbody_idle_ms = 10000\n"),
        "grace_period_ms = 8000\n",
    );
    let mut s = connect(sluice.proc.addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        .unwrap();
    until_in_flight(&sluice, 1, "the upload in flight");
    signal(&sluice, "QUIT");
    let exited = wait_exit(&mut sluice, Duration::from_secs(4));
    eprintln!("SIGQUIT: {exited:?}");
    let (_, took) = exited.expect("still running 4 s after SIGQUIT");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

/// `sluice run` on a port already in use exits with an error naming the address.
#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[server]\nlisten = [\"{addr}\"]\nadmin = \"{}\"\n[pools.o]\npeers = [\"127.0.0.1:9\"]\n[[routes]]\npool = \"o\"\n",
            // Free now; should another process take it meanwhile, the error names it
            // instead, and the assertion below says so.
            fresh_addr()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--policy"])
        .arg(&policy)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "still running or exit 0: {err}"
    );
    assert!(
        err.contains(&addr.to_string()) && err.contains("in use"),
        "stderr: {err}"
    );
}

/// A storm of 3,000 idle keep-alive connections, then closed: resident memory comes back
/// near its baseline.
#[test]
fn memory_returns_after_a_connection_storm() {
    let origin = origin("storm");
    let sluice = sluice(&routed(
        &origin,
        "[timeouts]\nkeepalive_ms = 60000\n[connections]\nmax_per_client = 10000\n",
    ));
    let pid = sluice.proc.child.id();
    // Warm up: threads, pools, the first requests.
    for _ in 0..50 {
        let mut s = connect(sluice.proc.addr);
        get(&mut s, "/echo").unwrap();
    }
    // Lets the allocator settle before the RSS baseline (a measurement, not a state).
    std::thread::sleep(Duration::from_millis(1500));
    let baseline = rss_kib(pid);
    let n = 3000;
    let mut storm = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(sluice.proc.addr);
        let r = get(&mut s, "/echo").unwrap_or_else(|| panic!("request {i} failed"));
        assert!(r.starts_with("HTTP/1.1 200"));
        storm.push(s);
    }
    let during = rss_kib(pid);
    drop(storm);
    let mut after = during;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(500));
        after = rss_kib(pid);
        if after <= baseline + (during - baseline) / 4 {
            break;
        }
    }
    eprintln!(
        "storm of {n}: RSS baseline {baseline} KiB, during {during} KiB ({} KiB/conn), after {after} KiB ({:?} after close)",
        (during.saturating_sub(baseline)) / n as u64,
        start.elapsed()
    );
    assert!(during > baseline + 10_000, "the storm did not show in RSS");
    assert!(
        after <= baseline + (during - baseline) / 4,
        "RSS stayed up: baseline {baseline} KiB, during {during}, after {after}"
    );
}

/// What reaches the route and what the edge refuses first (docs/POLICY.md): bytes
/// clients should encode but nginx passes on reach the origin (raw `<` `>` `\\` `` ` ``
/// percent-encoded for the parser); an unknown HTTP version and `CONNECT` are refused
/// before routing and counted.
#[test]
fn refused_heads_are_answered_and_counted() {
    let origin = origin("heads");
    let sluice = sluice(&routed(&origin, ""));
    let send = |head: &str| {
        let mut s = connect(sluice.proc.addr);
        s.write_all(head.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).to_string()
    };
    for target in [
        "/a\"b",
        "/{x}",
        "/a|b",
        "/a^b",
        "/a<b",
        "/a>b",
        "/a`b",
        "/q?x=\"y\"",
        "/q?x=a\\b",
    ] {
        let got = send(&format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(
            got.contains("x-origin-id: heads"),
            "{target}: not routed: {got:?}"
        );
    }
    // A backslash reaches the parser encoded, then `[paths] backslashes` (reject) decides.
    let got = send("GET /a\\b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        got.starts_with("HTTP/1.1 400") && got.contains("backslash in the path"),
        "/a\\b: {got:?}"
    );
    // `OPTIONS *` names no path: no route matches it.
    let got = send("OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        got.starts_with("HTTP/1.1 404") && got.contains("no route"),
        "OPTIONS *: {got:?}"
    );
    for version in ["HTTP/3.0", "HTTP/1.2"] {
        let got = send(&format!("GET / {version}\r\nHost: x\r\n\r\n"));
        assert!(got.starts_with("HTTP/1.1 400"), "{version}: {got:?}");
    }
    let got = send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 405"), "CONNECT: {got:?}");
    // Lines no route can take, answered before the parser (as nginx and Envoy do).
    for (line, status, why) in [
        ("CONNECT example.com HTTP/1.1", "400", "host:port"),
        ("CONNECT 1.2.3.4:80 HTTP/1.1", "405", "CONNECT"),
        ("GET /a b HTTP/1.1", "400", "space in the request target"),
        ("GET \\ HTTP/1.1", "400", "not a path"),
        ("GET index.html HTTP/1.1", "400", "not a path"),
        ("GET /i.html:80?a=b#tag HTTP/1.1", "400", "fragment"),
    ] {
        let got = send(&format!("{line}\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}")) && got.contains(why),
            "{line}: {got:?}"
        );
    }
    // HTTP/0.9 (no version): closed unanswered, a 0.9 client reads no status line.
    for line in ["GET /", "GET / "] {
        assert_eq!(send(&format!("{line}\r\n")), "", "{line:?}");
    }
    // A Host naming no host.
    for host in ["", "localhost%00", "a/b"] {
        let got = send(&format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        assert!(
            got.starts_with("HTTP/1.1 400") && got.contains("invalid Host header"),
            "Host {host:?}: {got:?}"
        );
    }
    // None of them reached the origin or a filter; each is counted by reason.
    let count = |reason: &str| {
        metric(
            &sluice,
            &format!("sluice_bad_requests_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count("bad_head"), 2.0);
    assert_eq!(count("connect"), 2.0);
    assert_eq!(count("target_form"), 3.0);
    assert_eq!(count("target_space"), 1.0);
    assert_eq!(count("fragment"), 1.0);
    assert_eq!(count("http09"), 2.0);
    assert_eq!(count("host"), 3.0);
}

/// Sluice on two worker threads with `balance_connections = true` (and `server_extra`),
/// routing `policy_extra` as [`routed`] does.
fn spread_sluice(origin: &Proc, server_extra: &str, policy_extra: &str) -> Sluice {
    let server_extra = format!("balance_connections = true\n{server_extra}");
    let opts = Opts {
        server_extra: &server_extra,
        threads: 2,
        ..Opts::default()
    };
    sluice_opts(
        tempfile::tempdir().unwrap(),
        &routed(origin, policy_extra),
        &opts,
    )
}

/// The client connections open on worker `w` (`sluice_worker_connections`).
fn on_worker(sluice: &Sluice, w: usize) -> f64 {
    metric(
        sluice,
        &format!("sluice_worker_connections{{worker=\"{w}\"}}"),
    )
}

/// With `balance_connections`, new connections go to the worker thread with the fewest
/// open (Pingora alone picks one at random, often unevenly): 16 keep-alive connections
/// on 2 workers are 8 and 8, each still served after its move, and the counts fall
/// back to 0 once they close.
#[test]
fn connections_are_spread_evenly_over_the_worker_threads() {
    let origin = origin("spread");
    let sluice = spread_sluice(&origin, "", "");
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..16 {
        let mut c = connect(sluice.proc.addr);
        let r = get(&mut c, "/echo").unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 200"), "connection {i}: {r:?}");
        held.push(c);
    }
    let on = |w: usize| on_worker(&sluice, w);
    assert_eq!((on(0), on(1)), (8.0, 8.0), "connections per worker");
    for (i, c) in held.iter_mut().enumerate() {
        let r = get(c, "/echo").unwrap_or_default();
        assert!(
            r.starts_with("HTTP/1.1 200"),
            "connection {i}, again: {r:?}"
        );
    }
    drop(held);
    until_value(
        secs(10),
        "the closed connections uncounted",
        || on(0) + on(1),
        |n| *n == 0.0,
    );
}

/// With `balance_connections` on two workers, uploads in flight on both (some of them
/// moved off the worker Pingora picked) all finish after SIGTERM, and Sluice exits 0.
#[test]
fn sigterm_finishes_uploads_spread_over_the_workers() {
    let origin = origin("termspread");
    let mut sluice = spread_sluice(
        &origin,
        "grace_period_ms = 8000\n",
        "[timeouts]\nbody_idle_ms = 10000\n",
    );
    let total = 100_000usize;
    let mut uploads: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = connect(sluice.proc.addr);
            // One request first: the connection is placed before the next one comes.
            let r = get(&mut s, "/echo").unwrap_or_default();
            assert!(r.starts_with("HTTP/1.1 200"), "connection {i}: {r:?}");
            s.write_all(
                format!("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {total}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            s.write_all(&vec![b'a'; total / 2]).unwrap();
            s
        })
        .collect();
    until_in_flight(&sluice, 8, "the uploads in flight");
    let on = |w: usize| on_worker(&sluice, w);
    assert_eq!((on(0), on(1)), (4.0, 4.0), "uploads per worker");
    signal(&sluice, "TERM");
    until(secs(5), "the listener closed after SIGTERM", || {
        TcpStream::connect_timeout(&sluice.proc.addr, Duration::from_secs(1)).is_err()
    });
    for (i, s) in uploads.iter_mut().enumerate() {
        s.write_all(&vec![b'b'; total - total / 2]).unwrap();
        let r = read_response(s, Duration::from_secs(5)).unwrap_or_default();
        assert!(
            r.starts_with("HTTP/1.1 200"),
            "upload {i} after SIGTERM: {:?}",
            r.lines().next()
        );
    }
    let (status, _) = wait_exit(&mut sluice, Duration::from_secs(5)).expect("no exit after drain");
    assert!(status.success(), "exit status {status}");
}

/// The connection fields of a response follow the client: HTTP/1.1 stays open unless
/// the client asks to close; HTTP/1.0 closes unless it asks to keep alive; every response
/// says which in `Connection`, and carries one `Date`, Sluice's (the origin's, sent too,
/// is replaced).
#[test]
fn connection_and_date_fields_follow_the_client() {
    let origin = origin("conn-fields");
    let sluice = sluice(&routed(&origin, ""));
    let addr = sluice.proc.addr;
    let one = |name: &str, r: &str| -> Vec<String> {
        head_fields(r.as_bytes())
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    };
    for (request, keep) in [
        ("GET /echo HTTP/1.1\r\nhost: x\r\n\r\n", true),
        (
            "GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            false,
        ),
        ("GET /echo HTTP/1.0\r\nhost: x\r\n\r\n", false),
        (
            "GET /echo HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n",
            true,
        ),
    ] {
        let mut c = connect(addr);
        c.write_all(request.as_bytes()).unwrap();
        let r = read_response(&mut c, Duration::from_secs(5)).unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 200"), "{request:?}: {r:?}");
        let want = if keep { "keep-alive" } else { "close" };
        assert_eq!(one("connection", &r), [want], "{request:?}: {r:?}");
        assert_eq!(one("date", &r).len(), 1, "one Date: {r:?}");
        if keep {
            // The same connection serves the next request.
            c.write_all(request.as_bytes()).unwrap();
            let again = read_response(&mut c, Duration::from_secs(5)).unwrap_or_default();
            assert!(
                again.starts_with("HTTP/1.1 200"),
                "{request:?} again: {again:?}"
            );
        } else {
            assert!(
                closed_within(&mut c, Duration::from_secs(5)).is_some(),
                "{request:?}: closed after the response"
            );
        }
    }
}

/// An absolute-form target whose authority differs from `Host` is refused with 400 (two
/// hosts a request could be routed by); the same target with the matching `Host` is
/// served.
#[test]
fn an_absolute_target_disagreeing_with_host_is_refused() {
    let origin = origin("authority");
    let sluice = sluice(&routed(&origin, ""));
    let send = |raw: &str| {
        let mut c = connect(sluice.proc.addr);
        c.write_all(raw.as_bytes()).unwrap();
        read_response(&mut c, Duration::from_secs(5)).unwrap_or_default()
    };
    let r = send("GET http://a.test/echo HTTP/1.1\r\nhost: b.test\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    let r = send("GET http://a.test/echo HTTP/1.1\r\nhost: a.test\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
}
