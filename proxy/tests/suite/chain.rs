//! The filter chain end to end: a real origin, a real Sluice, a real client.

use crate::support::*;
use serde_json::Value;

fn pool(origin: &Proc) -> String {
    format!("[pools.origin]\npeers = [\"{}\"]\n", origin.addr)
}

#[test]
fn header_edits_both_ways_and_chain_order() {
    let o = origin("o1");
    let s = sluice(&format!(
        r#"{}
[filters.a]
module = {}
config = {{ chain_tag = "a", request = {{ set = {{ "x-set" = "1" }}, remove = ["x-drop"] }}, response = {{ set = {{ "x-resp" = "yes" }}, remove = ["x-origin-id"] }} }}

[filters.b]
module = {}
config = {{ chain_tag = "b", request = {{ add = {{ "x-added" = "2" }} }} }}

[[routes]]
filters = ["a", "b"]
pool = "origin"
"#,
        pool(&o),
        module("headers.wasm"),
        module("headers.wasm")
    ));
    let r = client()
        .get(s.url("/echo/hi?q=1"))
        .header("x-drop", "secret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Response phases run in reverse order: b, then a.
    assert_eq!(r.headers()["x-sluice-chain"], "b,a");
    assert_eq!(r.headers()["x-resp"], "yes");
    assert!(
        r.headers().get("x-origin-id").is_none(),
        "response header removal"
    );
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["path"], "/echo/hi");
    assert_eq!(echo_header(&echo, "x-set").as_deref(), Some("1"));
    assert_eq!(echo_header(&echo, "x-added").as_deref(), Some("2"));
    assert_eq!(
        echo_header(&echo, "x-drop").as_deref(),
        None,
        "request header removal"
    );
    // Request phases run in chain order: a, then b.
    assert_eq!(echo_header(&echo, "x-sluice-chain").as_deref(), Some("a,b"));
}

#[test]
fn local_response_never_contacts_the_upstream() {
    // The pool points at a port nobody listens on: any upstream contact would be a 502.
    let s = sluice(&format!(
        r#"[pools.dead]
peers = ["{DEAD_PEER}"]

[filters.teapot]
module = {}
config = {{ status = 418, body = "short and stout\n", headers = {{ "x-why" = "local" }}, path_prefix = "/tea" }}

[[routes]]
filters = ["teapot"]
pool = "dead"
"#,
        module("respond.wasm")
    ));
    let c = client();
    let r = c.get(s.url("/tea/pot")).send().unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["x-why"], "local");
    assert_eq!(r.headers()["content-length"], "16");
    assert_eq!(r.text().unwrap(), "short and stout\n");
    // A local response also stops a request that has a body.
    let r = c.post(s.url("/tea")).body("x".repeat(1000)).send().unwrap();
    assert_eq!(r.status(), 418);
    // Other paths go upstream, which is down.
    assert_eq!(c.get(s.url("/coffee")).send().unwrap().status(), 502);
}

#[test]
fn body_rewrite_keeps_content_length_right() {
    let o = origin("o1");
    let s = sluice(&format!(
        r#"{}
[filters.rw]
module = {}
config = {{ request = {{ from = "cat", to = "doggo" }}, response = {{ from = "Sluice", to = "SLUICE-REWRITTEN" }} }}

[[routes]]
filters = ["rw"]
pool = "origin"
"#,
        pool(&o),
        module("body_rewrite.wasm")
    ));
    let c = client();
    // Small body: filtered before the upstream is contacted, sent with a right Content-Length.
    let r = c
        .post(s.url("/echo"))
        .body("a cat and a cat")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["body"], "a doggo and a doggo");
    assert_eq!(echo["body_len"], 19);
    assert_eq!(echo_header(&echo, "content-length").as_deref(), Some("19"));
    // Large body (over 64 KiB): streamed, buffered by the filter, sent chunked.
    let big = "cat,".repeat(50_000);
    let r = c.post(s.url("/echo")).body(big.clone()).send().unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["body"].as_str().unwrap(), big.replace("cat", "doggo"));
    assert_eq!(echo["body_len"], 50_000 * 6);
    // Response body rewrite on a static file; the filter removed Content-Length.
    let r = c.get(s.url("/index.html")).send().unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("SLUICE-REWRITTEN"), "{text}");
    assert!(!text.contains("Sluice"), "{text}");
}

#[test]
fn body_over_the_buffer_limit_is_refused() {
    let o = origin("o1");
    let s = sluice(&format!(
        r#"[limits]
max_body_bytes = 100000

{}
[filters.rw]
module = {}
config = {{ request = {{ from = "a", to = "b" }} }}

[[routes]]
filters = ["rw"]
pool = "origin"
"#,
        pool(&o),
        module("body_rewrite.wasm")
    ));
    let r = client()
        .post(s.url("/echo"))
        .body(vec![b'a'; 300_000])
        .send();
    // Sluice answers 413 (the client may also see the connection closed mid-upload).
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // And keeps serving.
    let r = client().post(s.url("/echo")).body("aaa").send().unwrap();
    assert_eq!(r.json::<Value>().unwrap()["body"], "bbb");
}

#[test]
fn routes_match_host_and_path_prefix() {
    let o1 = origin("one");
    let o2 = origin("two");
    let s = sluice(&format!(
        r#"[pools.one]
peers = ["{}"]
[pools.two]
peers = ["{}"]

[filters.api_tag]
module = {}
config = {{ request = {{ set = {{ "x-route" = "api" }} }} }}

[[routes]]
name = "api"
host = "api.example.com"
path_prefix = "/echo"
filters = ["api_tag"]
pool = "two"

[[routes]]
name = "wild"
host = "*.example.org"
pool = "two"

[[routes]]
name = "fallback"
path_prefix = "/"
pool = "one"
"#,
        o1.addr,
        o2.addr,
        module("headers.wasm")
    ));
    let c = client();
    let get = |host: &str, path: &str| {
        let r = c.get(s.url(path)).header("host", host).send().unwrap();
        let id = r.headers()["x-origin-id"].to_str().unwrap().to_string();
        (id, r.json::<Value>().unwrap_or(Value::Null))
    };
    let (id, echo) = get("api.example.com", "/echo/x");
    assert_eq!(id, "two");
    assert_eq!(echo_header(&echo, "x-route").as_deref(), Some("api"));
    let (id, echo) = get("API.example.com:8080", "/echo");
    assert_eq!(id, "two", "host match ignores case and port");
    assert_eq!(echo_header(&echo, "x-route").as_deref(), Some("api"));
    let (id, echo) = get("www.example.org", "/echo");
    assert_eq!(id, "two");
    assert_eq!(echo_header(&echo, "x-route").as_deref(), None);
    let (id, _) = get("api.example.com", "/other/echo");
    assert_eq!(id, "one", "path prefix decides");
    let (id, _) = get("example.com", "/echo");
    assert_eq!(id, "one");
}

#[test]
fn no_route_is_404() {
    let o = origin("o1");
    let s = sluice(&format!(
        "{}\n[[routes]]\nhost = \"only.example\"\npool = \"origin\"\n",
        pool(&o)
    ));
    let r = client()
        .get(s.url("/echo"))
        .header("host", "other.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn properties_and_time_reach_filters() {
    let o = origin("o1");
    let s = sluice(&one_filter(&o, "props", &module("props.wasm"), ""));
    let r = client().put(s.url("/echo/p?x=1")).body("b").send().unwrap();
    let echo: Value = r.json().unwrap();
    assert_eq!(
        echo_header(&echo, "x-prop-path").as_deref(),
        Some("/echo/p?x=1")
    );
    assert_eq!(echo_header(&echo, "x-prop-method").as_deref(), Some("PUT"));
    assert_eq!(
        echo_header(&echo, "x-prop-plugin").as_deref(),
        Some("props")
    );
    assert_eq!(echo_header(&echo, "x-prop-time-ok").as_deref(), Some("1"));
    let src = echo_header(&echo, "x-prop-source").unwrap();
    assert!(src.starts_with("127.0.0.1:"), "{src}");
}

#[test]
fn wasip1_module_loads_and_runs() {
    let o = origin("o1");
    let s = sluice(&one_filter(
        &o,
        "w",
        &module("wasip1/headers.wasm"),
        r#"{ request = { set = { "x-wasi" = "yes" } } }"#,
    ));
    let echo: Value = client().get(s.url("/echo")).send().unwrap().json().unwrap();
    assert_eq!(echo_header(&echo, "x-wasi").as_deref(), Some("yes"));
}

#[test]
fn write_back_folds_case_keeps_duplicates_and_leaves_the_rest_alone() {
    // The names a filter edits are written back into the heads Pingora forwards by
    // their lowercase bytes (proxy/headers.rs): a name set in another case than the
    // client's replaces the client's value, an added value joins the client's, removing
    // an absent name and setting an unchanged value change nothing, on both sides.
    let o = origin("o1");
    let s = sluice(&format!(
        r#"{}
[filters.w]
module = {}
config = {{ request = {{ set = {{ "X-Mixed-CASE" = "filter", "x-same" = "v" }}, add = {{ "X-DUP" = "2" }}, remove = ["x-absent", "X-GONE"] }}, response = {{ set = {{ "X-Resp-CASE" = "r" }}, add = {{ "x-resp-dup" = "b", "X-Resp-Dup2" = "c" }}, remove = ["x-not-there"] }} }}

[[routes]]
filters = ["w"]
pool = "origin"
"#,
        pool(&o),
        module("headers.wasm")
    ));
    let r = client()
        .get(s.url("/echo/wb"))
        .header("X-MIXED-case", "client")
        .header("x-dup", "1")
        .header("x-same", "v")
        .header("x-gone", "g")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let values = |name: &str| -> Vec<String> {
        r.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(values("x-resp-case"), ["r"]);
    assert_eq!(values("x-resp-dup"), ["b"]);
    assert_eq!(values("x-resp-dup2"), ["c"]);
    assert!(values("x-not-there").is_empty());
    let echo: Value = r.json().unwrap();
    assert_eq!(echo_header_all(&echo, "x-mixed-case"), ["filter"]);
    assert_eq!(echo_header_all(&echo, "x-dup"), ["1", "2"]);
    assert_eq!(echo_header_all(&echo, "x-same"), ["v"]);
    assert!(echo_header_all(&echo, "x-gone").is_empty());
    assert!(echo_header_all(&echo, "x-absent").is_empty());
}

#[test]
fn write_back_refuses_a_name_that_is_no_header_name() {
    // A filter may set any UTF-8 name in its map; one with bytes a header name cannot
    // hold fails the write-back, and the request never reaches the origin.
    let o = origin("o1");
    let s = sluice(&format!(
        r#"{}
[filters.w]
module = {}
config = {{ request = {{ set = {{ "bad name" = "x", "x-fine" = "1" }} }} }}

[[routes]]
filters = ["w"]
pool = "origin"
"#,
        pool(&o),
        module("headers.wasm")
    ));
    let r = client().get(s.url("/echo/bad")).send().unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().unwrap();
    assert!(!body.contains("\"path\""), "the origin answered: {body}");
}
