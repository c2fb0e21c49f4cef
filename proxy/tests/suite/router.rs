//! The routing filter (`filters/router`) end to end: three real origins (pools `a`, `b`,
//! `c`), a real Sluice running `router.wasm`, a real client. Each origin answers with
//! `x-origin-id`, so every assertion on a pool is an assertion on the origin that
//! answered; `/echo` shows what the origin received (path, query, headers).

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Three origins and a Sluice routing between them.
struct Setup {
    s: Sluice,
    _origins: Vec<Proc>,
}

/// The router's configuration: a TOML inline table (one line per rule: arrays may span
/// lines, inline tables may not).
const ROUTER_CONFIG: &str = r#"{ default = { pool = "a", response_headers = { set = { x-rule = "default" } } }, rules = [
  { name = "host-b", match = { host = "b.example" }, pool = "b" },
  { name = "api", match = { path_prefix = "/api/", methods = ["GET"] }, pool = "c", rewrite = { path_prefix = "/echo/v2/", host = "api.internal" }, request_headers = { set = { x-routed-by = "router" }, add = { x-added = "1" }, remove = ["x-secret"] }, response_headers = { set = { x-rule = "api" } } },
  { name = "user", match = { path_regex = "^/u/[0-9]+$" }, pool = "b", rewrite = { path_regex = { pattern = "^/u/([0-9]+)$", replace = "/echo/user/$1" } } },
  { name = "beta", match = { path_prefix = "/echo", cookies = { beta = "1" } }, pool = "c" },
  { name = "query", match = { path_prefix = "/echo", query = { backend = "b" } }, pool = "b" },
  { name = "staging", match = { path_prefix = "/echo", headers = { x-env = { regex = "^stag" } } }, pool = "c" },
  { name = "post", match = { path_prefix = "/echo", methods = ["POST"] }, pool = "b" },
  { name = "nowhere", match = { path_prefix = "/nowhere" }, pool = "missing" },
  { name = "canary", match = { path_prefix = "/canary" }, split = [{ pool = "a", weight = 80 }, { pool = "b", weight = 20 }], sticky = { key = { header = "x-user" } }, rewrite = { path_prefix = "/healthz" } },
  { name = "sticky", match = { path_prefix = "/sticky" }, split = [{ pool = "a", weight = 50 }, { pool = "c", weight = 50 }], sticky = { cookie = "arm", max_age = 60 }, rewrite = { path_prefix = "/healthz" } },
  { name = "shard", match = { path_prefix = "/shard" }, pool = "ring", hash_key = { header = "x-shard" }, rewrite = { path_prefix = "/healthz" } },
] }"#;

fn setup() -> Setup {
    let origins: Vec<Proc> = ["a", "b", "c"].into_iter().map(origin).collect();
    let (a, b, c) = (origins[0].addr, origins[1].addr, origins[2].addr);
    let s = sluice(&format!(
        r#"[pools.a]
peers = ["{a}"]
[pools.b]
peers = ["{b}"]
[pools.c]
peers = ["{c}"]
[pools.ring]
peers = ["{a}", "{b}", "{c}"]
balance = "consistent_hash"

[filters.router]
module = {}
config = {ROUTER_CONFIG}

[[routes]]
filters = ["router"]
pool = "a"
"#,
        module("router.wasm")
    ));
    Setup {
        s,
        _origins: origins,
    }
}

/// The origin that answered.
fn origin_id(r: &reqwest::blocking::Response) -> String {
    r.headers()
        .get("x-origin-id")
        .unwrap_or_else(|| panic!("no x-origin-id: {r:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Sends `req`, checks the status, returns (origin id, response headers' x-rule, body).
fn send(req: reqwest::blocking::RequestBuilder) -> (String, Option<String>, String) {
    let r = req.send().unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    let id = origin_id(&r);
    let rule = header(&r, "x-rule");
    (id, rule, r.text().unwrap())
}

#[test]
fn each_rule_sends_to_its_pool_in_order() {
    let t = setup();
    let c = client();
    let url = |p: &str| t.s.url(p);
    let cases: Vec<(&str, reqwest::blocking::RequestBuilder, &str)> = vec![
        ("no rule matches: default", c.get(url("/echo")), "a"),
        (
            "host",
            c.get(url("/echo")).header("host", "b.example:8080"),
            "b",
        ),
        (
            "other host",
            c.get(url("/echo")).header("host", "c.example"),
            "a",
        ),
        (
            "cookie",
            c.get(url("/echo")).header("cookie", "x=1; beta=1"),
            "c",
        ),
        (
            "cookie, other value",
            c.get(url("/echo")).header("cookie", "beta=0"),
            "a",
        ),
        ("query", c.get(url("/echo?x=1&backend=b")), "b"),
        ("query, other value", c.get(url("/echo?backend=c")), "a"),
        (
            "header regex",
            c.get(url("/echo")).header("x-env", "staging-2"),
            "c",
        ),
        (
            "header regex, no match",
            c.get(url("/echo")).header("x-env", "prod"),
            "a",
        ),
        ("method", c.post(url("/echo")).body("x"), "b"),
        ("path regex", c.get(url("/u/42")), "b"),
        ("path regex, no match", c.get(url("/u/42x")), "a"),
        ("prefix + method", c.get(url("/api/items")), "c"),
        // `beta` comes before `query`: the first matching rule wins.
        (
            "order",
            c.get(url("/echo?backend=b")).header("cookie", "beta=1"),
            "c",
        ),
        (
            "order",
            c.post(url("/echo")).header("x-env", "staging"),
            "c",
        ),
    ];
    for (what, req, want) in cases {
        let r = req.send().unwrap();
        // `/u/42x` reaches the origin as is: a 404 from origin a.
        assert!(r.status() == 200 || r.status() == 404, "{what}: {r:?}");
        assert_eq!(origin_id(&r), want, "{what}");
    }
    // The default action's response header; a rule without one adds nothing.
    let (_, rule, _) = send(c.get(url("/echo")));
    assert_eq!(rule.as_deref(), Some("default"));
    let (_, rule, _) = send(c.get(url("/echo?backend=b")));
    assert_eq!(rule, None);
}

#[test]
fn rewrites_reach_the_origin() {
    let t = setup();
    let c = client();

    // Path prefix and host rewrite, request and response header edits.
    let (id, rule, body) = send(
        c.get(t.s.url("/api/items?id=7&x=a%20b"))
            .header("x-secret", "s3cret")
            .header("x-keep", "1"),
    );
    assert_eq!(id, "c");
    assert_eq!(rule.as_deref(), Some("api"));
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/echo/v2/items");
    assert_eq!(echo["query"], "id=7&x=a%20b", "the query is kept as sent");
    assert_eq!(echo_header(&echo, "host").as_deref(), Some("api.internal"));
    assert_eq!(echo_header(&echo, "x-routed-by").as_deref(), Some("router"));
    assert_eq!(echo_header(&echo, "x-added").as_deref(), Some("1"));
    assert_eq!(echo_header(&echo, "x-secret"), None, "removed");
    assert_eq!(echo_header(&echo, "x-keep").as_deref(), Some("1"));

    // Regex rewrite with a capture group; the Host header is left alone.
    let (id, _, body) = send(c.get(t.s.url("/u/1234")));
    assert_eq!(id, "b");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/echo/user/1234");
    assert_eq!(
        echo_header(&echo, "host").as_deref(),
        Some(t.s.proc.addr.to_string().as_str())
    );

    // A request no rewrite applies to reaches the origin unchanged.
    let (_, _, body) = send(c.get(t.s.url("/echo/plain?q=1")));
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/echo/plain");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(echo_header(&echo, "x-routed-by"), None);
}

#[test]
fn canary_split_over_10k_clients_and_key_stickiness() {
    let t = setup();
    let c = client();
    let n = 10_000;
    let mut arm_of: Vec<String> = Vec::with_capacity(n);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let (id, _, body) = send(
            c.get(t.s.url("/canary"))
                .header("x-user", format!("user-{i}")),
        );
        assert_eq!(body.trim(), "ok", "rewritten to /healthz");
        *counts.entry(id.clone()).or_default() += 1;
        arm_of.push(id);
    }
    let share = |p: &str| *counts.get(p).unwrap_or(&0) as f64 / n as f64;
    assert!(
        (share("a") - 0.8).abs() <= 0.02 && (share("b") - 0.2).abs() <= 0.02,
        "80/20 split within 2 points: {counts:?}"
    );
    assert_eq!(counts.get("c"), None, "c is not an arm");
    // The same key lands on the same arm, whatever else changes.
    for i in (0..n).step_by(50) {
        let (id, _, _) = send(
            c.get(t.s.url(&format!("/canary?again={i}")))
                .header("x-user", format!("user-{i}"))
                .header("cookie", "unrelated=1"),
        );
        assert_eq!(id, arm_of[i], "user-{i}");
    }
}

#[test]
fn sticky_cookie_is_set_then_wins() {
    let t = setup();
    let c = client();
    // A new client gets an arm and a cookie naming it.
    let r = c.get(t.s.url("/sticky")).send().unwrap();
    assert_eq!(r.status(), 200);
    let arm = origin_id(&r);
    assert!(arm == "a" || arm == "c", "{arm}");
    assert_eq!(
        header(&r, "set-cookie").as_deref(),
        Some(format!("arm={arm}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax").as_str())
    );
    // With the cookie, it stays there and gets no new cookie.
    for _ in 0..20 {
        let r = c
            .get(t.s.url("/sticky"))
            .header("cookie", format!("a=b; arm={arm}"))
            .send()
            .unwrap();
        assert_eq!(origin_id(&r), arm);
        assert_eq!(header(&r, "set-cookie"), None);
    }
    // The cookie decides, not chance: the other arm on request.
    let other = if arm == "a" { "c" } else { "a" };
    for _ in 0..20 {
        let r = c
            .get(t.s.url("/sticky"))
            .header("cookie", format!("arm={other}"))
            .send()
            .unwrap();
        assert_eq!(origin_id(&r), other);
    }
    // A cookie naming no arm is replaced; new clients spread over both arms.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..200 {
        let mut req = c.get(t.s.url("/sticky"));
        if i % 2 == 0 {
            req = req.header("cookie", "arm=gone");
        }
        let r = req.send().unwrap();
        let id = origin_id(&r);
        let cookie = header(&r, "set-cookie").expect("a new client gets a cookie");
        assert!(
            cookie.starts_with(&format!("arm={id};")),
            "{cookie} vs {id}"
        );
        *counts.entry(id).or_default() += 1;
    }
    assert!(
        counts.get("a").copied().unwrap_or(0) >= 60 && counts.get("c").copied().unwrap_or(0) >= 60,
        "about 50/50 without a key: {counts:?}"
    );
}

#[test]
fn hash_key_keeps_a_key_on_one_peer() {
    let t = setup();
    let c = client();
    let mut peers = std::collections::BTreeSet::new();
    for k in 0..30 {
        let key = format!("shard-{k}");
        let (first, _, _) = send(c.get(t.s.url("/shard")).header("x-shard", &key));
        for _ in 0..5 {
            let (id, _, _) = send(c.get(t.s.url("/shard")).header("x-shard", &key));
            assert_eq!(id, first, "{key}");
        }
        peers.insert(first);
    }
    assert!(peers.len() >= 2, "30 keys on one peer of three: {peers:?}");
}

#[test]
fn unknown_pool_is_a_502_with_a_log_line_and_a_metric() {
    let t = setup();
    let c = client();
    let r = c.get(t.s.url("/nowhere/x")).send().unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.headers().get("x-origin-id"),
        None,
        "no origin was contacted"
    );
    // Sluice keeps serving.
    let (id, _, _) = send(c.get(t.s.url("/echo")));
    assert_eq!(id, "a");
    let metrics = c
        .get(t.s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("sluice_route_unknown_pool_total"))
        .unwrap_or_else(|| panic!("no unknown-pool metric in:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
    // The host logs the pool the filter named.
    until_value(
        secs(5),
        "a log line naming the pool",
        || t.s.log(),
        |log| log.contains("missing"),
    );
}
