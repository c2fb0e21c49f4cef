//! Issue #16, the HTTP path as on Envoy: local replies through the filters that ran,
//! framing of bodies whose length a filter changed, streamed bodies to h2 pools,
//! re-routing after a filter changes `:path`, and the request metadata Envoy adds
//! (`x-request-id`, `x-forwarded-*`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The access-log lines of `s` (written to `access.log` in its directory), waiting
/// until one matches `pred`.
fn access_line(s: &Sluice, pred: impl Fn(&Value) -> bool) -> Value {
    let log = s.dir.path().join("access.log");
    let find = |text: &String| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| pred(v))
    };
    let text = until_value(
        secs(10),
        "a matching access-log line",
        || std::fs::read_to_string(&log).unwrap_or_default(),
        |text| find(text).is_some(),
    );
    find(&text).unwrap()
}

/// A filter that answers locally in the phase the request calls for: in its request
/// body phase (`NO body`, 451), else in its response headers phase (`NO teapot`,
/// 418), once per stream.
const LATE_REPLY_WAT: &str = r#"(module
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "NO body\n")
  (data (i32.const 32) "NO teapot\n")
  (global $bump (mut i32) (i32.const 4096))
  (global $replied (mut i32) (i32.const 0))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 0)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $replied (i32.const 0))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (if (i32.eqz (local.get 2)) (then (return (i32.const 1))))
    (global.set $replied (i32.const 1))
    (drop (call $respond (i32.const 451) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (global.get $replied) (then (return (i32.const 0))))
    (global.set $replied (i32.const 1))
    (drop (call $respond (i32.const 418) (i32.const 0) (i32.const 0) (i32.const 32) (i32.const 10) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1)))
"#;

/// Filters `a_hdr` and `a_body` (together "A": a response header, a response body
/// rewrite of `NO` that changes its length), then `extra`.
fn a_then(o: &Proc, extra: &str, chain: &str) -> String {
    format!(
        r#"[pools.o]
peers = ["{o}"]
[filters.a_hdr]
module = {hdr}
config = {{ response = {{ set = {{ "x-from-a" = "yes" }} }} }}
[filters.a_body]
module = {body}
config = {{ response = {{ from = "NO", to = "NO (seen by A)" }} }}
{extra}
[[routes]]
name = "r"
filters = [{chain}]
pool = "o"
"#,
        o = o.addr,
        hdr = module("headers.wasm"),
        body = module("body_rewrite.wasm"),
    )
}

#[test]
fn a_local_reply_in_request_headers_passes_the_filters_that_ran() {
    let o = origin("o");
    let extra = format!(
        r#"[filters.b]
module = {respond}
config = {{ status = 403, body = "NO entry\n", path_prefix = "/deny" }}
[filters.c]
module = {hdr}
config = {{ response = {{ set = {{ "x-from-c" = "yes" }} }} }}
"#,
        respond = module("respond.wasm"),
        hdr = module("headers.wasm"),
    );
    let s = sluice_with_server(
        &a_then(&o, &extra, r#""a_hdr", "a_body", "b", "c""#),
        "access_log = \"access.log\"\n",
    );
    let r = client().get(s.url("/deny/x")).send().unwrap();
    assert_eq!(r.status(), 403);
    let h = r.headers().clone();
    assert_eq!(h.get("x-from-a").map(|v| v.to_str().unwrap()), Some("yes"));
    // C comes after the replying filter: it never saw the request, so not the reply.
    assert!(h.get("x-from-c").is_none(), "{h:?}");
    assert_eq!(h.get("content-type").unwrap(), "text/plain");
    assert_eq!(r.text().unwrap(), "NO (seen by A) entry\n");
    let line = access_line(&s, |v| v["path"] == "/deny/x");
    assert_eq!(line["status"], 403);
    assert_eq!(line["route"], "r");
    assert!(
        line["filters"]
            .as_str()
            .unwrap()
            .contains("a_hdr:response_headers"),
        "{line}"
    );
    assert_eq!(
        metric_with(
            &s,
            "sluice_filter_local_responses_total",
            "filter=\"b\",status=\"403\""
        ),
        1.0
    );
    assert_eq!(
        metric_with(
            &s,
            "sluice_requests_total",
            "route=\"r\",status_class=\"4xx\""
        ),
        1.0
    );
    // The same connection pool goes on serving.
    let r = client().get(s.url("/echo/ok")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-from-a").unwrap(), "yes");
}

#[test]
fn local_replies_from_body_and_response_phases_are_framed_and_logged() {
    let o = origin("o");
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[filters.late]\nmodule = {}\nrequest_body = \"buffer\"\n",
        wat_in(dir.path(), "late", LATE_REPLY_WAT)
    );
    let s = sluice_with_server(
        &a_then(&o, &extra, r#""a_hdr", "a_body", "late""#),
        "access_log = \"access.log\"\n",
    );
    // Request body phase: through A's response callbacks, as in request headers.
    let r = client()
        .post(s.url("/echo/p"))
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), 451);
    assert_eq!(r.headers().get("x-from-a").unwrap(), "yes");
    assert_eq!(r.headers().get("content-type").unwrap(), "text/plain");
    assert_eq!(r.text().unwrap(), "NO (seen by A) body\n");
    // Response headers phase: the upstream's headers went through the chain already;
    // as Envoy's direct local reply, the answer replaces them untouched by filters.
    let r = client().get(s.url("/echo/g")).send().unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers().get("content-type").unwrap(), "text/plain");
    assert!(r.headers().get("x-origin-id").is_none());
    assert_eq!(r.text().unwrap(), "NO teapot\n");
    assert_eq!(access_line(&s, |v| v["path"] == "/echo/p")["status"], 451);
    assert_eq!(access_line(&s, |v| v["path"] == "/echo/g")["status"], 418);
    assert_eq!(
        metric_with(&s, "sluice_filter_local_responses_total", "filter=\"late\""),
        2.0
    );
}

/// One HTTP/1.1 response read from `r`, framed by its headers.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_answer(r: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut a = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if a.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            a.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = a.header("content-length") {
        a.body = vec![0; n.parse().unwrap()];
        r.read_exact(&mut a.body).unwrap();
    } else {
        panic!(
            "a close-delimited response on a connection announced as {:?}",
            a.header("connection")
        );
    }
    a
}

#[test]
fn a_length_changing_body_filter_keeps_the_connection_reusable() {
    let o = origin("o");
    let s = sluice(&one_filter(
        &o,
        "rw",
        &module("body_rewrite.wasm"),
        r#"{ response = { from = "origin", to = "ORIGIN-REWRITTEN-LONGER" } }"#,
    ));
    let c = TcpStream::connect(s.proc.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    for path in ["/echo/one", "/echo/two"] {
        w.write_all(req(path).as_bytes()).unwrap();
        let a = read_answer(&mut r);
        assert_eq!(a.status, 200);
        assert_eq!(a.header("transfer-encoding"), Some("chunked"));
        assert_eq!(a.header("connection"), Some("keep-alive"));
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["path"], path);
        assert_eq!(v["ORIGIN-REWRITTEN-LONGER"], "o");
    }
    // Pipelined: both requests in one write. The first answer is framed; Pingora 0.9
    // then closes the connection (the client retries the second, RFC 9112 §9.3.2)
    // or answers it: either way nothing misframed follows.
    w.write_all(format!("{}{}", req("/echo/three"), req("/echo/four")).as_bytes())
        .unwrap();
    let a = read_answer(&mut r);
    assert_eq!(a.status, 200);
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["path"], "/echo/three");
    if !r.fill_buf().unwrap().is_empty() {
        let a = read_answer(&mut r);
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["path"], "/echo/four");
    }
}

/// A cleartext HTTP/2 origin (prior knowledge): answers each request with
/// `len=<body bytes> y=<'y' bytes> te=<transfer-encoding or ->`.
fn h2c_origin() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            let (parts, mut body) = req.into_parts();
                            let (mut n, mut ys) = (0usize, 0usize);
                            while let Some(Ok(chunk)) = body.data().await {
                                n += chunk.len();
                                ys += chunk.iter().filter(|b| **b == b'y').count();
                                let _ = body.flow_control().release_capacity(chunk.len());
                            }
                            let te = parts
                                .headers
                                .get("transfer-encoding")
                                .map_or("-".to_string(), |v| v.to_str().unwrap_or("?").to_string());
                            let resp = http::Response::builder().status(200).body(()).unwrap();
                            if let Ok(mut send) = respond.send_response(resp, false) {
                                let text = format!("len={n} y={ys} te={te}");
                                let _ = send.send_data(bytes::Bytes::from(text), true);
                            }
                        });
                    }
                });
            }
        });
    });
    addr
}

#[test]
fn a_streamed_request_body_reaches_an_h2_pool() {
    let origin = h2c_origin();
    let s = sluice(&format!(
        r#"[pools.h2]
peers = ["{origin}"]
h2 = true
[filters.rw]
module = {m}
request_body = "stream"
config = {{ request = {{ from = "x", to = "yy" }} }}
[[routes]]
filters = ["rw"]
pool = "h2"
"#,
        m = module("body_rewrite.wasm")
    ));
    // Over 64 KiB: streamed through the chain, not read ahead.
    let body = vec![b'x'; 200 * 1024];
    let r = client()
        .post(s.url("/upload"))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "len=409600 y=409600 te=-");
    // Chunked from the client too.
    let r = client()
        .post(s.url("/upload"))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(body)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "len=409600 y=409600 te=-");
}

#[test]
fn a_filter_changing_the_path_reroutes_the_request() {
    let first = origin("first");
    let second = origin("second");
    let s = sluice_with_server(
        &format!(
            r#"[pools.first]
peers = ["{first}"]
[pools.second]
peers = ["{second}"]
[filters.mover]
module = {hdr}
config = {{ request = {{ set = {{ ":path" = "/echo/c/moved" }} }} }}
[filters.route_name]
module = {state}
config = {{ role = "reader", key = "route_name" }}
[filters.meta]
module = {state}
config = {{ role = "reader", key = "xds.route_metadata.filter_metadata.sluice.tier" }}
[[routes]]
name = "a"
path_prefix = "/echo/a"
filters = ["mover", "route_name"]
pool = "first"
[[routes]]
name = "c"
path_prefix = "/echo/c"
filters = ["meta"]
pool = "second"
metadata = {{ sluice = {{ tier = "gold" }} }}
"#,
            first = first.addr,
            second = second.addr,
            hdr = module("headers.wasm"),
            state = module("state.wasm"),
        ),
        "access_log = \"access.log\"\n",
    );
    let r = client().get(s.url("/echo/a/x")).send().unwrap();
    assert_eq!(r.status(), 200);
    // The response phase reads the new route's name; the chain stays route a's.
    assert_eq!(r.headers().get("x-reader-saw").unwrap(), "c");
    let v: Value = r.json().unwrap();
    assert_eq!(v["origin"], "second");
    assert_eq!(v["path"], "/echo/c/moved");
    let line = access_line(&s, |v| v["path"] == "/echo/c/moved");
    assert_eq!(line["route"], "c");
    // Route c's own chain reads its metadata.
    let r = client().get(s.url("/echo/c/direct")).send().unwrap();
    assert_eq!(r.headers().get("x-reader-saw").unwrap(), "gold");
    assert_eq!(
        echo_header(&r.json().unwrap(), "x-state").as_deref(),
        Some("gold")
    );
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|i| b[*i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

fn request_id_policy(o: &Proc) -> String {
    one_filter(
        o,
        "rid",
        &module("state.wasm"),
        r#"{ role = "reader", key = "request.id" }"#,
    )
}

#[test]
fn x_request_id_is_generated_unless_trusted() {
    let o = origin("o");
    let s = sluice_with_server(&request_id_policy(&o), "access_log = \"access.log\"\n");
    let echo = |s: &Sluice, id: Option<&str>| -> Value {
        let mut r = client().get(s.url("/echo/id"));
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send().unwrap().json().unwrap()
    };
    let v = echo(&s, None);
    let id = echo_header(&v, "x-request-id").unwrap();
    assert!(is_uuid_v4(&id), "{id}");
    // Filters see the same id as the request header and as `request.id`.
    assert_eq!(echo_header(&v, "x-state").as_deref(), Some(id.as_str()));
    assert_eq!(
        access_line(&s, |l| l["path"] == "/echo/id")["request_id"],
        id
    );
    let other = echo_header(&echo(&s, None), "x-request-id").unwrap();
    assert_ne!(id, other);
    // Not trusted: replaced.
    let v = echo(&s, Some("from-the-client"));
    let id = echo_header(&v, "x-request-id").unwrap();
    assert!(is_uuid_v4(&id), "{id}");

    let trusting = sluice_with_server(&request_id_policy(&o), "trust_request_id = true\n");
    let v = echo(&trusting, Some("from-the-client"));
    assert_eq!(
        echo_header(&v, "x-request-id").as_deref(),
        Some("from-the-client")
    );
    assert_eq!(
        echo_header(&v, "x-state").as_deref(),
        Some("from-the-client")
    );
    let v = echo(&trusting, None);
    assert!(is_uuid_v4(&echo_header(&v, "x-request-id").unwrap()));
}

#[test]
fn x_forwarded_headers_follow_the_policy() {
    let o = origin("o");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n[[routes]]\npool = \"o\"\n",
        o.addr
    );
    let seen = |server: &str| -> (Option<String>, Option<String>) {
        let s = sluice_with_server(&policy, server);
        let v: Value = client()
            .get(s.url("/echo/f"))
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .send()
            .unwrap()
            .json()
            .unwrap();
        (
            echo_header(&v, "x-forwarded-for"),
            echo_header(&v, "x-forwarded-proto"),
        )
    };
    let own = |xff: &str, xfp: &str| (Some(xff.to_string()), Some(xfp.to_string()));
    // Default: append, nobody trusted: the client's claims are dropped.
    assert_eq!(seen(""), own("127.0.0.1", "http"));
    assert_eq!(
        seen("forwarded = \"append\"\ntrust_forwarded_from = [\"127.0.0.0/8\"]\n"),
        own("203.0.113.7, 127.0.0.1", "https")
    );
    assert_eq!(
        seen("forwarded = \"append\"\ntrust_forwarded_from = [\"10.0.0.0/8\"]\n"),
        own("127.0.0.1", "http")
    );
    assert_eq!(
        seen("forwarded = \"replace\"\ntrust_forwarded_from = [\"127.0.0.1\"]\n"),
        own("127.0.0.1", "http")
    );
    assert_eq!(seen("forwarded = \"off\"\n"), own("203.0.113.7", "https"));
    // A bad value is a policy error.
    let (out, _, _) = check(&format!(
        "[server]\nforwarded = \"sometimes\"\ntrust_forwarded_from = [\"10.0.0.0/40\"]\n{policy}"
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forwarded"), "{err}");
    assert!(err.contains("10.0.0.0/40"), "{err}");
}

/// Filters see `x-request-id` and `x-forwarded-*` as Sluice decided them (not the
/// client's untrusted claims), whether Sluice writes them into the client's head or only
/// into the head sent upstream; what a filter does to them (set, add, remove, the whole
/// map replaced) is what the origin gets, each field once.
#[test]
fn filters_see_the_request_metadata_and_their_edits_of_it_reach_the_origin() {
    let o = origin("o");
    let saw = r#"{ rules = [{ name = "xf", match = { headers = { x-forwarded-for = "127.0.0.1", x-forwarded-proto = "http" } }, response_headers = { set = { x-saw-forwarded = "1" } } }] }"#;
    let edit = r#"{ request = { set = { "x-forwarded-proto" = "from-filter" }, add = { "x-forwarded-for" = "198.51.100.9" }, remove = ["x-request-id"] } }"#;
    let policy = format!(
        "[pools.o]\npeers = [\"{addr}\"]\n\
         [filters.saw]\nmodule = {router}\nconfig = {saw}\n\
         [filters.edit]\nmodule = {headers}\nconfig = {edit}\n\
         [filters.probe]\nmodule = {probe}\n\
         [[routes]]\npath_prefix = \"/echo/edit\"\nfilters = [\"saw\", \"edit\"]\npool = \"o\"\n\
         [[routes]]\npath_prefix = \"/echo/probe\"\nfilters = [\"probe\"]\npool = \"o\"\n\
         [[routes]]\nfilters = [\"saw\"]\npool = \"o\"\n",
        addr = o.addr,
        router = module("router.wasm"),
        headers = module("headers.wasm"),
        probe = module("probe.wasm"),
    );
    let s = sluice(&policy);
    // The client's claims are not trusted: every request carries false ones.
    let get = |path: &str, extra: Option<(&str, &str)>| {
        let mut r = client()
            .get(s.url(path))
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-request-id", "from-the-client");
        if let Some((k, v)) = extra {
            r = r.header(k, v);
        }
        let r = r.send().unwrap();
        let saw = r.headers().get("x-saw-forwarded").is_some();
        (saw, r.json::<Value>().unwrap())
    };

    // A filter that only reads: it sees Sluice's values, the origin gets them once.
    let (saw, v) = get("/echo/read", None);
    assert!(
        saw,
        "the filter did not see x-forwarded-* as Sluice set them"
    );
    assert_eq!(echo_header_all(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echo_header_all(&v, "x-forwarded-proto"), ["http"]);
    let ids = echo_header_all(&v, "x-request-id");
    assert!(ids.len() == 1 && is_uuid_v4(&ids[0]), "{ids:?}");

    // A filter that edits them: its edits are what the origin gets.
    let (saw, v) = get("/echo/edit", None);
    assert!(
        saw,
        "the first filter did not see x-forwarded-* as Sluice set them"
    );
    assert_eq!(
        echo_header_all(&v, "x-forwarded-for"),
        ["127.0.0.1", "198.51.100.9"]
    );
    assert_eq!(echo_header_all(&v, "x-forwarded-proto"), ["from-filter"]);
    assert_eq!(echo_header_all(&v, "x-request-id"), Vec::<String>::new());

    // A filter that replaces the whole map (`proxy_set_header_map_pairs`): Sluice's
    // fields are in what it read back, so the origin gets them once, and the client's
    // false ones never.
    let (_, v) = get("/echo/probe", Some(("x-probe-set-pairs", "1")));
    assert_eq!(echo_header_all(&v, "x-probe-replaced"), ["1"], "{v}");
    assert_eq!(echo_header_all(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echo_header_all(&v, "x-forwarded-proto"), ["http"]);
    let ids = echo_header_all(&v, "x-request-id");
    assert!(ids.len() == 1 && is_uuid_v4(&ids[0]), "{ids:?}");
}

/// A pool hashing on `x-forwarded-for` hashes the value Sluice decided, not the one a
/// client claims: a client cannot walk the ring by forging the header, with or without
/// a filter on the route; `x-request-id` (generated per request) spreads keys.
#[test]
fn a_pool_hashing_on_request_metadata_hashes_what_sluice_decided() {
    let a = origin("md-hash-a");
    let b = origin("md-hash-b");
    let policy = |key: &str| {
        format!(
            "[pools.h]\npeers = [\"{}\", \"{}\"]\nbalance = \"consistent_hash\"\nhash_key = \"header:{key}\"\n\
             [filters.tag]\nmodule = {}\nconfig = {{ request = {{ set = {{ \"x-tag\" = \"1\" }} }} }}\n\
             [[routes]]\npath_prefix = \"/echo/filtered\"\nfilters = [\"tag\"]\npool = \"h\"\n\
             [[routes]]\npool = \"h\"\n",
            a.addr,
            b.addr,
            module("headers.wasm"),
        )
    };
    let peers = |s: &Sluice, path: &str| {
        (0..16)
            .map(|i| {
                let r = client()
                    .get(s.url(path))
                    .header("x-forwarded-for", format!("203.0.113.{i}"))
                    .header("x-request-id", format!("client-{i}"))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.headers()["x-origin-id"].to_str().unwrap().to_string()
            })
            .collect::<std::collections::HashSet<_>>()
    };
    let s = sluice(&policy("x-forwarded-for"));
    for path in ["/echo/plain", "/echo/filtered"] {
        // Sixteen forged values, one real client: one peer.
        assert_eq!(
            peers(&s, path).len(),
            1,
            "{path}: the forged header was hashed"
        );
    }
    let s = sluice(&policy("x-request-id"));
    for path in ["/echo/plain", "/echo/filtered"] {
        // Sixteen generated ids over two peers: both get some.
        assert_eq!(
            peers(&s, path).len(),
            2,
            "{path}: the request id was not hashed"
        );
    }
}

/// The fields a filter edits reach the origin however the head sent upstream is
/// written (an HTTP/1 client's, forwarded with no copy; an HTTP/2 client's, through the
/// copy; again on the peer a retry picks), replace the client's fields of those names
/// whatever their case and wherever they are, and a pool hashing on one hashes the
/// filter's value: a client cannot forge around an edit, nor walk the ring with it.
#[test]
fn a_filters_header_edits_reach_the_origin_and_the_hash_key() {
    let a = origin("edits-a");
    let b = origin("edits-b");
    let edit = r#"{ request = { remove = ["x-drop"], set = { "x-tenant" = "t-1" }, add = { "x-multi" = "from-filter" } } }"#;
    let policy = format!(
        "[pools.one]\npeers = [\"{a}\"]\n\
         [pools.retry]\npeers = [\"{dead}\", \"{a}\"]\nretries = 1\n\
         [pools.hash]\npeers = [\"{a}\", \"{b}\"]\nbalance = \"consistent_hash\"\nhash_key = \"header:x-tenant\"\n\
         [filters.edit]\nmodule = {headers}\nconfig = {edit}\n\
         [[routes]]\npath_prefix = \"/echo/retry\"\nfilters = [\"edit\"]\npool = \"retry\"\n\
         [[routes]]\npath_prefix = \"/echo/hash\"\nfilters = [\"edit\"]\npool = \"hash\"\n\
         [[routes]]\nfilters = [\"edit\"]\npool = \"one\"\n",
        a = a.addr,
        b = b.addr,
        dead = DEAD_PEER,
        headers = module("headers.wasm"),
    );
    let s = sluice_with_server(&policy, "h2c = true\n");
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (c, version) in [
        (client(), reqwest::Version::HTTP_11),
        (h2, reqwest::Version::HTTP_2),
    ] {
        for path in ["/echo/one", "/echo/retry", "/echo/retry", "/echo/hash"] {
            let r = c
                .get(s.url(path))
                .header("X-Tenant", "forged")
                .header("x-multi", "from-client")
                .header("X-DROP", "1")
                .header("x-kept", "k")
                .send()
                .unwrap();
            assert_eq!(r.status(), 200, "{version:?} {path}");
            assert_eq!(r.version(), version);
            let v: Value = r.json().unwrap();
            let ctx = format!("{version:?} {path}: {v}");
            assert_eq!(echo_header_all(&v, "x-tenant"), ["t-1"], "{ctx}");
            assert_eq!(
                echo_header_all(&v, "x-multi"),
                ["from-client", "from-filter"],
                "{ctx}"
            );
            assert_eq!(echo_header_all(&v, "x-drop"), Vec::<String>::new(), "{ctx}");
            assert_eq!(echo_header_all(&v, "x-kept"), ["k"], "{ctx}");
        }
    }
    // Sixteen forged tenants, one tenant as the filter decided: one peer.
    let c = client();
    let peers: std::collections::HashSet<String> = (0..16)
        .map(|i| {
            let r = c
                .get(s.url("/echo/hash"))
                .header("x-tenant", format!("forged-{i}"))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-origin-id"].to_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        peers.len(),
        1,
        "the client's x-tenant was hashed: {peers:?}"
    );
}
