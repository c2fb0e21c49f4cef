//! Hardening tests: paths (issue #15, items 1a and 1d). Ways past a guarded route
//! through the request path, the host and hop-by-hop headers, sent raw over TCP
//! (client libraries would normalise them away).
use crate::support::*;

/// A response read off the wire.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The origin's `/echo` answer.
    fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an /echo answer ({e}): {}\n{}", self.head, self.body))
    }
}

/// Sends `request` as is and reads the response until the connection closes.
fn raw(s: &Sluice, request: &str) -> Raw {
    let (status, out) = exchange(s.proc.addr, request.as_bytes());
    let out = String::from_utf8_lossy(&out).to_string();
    assert!(status > 0, "no status line in {out:?}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Raw {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `GET target` with `Host: h` and `Connection: close`.
fn get(s: &Sluice, target: &str) -> Raw {
    raw(
        s,
        &format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
    )
}

/// A policy: route `guarded` (`prefix`, answered 403 by respond.wasm) before a
/// catch-all route to the origin; `extra` is appended (e.g. a `[paths]` section).
fn guarded(o: &Proc, prefix: &str, extra: &str) -> String {
    format!(
        r#"[pools.o]
peers = ["{}"]
[filters.deny]
module = {}
config = {{ status = 403, body = "guarded\n" }}

[[routes]]
name = "guarded"
path_prefix = "{prefix}"
filters = ["deny"]
pool = "o"

[[routes]]
name = "all"
path_prefix = "/"
pool = "o"
{extra}"#,
        o.addr,
        module("respond.wasm"),
    )
}

fn bad_requests(s: &Sluice, reason: &str) -> u64 {
    metric(
        s,
        &format!("sluice_bad_requests_total{{reason=\"{reason}\"}} "),
    ) as u64
}

#[test]
fn other_spellings_of_a_guarded_path_meet_its_guard() {
    let o = origin("o");
    let s = sluice(&guarded(&o, "/echo", ""));
    for target in [
        "/echo",
        "//echo",
        "/./echo",
        "/x/../echo",
        "/%65cho",
        "/%2e%2e/echo",
        "/.%2E/echo",
        "/echo/",
        "/echo//x",
        "/x/..//echo/./y",
        "/ech%6f?q=1",
        "http://h/x/../echo",
    ] {
        let r = get(&s, target);
        assert_eq!(r.status, 403, "{target}: {}\n{}", r.head, r.body);
        assert_eq!(r.body, "guarded\n", "{target}");
    }
    // Absolute-form with no Host header routes on the target's path too.
    let r = raw(&s, "GET http://h//echo HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 403, "absolute-form, no Host: {}", r.head);
}

#[test]
fn prefixes_match_on_segment_boundaries() {
    let o = origin("o");
    let s = sluice(&guarded(&o, "/echo", ""));
    for target in ["/echoes", "/echo.json", "/%65choes"] {
        let r = get(&s, target);
        assert_ne!(r.status, 403, "{target} met the /echo route's guard");
        assert_eq!(r.header("x-origin-id"), Some("o"), "{target}: {}", r.head);
    }
}

#[test]
fn ambiguous_paths_are_refused_and_counted() {
    let o = origin("o");
    let s = sluice(&guarded(&o, "/echo", ""));
    for (target, reason) in [
        ("/echo%2F..", "encoded_slash"),
        ("/x%2f..%2fecho", "encoded_slash"),
        ("/x%5C..%5Cecho", "backslash"),
        ("/x\\..\\echo", "backslash"),
        ("/%zz/echo", "malformed_escape"),
        ("/echo%", "malformed_escape"),
        ("/x%00/../echo", "control_byte"),
        ("/x%0d%0a/../echo", "control_byte"),
    ] {
        let before = bad_requests(&s, reason);
        let r = get(&s, target);
        assert_eq!(r.status, 400, "{target}: {}\n{}", r.head, r.body);
        assert_eq!(bad_requests(&s, reason), before + 1, "{target} counted");
    }
}

#[test]
fn the_origin_receives_the_path_the_route_matched() {
    let o = origin("o");
    let s = sluice(&format!(
        r#"[pools.o]
peers = ["{}"]
[filters.tag]
module = {}
config = {{ request = {{ set = {{ "x-route" = "echo" }} }} }}
[filters.seen]
module = {}
config = {{ request = {{ set = {{ "x-seen" = "1" }} }} }}

[[routes]]
name = "echo"
path_prefix = "/echo"
filters = ["tag"]
pool = "o"

[[routes]]
name = "all"
path_prefix = "/"
filters = ["seen"]
pool = "o"
"#,
        o.addr,
        module("headers.wasm"),
        module("headers.wasm"),
    ));
    for (target, path, query) in [
        ("//echo", "/echo", ""),
        ("/./echo", "/echo", ""),
        ("/x/../echo", "/echo", ""),
        ("/%65cho", "/echo", ""),
        ("/%2e%2e/echo", "/echo", ""),
        ("/echo/a/./b/../c", "/echo/a/c", ""),
        ("/echo//a%7e%41", "/echo/a~A", ""),
        // The query is left as it is.
        ("/x/../echo?a=/../b&c=%2e%2e", "/echo", "a=/../b&c=%2e%2e"),
        ("http://h/x/../echo?q=1", "/echo", "q=1"),
        ("http://h//echo", "/echo", ""),
    ] {
        let r = get(&s, target);
        assert_eq!(r.status, 200, "{target}: {}\n{}", r.head, r.body);
        let echo = r.echo();
        assert_eq!(echo["path"], path, "{target}");
        assert_eq!(echo["query"], query, "{target}");
        assert_eq!(
            echo_header(&echo, "x-route").as_deref(),
            Some("echo"),
            "{target} took the /echo route"
        );
        assert_eq!(echo_header(&echo, "host").as_deref(), Some("h"), "{target}");
    }
}

#[test]
fn host_routes_match_normalised_hosts() {
    let o = origin("o");
    let s = sluice(&format!(
        r#"[pools.o]
peers = ["{}"]
[filters.deny]
module = {}
config = {{ status = 403, body = "guarded\n" }}

[[routes]]
name = "admin"
host = "admin.example"
filters = ["deny"]
pool = "o"

[[routes]]
name = "all"
pool = "o"
"#,
        o.addr,
        module("respond.wasm"),
    ));
    for host in [
        "admin.example",
        "ADMIN.Example",
        "admin.example.",
        "Admin.Example.:8080",
    ] {
        let r = raw(
            &s,
            &format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 403, "Host: {host}: {}", r.head);
    }
    let r = raw(
        &s,
        "GET http://Admin.Example./echo HTTP/1.1\r\nHost: Admin.Example.\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 403, "absolute-form: {}", r.head);
    assert_eq!(get(&s, "/echo").status, 200, "other hosts pass");
}

#[test]
fn case_lower_guards_every_case_of_a_path() {
    let o = origin("o");
    let s = sluice(&guarded(&o, "/Echo", "[paths]\ncase = \"lower\"\n"));
    for target in ["/echo", "/ECHO", "/eChO/x", "/%45CHO", "/X/../Echo"] {
        let r = get(&s, target);
        assert_eq!(r.status, 403, "{target}: {}", r.head);
    }
    assert_ne!(get(&s, "/ECHOES").status, 403);
}

#[test]
fn decoded_separators_are_normalised_like_slashes() {
    let o = origin("o");
    let s = sluice(&guarded(
        &o,
        "/echo",
        "[paths]\nencoded_slashes = \"decode\"\nbackslashes = \"decode\"\n",
    ));
    for target in [
        "/x%2F..%2Fecho",
        "/x\\..\\echo",
        "/x%5c..%5cecho",
        "/echo%2Fx",
    ] {
        let r = get(&s, target);
        assert_eq!(r.status, 403, "{target}: {}", r.head);
    }
    // `/echo%2F..` is `/echo/..`, the root: not the guarded route.
    assert_ne!(get(&s, "/echo%2F..").status, 403);
}

#[test]
fn connection_cannot_remove_a_header_a_filter_set() {
    let o = origin("o");
    let s = sluice(&one_filter(
        &o,
        "fwd",
        &module("headers.wasm"),
        r#"{ request = { set = { "x-forwarded-by" = "sluice" } } }"#,
    ));
    for connection in [
        "close, x-forwarded-by",
        "X-Forwarded-By, close",
        "close, keep-alive, x-forwarded-by",
    ] {
        let r = raw(
            &s,
            &format!(
                "GET /echo HTTP/1.1\r\nHost: h\r\nX-Forwarded-By: client\r\nConnection: {connection}\r\n\r\n"
            ),
        );
        assert_eq!(r.status, 200, "{connection}: {}", r.head);
        let echo = r.echo();
        assert_eq!(
            echo_header(&echo, "x-forwarded-by").as_deref(),
            Some("sluice"),
            "Connection: {connection}"
        );
    }
    // The header is gone from what the filters see: a header only the client sent and
    // named in Connection does not reach the origin.
    let r = raw(
        &s,
        "GET /echo HTTP/1.1\r\nHost: h\r\nX-Private: 1\r\nConnection: close, x-private\r\n\r\n",
    );
    assert_eq!(echo_header(&r.echo(), "x-private"), None);
    // Naming a framing or protected header is refused.
    for connection in ["close, content-length", "host", "\"x-a\""] {
        let r = raw(
            &s,
            &format!("GET /echo HTTP/1.1\r\nHost: h\r\nConnection: {connection}\r\n\r\n"),
        );
        assert_eq!(r.status, 400, "Connection: {connection}: {}", r.head);
    }
}
