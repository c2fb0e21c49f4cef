//! Hardening tests: request bodies (issue #15 items 1(c), 5(a), and client-side
//! errors counted against healthy peers).
//!
//! The WAF tests run the real `filters/out/waf.wasm` with the OWASP CRS (as
//! policies/default.toml's `waf` filter) in front of a recording origin: a TcpListener
//! in the test that keeps every byte it receives, so a test can show the origin never
//! saw a blocked request, not even its request line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// An origin that records what reaches it: connections accepted and every byte read.
/// It answers each request framed by Content-Length (what Sluice sends for held bodies)
/// with `200` and the body's length and FNV-1a hash; anything else gets `200` after the
/// first read.
struct Recorder {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (b, c) = (bytes.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                std::thread::spawn(move || serve_recorded(conn, b));
            }
        });
        Recorder {
            addr,
            bytes,
            connections,
        }
    }

    fn seen(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn serve_recorded(mut conn: TcpStream, seen: Arc<Mutex<Vec<u8>>>) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // One request: its head, then its Content-Length body.
        let (head_end, len) = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                break (end + 4, len);
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    seen.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        let Some(len) = len else {
            // Not framed as Sluice frames held bodies: answer and close.
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nraw");
            return;
        };
        while buf.len() < head_end + len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    seen.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let body = &buf[head_end..head_end + len];
        let out = format!("{{\"len\":{},\"fnv\":\"{:016x}\"}}", body.len(), fnv(body));
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{out}",
            out.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
        buf.drain(..head_end + len);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The WAF as policies/default.toml runs it (CRS from its install path, block mode),
/// on one route to pool `o`, with `[limits] max_body_bytes`.
fn waf_policy(origin: SocketAddr, max_body_bytes: usize) -> String {
    format!(
        r#"[limits]
memory_mb = 256
startup_ms = 60000
callback_ms = 2000
max_body_bytes = {max_body_bytes}

[pools.o]
peers = ["{origin}"]
retries = 0

{waf}
[[routes]]
filters = ["waf"]
pool = "o"
"#,
        waf = waf_filter()
    )
}

/// Reads one HTTP/1.1 response (Content-Length framed, or until close) from a raw
/// connection: status and body.
fn read_response(conn: &mut TcpStream) -> (u16, Vec<u8>) {
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        let n = conn.read(&mut chunk).expect("response head");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = conn.read(&mut chunk).expect("response body");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            (status, buf[head_end..head_end + len].to_vec())
        }
        None => {
            let _ = conn.read_to_end(&mut buf);
            (status, buf[head_end..].to_vec())
        }
    }
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

const SQLI: &str = "id=1'+or+'1'='1";

fn form_head(addr: SocketAddr, framing: &str) -> String {
    format!(
        "POST /submit HTTP/1.1\r\nhost: {addr}\r\nuser-agent: bodies-test\r\naccept: */*\r\ncontent-type: application/x-www-form-urlencoded\r\n{framing}\r\n"
    )
}

/// Padding for form bodies: a benign field CRS passes.
fn padding(n: usize) -> String {
    let mut s = String::from("note=");
    while s.len() < n {
        s.push_str("hello+world+");
    }
    s.truncate(n);
    s
}

#[test]
fn waf_decides_on_the_whole_body_before_the_origin_sees_the_request() {
    if !require("crs", CRS_RULES) {
        return;
    }
    let rec = Recorder::start();
    let s = sluice(&waf_policy(rec.addr, 200_000));
    let addr = s.proc.addr;

    // 1. A chunked SQLi body, in two chunks.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(form_head(addr, "transfer-encoding: chunked\r\n").as_bytes())
        .unwrap();
    c.write_all(&chunk(b"a=1&")).unwrap();
    c.write_all(&chunk(SQLI.as_bytes())).unwrap();
    c.write_all(b"0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c).0, 403, "chunked SQLi blocked");

    // 2. Over 64 KiB with Content-Length, the attack at the very end.
    let body = format!("{}&{SQLI}", padding(90_000));
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(form_head(addr, &format!("content-length: {}\r\n", body.len())).as_bytes())
        .unwrap();
    c.write_all(body.as_bytes()).unwrap();
    assert_eq!(
        read_response(&mut c).0,
        403,
        ">64 KiB body, attack at the end"
    );

    // 3. Over 64 KiB chunked (unknown length), the attack at the end: never forwarded.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(form_head(addr, "transfer-encoding: chunked\r\n").as_bytes())
        .unwrap();
    for _ in 0..9 {
        c.write_all(&chunk(padding(10_000).as_bytes())).unwrap();
    }
    c.write_all(&chunk(format!("&{SQLI}").as_bytes())).unwrap();
    c.write_all(b"0\r\n\r\n").unwrap();
    let status = read_response(&mut c).0;
    assert!(status == 403 || status == 411, "chunked >64 KiB: {status}");

    // 4. A body trickled slowly: nothing reaches the origin meanwhile, and the attack
    //    in its last chunk is blocked.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(form_head(addr, "transfer-encoding: chunked\r\n").as_bytes())
        .unwrap();
    for i in 0..8 {
        c.write_all(&chunk(format!("f{i}=slow&").as_bytes()))
            .unwrap();
        // A body that trickles (the stimulus).
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            rec.connections(),
            0,
            "origin contacted while the body trickles"
        );
    }
    c.write_all(&chunk(SQLI.as_bytes())).unwrap();
    c.write_all(b"0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c).0, 403, "trickled SQLi blocked");

    // 5. Over max_body_bytes: 413, declared (Content-Length) or read (chunked).
    // (The client sends no more than Sluice reads, so no reset races the answer.)
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(form_head(addr, "content-length: 300000\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut c).0, 413, "declared over the limit");
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(form_head(addr, "transfer-encoding: chunked\r\n").as_bytes())
        .unwrap();
    for _ in 0..21 {
        c.write_all(&chunk(padding(10_000).as_bytes())).unwrap();
    }
    assert_eq!(read_response(&mut c).0, 413, "chunked over the limit");

    // None of it reached the origin: not a connection, not a byte.
    assert_eq!(rec.connections(), 0);
    assert!(
        rec.seen().is_empty(),
        "the origin saw: {:?}",
        String::from_utf8_lossy(&rec.seen()[..rec.seen().len().min(200)])
    );
    let text = client()
        .get(s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("sluice_request_body_refusals_total")
                && l.contains("reason=\"too_large\"")
                && l.ends_with(" 2")),
        "{text}"
    );

    // 6. Benign bodies arrive whole, byte for byte: small, over 64 KiB (h1, with
    //    Content-Length), trickled, and over 64 KiB over h2c.
    for size in [10usize, 70_000, 120_000] {
        let body = padding(size);
        let r = client()
            .post(s.url("/submit"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "benign body of {size} bytes");
        let v: Value = r.json().unwrap();
        assert_eq!(v["len"], size);
        assert_eq!(v["fnv"], format!("{:016x}", fnv(body.as_bytes())));
    }
    let before = rec.connections();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(form_head(addr, "transfer-encoding: chunked\r\n").as_bytes())
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        let part = format!("f{i}=slow&");
        sent.extend_from_slice(part.as_bytes());
        c.write_all(&chunk(part.as_bytes())).unwrap();
        // A body that trickles (the stimulus).
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(rec.connections(), before, "upstream held by a slow body");
    }
    c.write_all(b"0\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut c);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["len"], sent.len());
    assert_eq!(v["fnv"], format!("{:016x}", fnv(&sent)));
    drop(s);
}

#[test]
fn waf_holds_bodies_over_h2_too() {
    if !require("crs", CRS_RULES) {
        return;
    }
    let rec = Recorder::start();
    let s = sluice_with_server(&waf_policy(rec.addr, 200_000), "h2c = true\n");
    let h2 = reqwest::blocking::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Attack at the end of a body over 64 KiB (content-length), and in a body of
    // unknown length (streamed, no content-length): both blocked, nothing forwarded.
    let body = format!("{}&{SQLI}", padding(90_000));
    let r = h2
        .post(s.url("/submit"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 403);
    let stream = std::io::Cursor::new(format!("a=1&{SQLI}").into_bytes());
    let r = h2
        .post(s.url("/submit"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::blocking::Body::new(stream))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(rec.connections(), 0, "the origin was contacted");
    // Benign: arrives whole.
    let body = padding(120_000);
    let r = h2
        .post(s.url("/submit"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["len"], body.len());
    assert_eq!(v["fnv"], format!("{:016x}", fnv(body.as_bytes())));
}

/// `n` raw requests with an empty chunked body on one keep-alive connection: every one
/// 200, and the origin got an empty body each time (no stray terminating chunk).
fn empty_chunked_in_a_row(s: &Sluice, n: usize) {
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    for i in 0..n {
        let req = format!(
            "POST /echo?i={i} HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            s.proc.addr
        );
        c.write_all(req.as_bytes()).unwrap();
        let (status, body) = read_response(&mut c);
        assert_eq!(
            status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["body_len"], 0, "request {i}");
        assert_eq!(echo["query"], format!("i={i}"), "request {i}");
    }
}

#[test]
fn empty_chunked_bodies_on_a_filtered_route_stay_clean() {
    let o = origin("o1");
    let s = sluice(&one_filter(
        &o,
        "h",
        &module("headers.wasm"),
        "{ request = { set = { x-h = \"1\" } } }",
    ));
    empty_chunked_in_a_row(&s, 60);
}

#[test]
fn empty_chunked_bodies_on_a_streaming_route_stay_clean() {
    let o = origin("o1");
    let body = one_filter(
        &o,
        "h",
        &module("headers.wasm"),
        "{ request = { set = { x-h = \"1\" } } }",
    )
    .replace("[[routes]]", "request_body = \"stream\"\n[[routes]]");
    let s = sluice(&body);
    empty_chunked_in_a_row(&s, 60);
    // The streaming route really streams: a large body still arrives whole.
    let big = "z".repeat(300_000);
    let r = client()
        .post(s.url("/echo"))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["body_len"], big.len());
}

#[test]
fn client_side_body_errors_do_not_eject_a_healthy_peer() {
    let o = origin("o1");
    let s = sluice(&format!(
        "[pools.o]\npeers = [\"{}\"]\nretries = 0\n[pools.o.ejection]\nfailures = 2\nduration_ms = 60000\n[[routes]]\npool = \"o\"\n",
        o.addr
    ));
    let head = |framing: &str| {
        format!(
            "POST /echo HTTP/1.1\r\nhost: {}\r\n{framing}\r\n",
            s.proc.addr
        )
    };
    for i in 0..6 {
        let mut c = TcpStream::connect(s.proc.addr).unwrap();
        match i % 3 {
            // Malformed chunk size.
            0 => {
                c.write_all(head("transfer-encoding: chunked\r\n").as_bytes())
                    .unwrap();
                c.write_all(b"5\r\nhello\r\nzz\r\nbad\r\n").unwrap();
            }
            // Disconnect mid-upload (chunked).
            1 => {
                c.write_all(head("transfer-encoding: chunked\r\n").as_bytes())
                    .unwrap();
                c.write_all(b"100\r\nonly a part").unwrap();
            }
            // Disconnect mid-upload (Content-Length).
            _ => {
                c.write_all(head("content-length: 100000\r\n").as_bytes())
                    .unwrap();
                c.write_all(&[b'x'; 1000]).unwrap();
            }
        }
        // A client that goes away mid-body after a pause: the stimulus.
        std::thread::sleep(Duration::from_millis(300));
        let _ = c.shutdown(std::net::Shutdown::Both);
        drop(c);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The peer is healthy: still used, and nothing was counted against it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let r = client().get(s.url("/echo")).send().unwrap();
        assert_eq!(r.status(), 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric_with(&s, "sluice_upstream_errors_total", "pool=\"o\""),
        0.0
    );
    assert_eq!(
        metric_with(&s, "sluice_upstream_ejections_total", "pool=\"o\""),
        0.0
    );
    assert!(metric_with(&s, "sluice_downstream_errors_total", "pool=\"o\"") >= 1.0);
}

/// Sluice with one route, no filter, to a new [`Recorder`].
fn empty_chain_to_recorder() -> (Recorder, Sluice) {
    let rec = Recorder::start();
    let s = sluice(&format!(
        "[pools.o]\npeers = [\"{}\"]\n\n[[routes]]\npool = \"o\"\n",
        rec.addr
    ));
    (rec, s)
}

/// Request framings that two HTTP/1 parsers could read two ways (request smuggling) are
/// refused with 400 before anything reaches the origin: differing or unparseable
/// `Content-Length` values, `Transfer-Encoding` on HTTP/1.0, a final coding that is not
/// `chunked`, a name with a space before its colon. A request with both framings is
/// read by `Transfer-Encoding`, so what hides behind its `Content-Length` never becomes
/// a request of its own; identical duplicate lengths are one length (RFC 9110 §8.6).
#[test]
fn ambiguous_request_framings_never_reach_the_origin() {
    let (rec, s) = empty_chain_to_recorder();
    let send = |raw: &str| {
        let mut c = TcpStream::connect(s.proc.addr).unwrap();
        c.write_all(raw.as_bytes()).unwrap();
        read_response(&mut c).0
    };
    for (what, raw) in [
        (
            "two different lengths",
            "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde",
        ),
        (
            "two lengths in one field",
            "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 4, 5\r\n\r\nabcde",
        ),
        (
            "a length that is no number",
            "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 4x\r\n\r\nabcd",
        ),
        (
            "a signed length",
            "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: +4\r\n\r\nabcd",
        ),
        (
            "chunked on HTTP/1.0",
            "POST /a HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "a final coding that is not chunked",
            "POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "an unknown coding",
            "POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "a space before the colon",
            "POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
    ] {
        assert_eq!(send(raw), 400, "{what}");
        assert!(
            rec.seen().is_empty(),
            "{what}: the origin saw {:?}",
            String::from_utf8_lossy(&rec.seen())
        );
    }
    // Both framings: the chunked body is the body; the bytes the length would have left
    // over are not a second request.
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    c.write_all(
        b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_response(&mut c).0, 200, "both framings");
    // ... and the connection, with the left-over bytes in it, is closed.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    assert!(c.read_to_end(&mut rest).is_ok(), "closed, not kept alive");
    assert!(
        rest.is_empty(),
        "no second answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = String::from_utf8_lossy(&rec.seen()).to_string();
    assert!(!seen.contains("/smuggled"), "the origin saw {seen:?}");
    // Identical duplicates are one length.
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    c.write_all(
        b"POST /same HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nabcde",
    )
    .unwrap();
    let (status, body) = read_response(&mut c);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["len"], 5);
}

/// A chunked request body whose size line is not a size ends the request with a 400,
/// never the origin's answer to a body cut short, and the connection closes; the next
/// request on a new connection is served.
#[test]
fn bogus_request_chunk_sizes_end_the_request() {
    let (_origin, s) = empty_chain_to_recorder();
    for (what, body) in [
        ("not hex", "zz\r\nabc\r\n0\r\n\r\n"),
        (
            "a size overflowing 64 bits",
            "1ffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        ("a negative size", "-3\r\nabc\r\n0\r\n\r\n"),
        ("no line end", "3 abc 0\r\n\r\n"),
    ] {
        let (status, got) = exchange(
            s.proc.addr,
            format!("POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{body}")
                .as_bytes(),
        );
        assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&got));
    }
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    c.write_all(b"POST /ok HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        .unwrap();
    assert_eq!(read_response(&mut c).0, 200);
}
