//! Sluice's own HTTP/1 request loop (proxy/src/forward, issue #18): the per-thread
//! upstream pool never hands out a connection the origin closed while it was parked,
//! `Expect: 100-continue` is answered by Sluice before it reads the body, and upgrade
//! requests (WebSocket) still get their two-way stream through pingora-proxy.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// A policy sending everything to `peer` (one peer: a failed attempt has no retry).
fn to(peer: SocketAddr) -> String {
    format!("[pools.o]\npeers = [\"{peer}\"]\n\n[[routes]]\npool = \"o\"\n")
}

/// An origin that closes every keep-alive connection 100 ms after its last response,
/// as origins with short keep-alive timeouts do; counts the connections it accepted.
fn closing_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    counting_origin(|mut r, mut w| loop {
        r.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if !read_request(&mut r) {
            return; // idle past 100 ms, or gone: close
        }
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    })
}

#[test]
fn a_connection_the_origin_closed_while_parked_is_never_reused() {
    let (origin, accepted) = closing_origin();
    let s = sluice_threads(&to(origin), 1);
    let c = client();
    for i in 0..4 {
        // POST is not idempotent: a stale connection would be a 502, never retried.
        let r = c
            .post(s.url("/upload"))
            .body(format!("body {i}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().unwrap(), "ok");
        // The origin closes the parked connection meanwhile.
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "one connection per request"
    );
    // Back to back, the parked connection is reused.
    for _ in 0..5 {
        let r = c.post(s.url("/upload")).body("again").send().unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "back-to-back requests share one"
    );
}

/// An origin that answers each request after `delay` (keep-alive) and counts the
/// connections it accepted.
fn slow_origin(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    counting_origin(move |mut r, mut w| {
        while read_request(&mut r) {
            std::thread::sleep(delay);
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if w.write_all(ok).is_err() {
                return;
            }
        }
    })
}

#[test]
fn many_parked_connections_are_all_reused_and_none_is_opened_anew() {
    // 24 requests at once open 24 connections; parked together, every later request
    // finds one (the pool keeps them oldest first and takes the newest).
    let (origin, accepted) = slow_origin(Duration::from_millis(300));
    let s = sluice_threads(&to(origin), 1);
    std::thread::scope(|scope| {
        for i in 0..24 {
            let s = &s;
            scope.spawn(move || {
                let r = client()
                    .get(s.url(&format!("/at-once/{i}")))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
            });
        }
    });
    assert_eq!(accepted.load(Ordering::SeqCst), 24, "one connection each");
    let c = client();
    for i in 0..30 {
        let r = c.get(s.url(&format!("/after/{i}"))).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), "ok");
    }
    std::thread::scope(|scope| {
        for i in 0..24 {
            let s = &s;
            scope.spawn(move || {
                let r = client().get(s.url(&format!("/again/{i}"))).send().unwrap();
                assert_eq!(r.status(), 200);
            });
        }
    });
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        24,
        "the parked connections served every later request"
    );
}

#[test]
fn expect_continue_is_answered_by_sluice_and_the_body_reaches_the_origin() {
    let origin = origin("expect");
    let s = sluice(&to(origin.addr));
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: expect.test\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    // Nothing of the body is sent before the interim answer.
    let mut interim = [0u8; 25];
    c.read_exact(&mut interim).unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    c.write_all(b"hello").unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    let final_answer = &text[text.find("HTTP/1.1 200").expect("a 200 follows")..];
    let body = &final_answer[final_answer.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(echo["body"], "hello");
    assert_eq!(
        echo_header(&echo, "expect"),
        None,
        "Sluice took the expectation"
    );
}

/// A final answer read off `c`: its head's fields and its body (by `Content-Length`).
fn read_answer(c: &mut TcpStream) -> (Vec<(String, String)>, Vec<u8>) {
    let head = read_head(c);
    let fields = head_fields(&head);
    let len: usize = fields
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (fields, body)
}

#[test]
fn a_connection_answered_100_continue_carries_the_next_request() {
    // curl sends `Expect: 100-continue` with every body over 1 KiB: the interim answer
    // must not cost the client its connection (nginx keeps it too).
    let origin = origin("expect-ka");
    let s = sluice(&to(origin.addr));
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: expect.test\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = read_head(&mut c);
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue\r\n"));
    c.write_all(b"hello").unwrap();
    let (fields, body) = read_answer(&mut c);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body"], "hello");
    assert!(
        fields.contains(&("connection".into(), "keep-alive".into())),
        "{fields:?}"
    );
    // The same connection carries the next request.
    c.write_all(b"GET /echo?second HTTP/1.1\r\nHost: expect.test\r\n\r\n")
        .unwrap();
    let (_, body) = read_answer(&mut c);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["query"], "second", "{echo}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    // Three requests in one write, the first with a body: each is framed by its own
    // head, answered in turn, and the bytes of one are never read as another's.
    let origin = origin("pipelined");
    let s = sluice(&to(origin.addr));
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: p.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /echo?two HTTP/1.1\r\nHost: p.test\r\n\r\n\
          GET /echo?three HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (fields, body) = read_answer(&mut c);
        let echo: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {fields:?} {:?}", String::from_utf8_lossy(&body)));
        seen.push((
            echo["method"].clone(),
            echo["query"].clone(),
            echo["body"].clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("POST".into(), "".into(), "hello".into()),
            ("GET".into(), "two".into(), "".into()),
            ("GET".into(), "three".into(), "".into()),
        ]
        .map(|(m, q, b): (String, String, String)| (m.into(), q.into(), b.into()))
    );
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the last answer: {rest:?}");
}

/// An origin that accepts one WebSocket upgrade per connection and echoes its bytes.
fn upgrading_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                if !read_request(&mut r) {
                    return;
                }
                let _ = w.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                );
                let mut buf = [0u8; 1024];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 || w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn websocket_upgrades_get_their_two_way_stream() {
    let s = sluice(&to(upgrading_origin()));
    let mut c = TcpStream::connect(s.proc.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut c);
    assert_eq!(status_of(&head), 101, "{}", String::from_utf8_lossy(&head));
    for msg in [&b"ping"[..], b"second message"] {
        c.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}
