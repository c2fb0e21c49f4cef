//! Unit tests of the rule engine: configuration, every matcher, rule order,
//! splits, stickiness, keys and rewrites. The end-to-end test (a real Sluice,
//! real origins) is `proxy/tests/suite/router.rs`.

use crate::config::parse;
use crate::request::Request;
use crate::rules::{Chosen, Decision, Router};
use serde_json::{json, Value};

fn router(cfg: Value) -> Router {
    parse(Some(cfg.to_string().as_bytes())).unwrap_or_else(|e| panic!("config {cfg}: {e}"))
}

fn config_error(cfg: Value) -> String {
    match parse(Some(cfg.to_string().as_bytes())) {
        Ok(_) => panic!("config accepted: {cfg}"),
        Err(e) => e,
    }
}

fn req(method: &str, authority: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    Request::new(
        method,
        authority,
        path,
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request {
    req("GET", "example.com", path, headers)
}

/// The pool `r` picks for `q` (none: pass through).
fn pool(r: &Router, q: &Request) -> Option<String> {
    r.route(q).and_then(|(_, d)| d.pool)
}

/// The name of the rule `r` picks for `q`.
fn rule_name(r: &Router, q: &Request) -> Option<String> {
    match r.choose(q)? {
        Chosen::Rule(i) => Some(r.rules()[i].name.clone()),
        Chosen::Default => Some("default".to_string()),
    }
}

/// A router with one rule sending matches of `m` to pool `hit`.
fn one(m: Value) -> Router {
    router(json!({"rules": [{"match": m, "pool": "hit"}]}))
}

fn hits(r: &Router, q: &Request) -> bool {
    pool(r, q).as_deref() == Some("hit")
}

#[test]
fn empty_config_passes_everything_through() {
    for raw in [None, Some(&b""[..]), Some(&b"  \n"[..]), Some(&b"{}"[..])] {
        let r = parse(raw).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.route(&get("/", &[])), None);
    }
}

#[test]
fn host_exact_suffix_any_ignore_case_and_port() {
    let r = one(json!({"host": "Example.com"}));
    assert!(hits(&r, &req("GET", "example.com", "/", &[])));
    assert!(hits(&r, &req("GET", "EXAMPLE.COM:8080", "/", &[])));
    assert!(hits(&r, &req("GET", "example.com.", "/", &[])));
    assert!(!hits(&r, &req("GET", "www.example.com", "/", &[])));
    assert!(!hits(&r, &req("GET", "example.org", "/", &[])));

    let r = one(json!({"host": ["*.example.com", "other.org"]}));
    assert!(hits(&r, &req("GET", "a.example.com", "/", &[])));
    assert!(hits(&r, &req("GET", "a.b.example.com:443", "/", &[])));
    assert!(hits(&r, &req("GET", "other.org", "/", &[])));
    assert!(
        !hits(&r, &req("GET", "example.com", "/", &[])),
        "the apex is not a subdomain"
    );
    assert!(!hits(&r, &req("GET", "badexample.com", "/", &[])));

    let r = one(json!({"host": "*"}));
    assert!(hits(&r, &req("GET", "anything", "/", &[])));

    let r = one(json!({"host": "::1"}));
    assert!(hits(&r, &req("GET", "[::1]:8080", "/", &[])));
}

#[test]
fn path_exact_prefix_regex_ignore_the_query() {
    let r = one(json!({"path": "/exact"}));
    assert!(hits(&r, &get("/exact", &[])));
    assert!(hits(&r, &get("/exact?x=1", &[])));
    assert!(!hits(&r, &get("/exact/", &[])));

    let r = one(json!({"path_prefix": "/api/"}));
    assert!(hits(&r, &get("/api/users", &[])));
    assert!(hits(&r, &get("/api/", &[])));
    assert!(!hits(&r, &get("/api", &[])));
    assert!(
        !hits(&r, &get("/x?/api/", &[])),
        "the query is not the path"
    );

    let r = one(json!({"path_regex": "^/u/[0-9]+$"}));
    assert!(hits(&r, &get("/u/42", &[])));
    assert!(hits(&r, &get("/u/42?page=2", &[])));
    assert!(!hits(&r, &get("/u/42/x", &[])));
    assert!(!hits(&r, &get("/u/abc", &[])));

    // Unanchored unless the pattern anchors itself.
    let r = one(json!({"path_regex": "\\.(png|jpe?g)"}));
    assert!(hits(&r, &get("/img/a.jpeg", &[])));
    assert!(!hits(&r, &get("/img/a.gif", &[])));
}

#[test]
fn methods() {
    let r = one(json!({"methods": ["get", "HEAD"]}));
    assert!(hits(&r, &req("GET", "h", "/", &[])));
    assert!(hits(&r, &req("HEAD", "h", "/", &[])));
    assert!(!hits(&r, &req("POST", "h", "/", &[])));
}

#[test]
fn header_matchers() {
    let r = one(json!({"headers": {"X-Env": "staging"}}));
    assert!(hits(&r, &get("/", &[("x-env", "staging")])));
    assert!(
        !hits(&r, &get("/", &[("x-env", "Staging")])),
        "values are case-sensitive"
    );
    assert!(!hits(&r, &get("/", &[])));
    // Any value of a repeated header.
    assert!(hits(
        &r,
        &get("/", &[("x-env", "prod"), ("x-env", "staging")])
    ));

    let r = one(json!({"headers": {"x-env": ["a", "b"]}}));
    assert!(hits(&r, &get("/", &[("x-env", "b")])));
    assert!(!hits(&r, &get("/", &[("x-env", "c")])));

    let r = one(json!({"headers": {"user-agent": {"prefix": "curl/"}}}));
    assert!(hits(&r, &get("/", &[("user-agent", "curl/8.0")])));
    assert!(!hits(&r, &get("/", &[("user-agent", "Mozilla curl/8.0")])));

    let r = one(json!({"headers": {"accept": {"suffix": "json"}}}));
    assert!(hits(&r, &get("/", &[("accept", "application/json")])));

    let r = one(json!({"headers": {"user-agent": {"regex": "(?i)bot"}}}));
    assert!(hits(&r, &get("/", &[("user-agent", "GoogleBot/2.1")])));
    assert!(!hits(&r, &get("/", &[("user-agent", "Firefox")])));

    let r = one(json!({"headers": {"x-debug": {"present": true}}}));
    assert!(hits(&r, &get("/", &[("x-debug", "")])));
    assert!(!hits(&r, &get("/", &[])));

    let r = one(json!({"headers": {"authorization": {"present": false}}}));
    assert!(hits(&r, &get("/", &[])));
    assert!(!hits(&r, &get("/", &[("authorization", "Bearer x")])));

    let r = one(json!({"headers": {"x-n": {"exact": "007"}}}));
    assert!(hits(&r, &get("/", &[("x-n", "007")])));
}

#[test]
fn cookie_matchers() {
    let r = one(json!({"cookies": {"beta": "yes", "sid": {"present": true}}}));
    assert!(hits(&r, &get("/", &[("cookie", "sid=1; beta=yes")])));
    assert!(
        hits(
            &r,
            &get("/", &[("cookie", "sid=1"), ("cookie", "beta=\"yes\"")])
        ),
        "split cookie headers, quoted value"
    );
    assert!(!hits(&r, &get("/", &[("cookie", "beta=yes")])));
    assert!(!hits(&r, &get("/", &[("cookie", "sid=1; beta=no")])));
    assert!(!hits(&r, &get("/", &[("cookie", "sid=1; xbeta=yes")])));
    assert!(!hits(&r, &get("/", &[("x-cookie", "sid=1; beta=yes")])));
}

#[test]
fn query_matchers_decode_values() {
    let r = one(json!({"query": {"v": 2, "q": "a b", "debug": {"present": true}}}));
    assert!(hits(&r, &get("/s?v=2&q=a%20b&debug", &[])));
    assert!(hits(&r, &get("/s?debug=&q=a+b&v=2", &[])));
    assert!(!hits(&r, &get("/s?v=3&q=a%20b&debug", &[])));
    assert!(!hits(&r, &get("/s?v=2&q=a%20b", &[])));
    assert!(!hits(&r, &get("/s", &[])));

    let r = one(json!({"query": {"name": {"regex": "^caf\u{e9}$"}}}));
    assert!(hits(&r, &get("/?name=caf%C3%A9", &[])));
    // A broken escape stays as it is.
    let r = one(json!({"query": {"p": "100%"}}));
    assert!(hits(&r, &get("/?p=100%", &[])));
}

#[test]
fn all_conditions_of_a_rule_must_hold() {
    let r = one(json!({
        "host": "api.example.com",
        "path_prefix": "/v1/",
        "methods": ["POST"],
        "headers": {"content-type": {"prefix": "application/json"}},
        "cookies": {"beta": "1"},
        "query": {"dry": "no"},
    }));
    let full = |host: &str, method: &str, path: &str, ct: &str, cookie: &str| {
        req(
            method,
            host,
            path,
            &[("content-type", ct), ("cookie", cookie)],
        )
    };
    assert!(hits(
        &r,
        &full(
            "api.example.com",
            "POST",
            "/v1/x?dry=no",
            "application/json",
            "beta=1"
        )
    ));
    assert!(!hits(
        &r,
        &full(
            "www.example.com",
            "POST",
            "/v1/x?dry=no",
            "application/json",
            "beta=1"
        )
    ));
    assert!(!hits(
        &r,
        &full(
            "api.example.com",
            "GET",
            "/v1/x?dry=no",
            "application/json",
            "beta=1"
        )
    ));
    assert!(!hits(
        &r,
        &full(
            "api.example.com",
            "POST",
            "/v2/x?dry=no",
            "application/json",
            "beta=1"
        )
    ));
    assert!(!hits(
        &r,
        &full(
            "api.example.com",
            "POST",
            "/v1/x?dry=no",
            "text/plain",
            "beta=1"
        )
    ));
    assert!(!hits(
        &r,
        &full(
            "api.example.com",
            "POST",
            "/v1/x?dry=no",
            "application/json",
            "beta=0"
        )
    ));
    assert!(!hits(
        &r,
        &full(
            "api.example.com",
            "POST",
            "/v1/x?dry=yes",
            "application/json",
            "beta=1"
        )
    ));
}

#[test]
fn first_matching_rule_wins_then_default_then_pass_through() {
    let cfg = json!({"rules": [
        {"name": "admin", "match": {"path_prefix": "/admin"}, "pool": "a"},
        {"name": "api", "match": {"path_prefix": "/api"}, "pool": "b"},
        {"name": "api-beta", "match": {"path_prefix": "/api", "headers": {"x-beta": "1"}}, "pool": "c"},
        {"match": {"path_prefix": "/"}, "pool": "d"},
    ]});
    let r = router(cfg.clone());
    assert_eq!(
        rule_name(&r, &get("/admin/x", &[])).as_deref(),
        Some("admin")
    );
    assert_eq!(pool(&r, &get("/api/x", &[])).as_deref(), Some("b"));
    // The broader `api` rule comes first, so `api-beta` never wins.
    assert_eq!(
        pool(&r, &get("/api/x", &[("x-beta", "1")])).as_deref(),
        Some("b")
    );
    assert_eq!(rule_name(&r, &get("/other", &[])).as_deref(), Some("rule3"));

    let r = router(
        json!({"rules": [{"match": {"path_prefix": "/a"}, "pool": "a"}], "default": {"pool": "z"}}),
    );
    assert_eq!(pool(&r, &get("/b", &[])).as_deref(), Some("z"));
    assert_eq!(r.choose(&get("/b", &[])), Some(Chosen::Default));

    let r = router(json!({"rules": [{"match": {"path_prefix": "/a"}, "pool": "a"}]}));
    assert_eq!(
        r.route(&get("/b", &[])),
        None,
        "no match, no default: pass through"
    );

    // A rule without a pool matches (stops the search) but leaves the route's pool.
    let r = router(json!({"rules": [
        {"match": {"path_prefix": "/static"}, "response_headers": {"set": {"cache-control": "max-age=60"}}},
        {"pool": "b"},
    ]}));
    let (_, d) = r.route(&get("/static/a.css", &[])).unwrap();
    assert_eq!(d, Decision::default());
    assert_eq!(pool(&r, &get("/x", &[])).as_deref(), Some("b"));
}

/// Counts how `n` requests made by `make(i)` spread over the pools.
fn spread(
    r: &Router,
    n: usize,
    make: impl Fn(usize) -> Request,
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for i in 0..n {
        *m.entry(pool(r, &make(i)).unwrap()).or_insert(0) += 1;
    }
    m
}

fn assert_within(
    counts: &std::collections::BTreeMap<String, usize>,
    want: &[(&str, f64)],
    n: usize,
    tol: f64,
) {
    for (p, share) in want {
        let got = *counts.get(*p).unwrap_or(&0) as f64 / n as f64;
        assert!(
            (got - share).abs() <= tol,
            "pool {p}: {got:.4} of requests, want {share} ± {tol}: {counts:?}"
        );
    }
}

#[test]
fn split_by_key_matches_the_weights_over_10k_clients() {
    let r = router(json!({"default": {
        "split": [{"pool": "stable", "weight": 90}, {"pool": "canary", "weight": 10}],
        "sticky": {"key": {"header": "x-user"}},
    }}));
    let n = 10_000;
    let shapes: [fn(usize) -> String; 4] = [
        |i| format!("user-{i}"),
        |i| i.to_string(),
        |i| format!("customer:{:08}", i * 7),
        |i| format!("{i:x}@example.com"),
    ];
    for shape in shapes {
        let c = spread(&r, n, |i| get("/", &[("x-user", &shape(i))]));
        assert_within(&c, &[("stable", 0.9), ("canary", 0.1)], n, 0.02);
    }

    let r = router(json!({"default": {
        "split": [{"pool": "a", "weight": 5}, {"pool": "b", "weight": 3}, {"pool": "c", "weight": 2}],
        "sticky": {"key": "source_ip"},
    }}));
    let c = spread(&r, n, |i| {
        let mut q = get("/", &[]);
        q.source = Some(format!(
            "10.{}.{}.{}:5000",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
        q
    });
    assert_within(&c, &[("a", 0.5), ("b", 0.3), ("c", 0.2)], n, 0.02);
}

#[test]
fn split_without_key_spreads_by_entropy() {
    let r = router(
        json!({"default": {"split": [{"pool": "a", "weight": 1}, {"pool": "b", "weight": 3}]}}),
    );
    let n = 10_000;
    // The glue's entropy: clock nanoseconds xor a per-VM counter; here a plain counter.
    let c = spread(&r, n, |i| {
        let mut q = get("/", &[]);
        q.entropy = 1_700_000_000_000_000_000 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        q
    });
    assert_within(&c, &[("a", 0.25), ("b", 0.75)], n, 0.02);
}

#[test]
fn zero_weight_arm_gets_nobody() {
    let r = router(json!({"default": {
        "split": [{"pool": "old", "weight": 0}, {"pool": "new", "weight": 1}],
        "sticky": {"key": {"header": "x-user"}},
    }}));
    let c = spread(&r, 1000, |i| get("/", &[("x-user", &i.to_string())]));
    assert_eq!(c.get("old"), None);
}

#[test]
fn sticky_key_is_deterministic() {
    let r = router(json!({"default": {
        "split": [{"pool": "a", "weight": 50}, {"pool": "b", "weight": 50}],
        "sticky": {"key": [{"cookie": "uid"}, {"header": "x-user"}, "source_ip"]},
    }}));
    for i in 0..200 {
        let user = format!("u{i}");
        let first = pool(&r, &get("/x", &[("x-user", &user)]));
        for path in ["/y", "/z?q=1"] {
            assert_eq!(pool(&r, &get(path, &[("x-user", &user)])), first);
        }
        // The cookie source comes first in the list, and hashes the same bytes.
        assert_eq!(
            pool(
                &r,
                &get(
                    "/",
                    &[("cookie", &format!("uid={user}")), ("x-user", "other")]
                )
            ),
            first
        );
    }
    // Source IP: the port does not matter.
    let at = |addr: &str| {
        let mut q = get("/", &[]);
        q.source = Some(addr.to_string());
        pool(&r, &q)
    };
    for i in 0..50 {
        assert_eq!(
            at(&format!("192.0.2.{i}:1000")),
            at(&format!("192.0.2.{i}:2000"))
        );
        assert_eq!(
            at(&format!("[2001:db8::{i}]:1000")),
            at(&format!("[2001:db8::{i}]:3000"))
        );
    }
}

#[test]
fn sticky_cookie_wins_and_is_set_once() {
    let r = router(json!({"default": {
        "split": [{"pool": "stable", "weight": 99}, {"pool": "canary", "weight": 1}],
        "sticky": {"cookie": "sluice-arm", "key": {"header": "x-user"}, "max_age": 3600},
    }}));
    // No cookie: chosen by the key, and the cookie is set.
    let (_, d) = r.route(&get("/", &[("x-user", "alice")])).unwrap();
    let arm = d.pool.clone().unwrap();
    assert_eq!(
        d.set_cookie.as_deref(),
        Some(format!("sluice-arm={arm}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax").as_str())
    );
    // The cookie wins over the key, whatever the key says; no new cookie.
    for arm in ["stable", "canary"] {
        for i in 0..100 {
            let (_, d) = r
                .route(&get(
                    "/",
                    &[
                        ("x-user", &format!("user{i}")),
                        ("cookie", &format!("a=b; sluice-arm={arm}")),
                    ],
                ))
                .unwrap();
            assert_eq!(d.pool.as_deref(), Some(arm));
            assert_eq!(d.set_cookie, None);
        }
    }
    // A cookie naming no arm is replaced.
    let (_, d) = r
        .route(&get(
            "/",
            &[("cookie", "sluice-arm=gone"), ("x-user", "alice")],
        ))
        .unwrap();
    assert_eq!(d.pool.as_deref(), Some(arm.as_str()));
    assert!(d
        .set_cookie
        .unwrap()
        .starts_with(&format!("sluice-arm={arm};")));
}

#[test]
fn sticky_cookie_without_key_and_a_drained_arm() {
    let r = router(json!({"default": {
        "split": [{"pool": "stable", "weight": 1}, {"pool": "canary", "weight": 0}],
        "sticky": {"cookie": "arm", "path": "/shop", "domain": "example.com", "secure": true},
    }}));
    // The canary is drained: its cookie is ignored, the client moves and gets a new cookie.
    let mut q = get("/", &[("cookie", "arm=canary")]);
    q.entropy = 7;
    let (_, d) = r.route(&q).unwrap();
    assert_eq!(d.pool.as_deref(), Some("stable"));
    assert_eq!(
        d.set_cookie.as_deref(),
        Some("arm=stable; Path=/shop; Domain=example.com; HttpOnly; SameSite=Lax; Secure")
    );
}

#[test]
fn hash_key_sources() {
    let with = |key: Value, q: &Request| {
        let r = router(json!({"default": {"pool": "ring", "hash_key": key}}));
        r.route(q)
            .unwrap()
            .1
            .hash_key
            .map(|k| String::from_utf8(k).unwrap())
    };
    let mut q = req(
        "GET",
        "Shop.Example.com:8443",
        "/cart/1?session=s%2F1",
        &[("x-user", "u1"), ("cookie", "sid=c1")],
    );
    q.source = Some("203.0.113.9:4711".to_string());
    assert_eq!(with(json!({"header": "X-User"}), &q).as_deref(), Some("u1"));
    assert_eq!(with(json!({"cookie": "sid"}), &q).as_deref(), Some("c1"));
    assert_eq!(
        with(json!({"query": "session"}), &q).as_deref(),
        Some("s/1")
    );
    assert_eq!(with(json!("source_ip"), &q).as_deref(), Some("203.0.113.9"));
    assert_eq!(with(json!("path"), &q).as_deref(), Some("/cart/1"));
    assert_eq!(with(json!("host"), &q).as_deref(), Some("shop.example.com"));
    // The first source present wins; none present: no key (the host's default).
    assert_eq!(
        with(json!([{"header": "x-none"}, {"cookie": "sid"}]), &q).as_deref(),
        Some("c1")
    );
    assert_eq!(with(json!([{"header": "x-none"}]), &q), None);
    let empty = get("/", &[("x-user", "")]);
    assert_eq!(
        with(json!({"header": "x-user"}), &empty),
        None,
        "an empty value is no key"
    );

    let r = router(json!({"default": {"pool": "ring", "hash_key": "source_ip"}}));
    assert!(r.needs_source());
    let r = router(json!({"default": {"pool": "ring", "hash_key": "path"}}));
    assert!(!r.needs_source());
}

fn rewritten(rule: Value, path: &str) -> Decision {
    router(json!({"rules": [rule]}))
        .route(&get(path, &[]))
        .unwrap()
        .1
}

#[test]
fn rewrites() {
    let prefix = |to: &str, path: &str| {
        rewritten(
            json!({"match": {"path_prefix": "/api/"}, "rewrite": {"path_prefix": to}}),
            path,
        )
        .path
        .unwrap()
    };
    assert_eq!(prefix("/v2/", "/api/users?id=1"), "/v2/users?id=1");
    assert_eq!(prefix("/", "/api/users"), "/users");
    assert_eq!(prefix("/", "/api/"), "/");
    let r = rewritten(
        json!({"match": {"path_prefix": "/api"}, "rewrite": {"path_prefix": "/"}}),
        "/api/x",
    );
    assert_eq!(r.path.as_deref(), Some("/x"), "no double slash");
    let r = rewritten(
        json!({"match": {"path_prefix": "/api"}, "rewrite": {"path_prefix": "/"}}),
        "/api",
    );
    assert_eq!(r.path.as_deref(), Some("/"));

    let re = json!({"match": {"path_regex": "^/u/"}, "rewrite": {
        "path_regex": {"pattern": "^/u/([0-9]+)/(?P<rest>.*)$", "replace": "/users/$1/${rest}"},
        "host": "users.internal:8080",
    }});
    let d = rewritten(re, "/u/42/profile?tab=1");
    assert_eq!(d.path.as_deref(), Some("/users/42/profile?tab=1"));
    assert_eq!(d.host.as_deref(), Some("users.internal:8080"));
    assert_eq!(d.pool, None, "a rewrite alone keeps the route's pool");

    // Every match is replaced; the query is untouched.
    let d = rewritten(
        json!({"rewrite": {"path_regex": {"pattern": "-", "replace": "_"}}}),
        "/a-b-c?x=a-b",
    );
    assert_eq!(d.path.as_deref(), Some("/a_b_c?x=a-b"));
    // A regex that eats the leading slash still yields an absolute path.
    let d = rewritten(
        json!({"rewrite": {"path_regex": {"pattern": "^/old", "replace": ""}}}),
        "/old",
    );
    assert_eq!(d.path.as_deref(), Some("/"));
    // Prefix first, then regex.
    let d = rewritten(
        json!({"match": {"path_prefix": "/a/"}, "rewrite": {"path_prefix": "/b/", "path_regex": {"pattern": "^/b/", "replace": "/c/"}}}),
        "/a/x",
    );
    assert_eq!(d.path.as_deref(), Some("/c/x"));
    // No rewrite: no path property.
    assert_eq!(rewritten(json!({"pool": "p"}), "/a").path, None);
}

#[test]
fn header_ops_are_compiled_lowercase_in_order() {
    let r = router(json!({"default": {
        "request_headers": {"set": {"X-A": "1"}, "add": {"x-b": "2"}, "remove": ["X-C"]},
        "response_headers": {"set": {"cache-control": "no-store"}},
    }}));
    let a = r.action(Chosen::Default).unwrap();
    assert_eq!(
        a.request_headers.set,
        vec![("x-a".to_string(), "1".to_string())]
    );
    assert_eq!(
        a.request_headers.add,
        vec![("x-b".to_string(), "2".to_string())]
    );
    assert_eq!(a.request_headers.remove, vec!["x-c".to_string()]);
    assert!(!a.response_headers.is_empty());
}

#[test]
fn config_errors_are_clear() {
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "the configuration: expected a table"),
        (json!({"rules": [["r"]]}), "rules[0]: expected a table"),
        (json!({"default": {"split": [{"pool": "a", "weight": 1}], "sticky": ["arm"]}}), "default.sticky: expected a table"),
        (json!({"rules": [{"rewrite": {"path_regex": ["a", "b"]}}]}), "rules[0].rewrite.path_regex: expected a table"),
        (json!({"default": {"split": [["a", 1]]}}), "default.split[0]: expected a table"),
        (json!({"rule": []}), "unknown field `rule`"),
        (json!({"rules": [{"match": {"path_prefx": "/"}}]}), "rules[0].match.path_prefx: unknown field `path_prefx`, expected one of `host`"),
        (json!({"rules": [{"pool": 3}]}), "rules[0].pool: invalid type: integer `3`, expected a string"),
        (json!({"rules": [{"match": {"path_regex": "(unclosed"}}]}), "rules[0] (rule0).match.path_regex: bad regex \"(unclosed\""),
        (json!({"rules": [{"name": "x", "match": {"path_prefix": "api"}}]}), "rules[0] (x).match.path_prefix: \"api\" must start with `/`"),
        (json!({"rules": [{"match": {"host": "a.*.com"}}]}), "match.host: \"a.*.com\" is not a host pattern"),
        (json!({"rules": [{"match": {"host": []}}]}), "match.host: empty list"),
        (json!({"rules": [{"match": {"methods": ["GE T"]}}]}), "\"GE T\" is not an HTTP method"),
        (json!({"rules": [{"match": {"headers": {"bad name": "x"}}}]}), "match.headers.bad name: \"bad name\" is not a header name"),
        (json!({"rules": [{"match": {"headers": {"x": {"regx": "a"}}}}]}), "match.headers.x: unknown matcher `regx`"),
        (json!({"rules": [{"match": {"headers": {"x": {"regex": "a", "exact": "b"}}}}]}), "match.headers.x: expected a value"),
        (json!({"rules": [{"match": {"headers": {"x": {"present": "yes"}}}}]}), "`present` takes true or false"),
        (json!({"rules": [{"match": {"cookies": {"c": {"regex": "[z-a]"}}}}]}), "match.cookies.c: bad regex"),
        (json!({"rules": [{"match": {"query": {"q": []}}}]}), "match.query.q: empty list of values"),
        (json!({"rules": [{"pool": "a", "split": [{"pool": "b", "weight": 1}]}]}), "`pool` and `split` are exclusive"),
        (json!({"rules": [{"pool": ""}]}), "rules[0] (rule0).pool: \"\" is not a pool name"),
        (json!({"default": {"split": []}}), "default.split: no arms"),
        (json!({"default": {"split": [{"pool": "a", "weight": 0}]}}), "default.split: the weights sum to 0"),
        (json!({"default": {"split": [{"pool": "a", "weight": -1}]}}), "default.split[0].weight: invalid value: integer `-1`"),
        (json!({"default": {"split": [{"pool": "a", "weight": 1}, {"pool": "a", "weight": 2}]}}), "\"a\" appears twice"),
        (json!({"default": {"split": [{"pool": "a"}]}}), "missing field `weight`"),
        (json!({"default": {"pool": "a", "sticky": {"cookie": "c"}}}), "default.sticky: only with `split`"),
        (json!({"default": {"split": [{"pool": "a", "weight": 1}], "sticky": {}}}), "default.sticky: set `cookie`, `key` or both"),
        (json!({"default": {"split": [{"pool": "a", "weight": 1}], "sticky": {"key": "ip"}}}), "default.sticky.key: unknown key \"ip\""),
        (json!({"default": {"split": [{"pool": "a", "weight": 1}], "sticky": {"key": "path", "max_age": 5}}}), "cookie attributes: set `cookie` too"),
        (json!({"default": {"split": [{"pool": "a b", "weight": 1}]}}), "\"a b\" is not a pool name"),
        (json!({"default": {"split": [{"pool": "a;b", "weight": 1}], "sticky": {"cookie": "arm"}}}), "pool \"a;b\" cannot be a cookie value"),
        (json!({"default": {"split": [{"pool": "a", "weight": 1}], "sticky": {"cookie": "a=b"}}}), "default.sticky.cookie: \"a=b\" is not a cookie name"),
        (json!({"default": {"hash_key": {"header": "x", "cookie": "y"}}}), "default.hash_key: expected"),
        (json!({"default": {"hash_key": []}}), "default.hash_key: empty list"),
        (json!({"default": {"rewrite": {"path_prefix": "/x"}}}), "default.rewrite.path_prefix: replaces the rule's `match.path_prefix`, which this default action has not"),
        (json!({"rules": [{"rewrite": {"path_prefix": "/x"}}]}), "which this rule has not"),
        (json!({"rules": [{"match": {"path_prefix": "/a"}, "rewrite": {"path_prefix": "x"}}]}), "rewrite.path_prefix: \"x\" must start with `/`"),
        (json!({"default": {"rewrite": {"path_regex": {"pattern": "a"}}}}), "default.rewrite.path_regex: missing field `replace`"),
        (json!({"default": {"rewrite": {"host": "a/b"}}}), "default.rewrite.host: \"a/b\" is not a host"),
        (json!({"default": {"request_headers": {"set": {"x": "a\nb"}}}}), "default.request_headers.set.x: the value has CR, LF or NUL"),
        (json!({"default": {"response_headers": {"remove": [""]}}}), "default.response_headers.remove: \"\" is not a header name"),
        (json!({"default": {"name": "d"}}), "default: `name` is only for rules"),
        (json!({"default": {"match": {}}}), "default: `match` is only for rules"),
        (json!({"rules": [{"name": " "}]}), "rules[0].name: must not be empty"),
    ];
    for (cfg, want) in cases {
        let e = config_error(cfg.clone());
        assert!(
            e.contains(want),
            "config {cfg}\n  error: {e}\n  wanted: {want}"
        );
        assert!(!e.contains("line 1 column"), "no JSON positions: {e}");
    }
    // Not JSON at all, trailing garbage.
    assert!(parse(Some(b"rules = []"))
        .unwrap_err()
        .starts_with("expected value"));
    assert!(parse(Some(b"{} x"))
        .unwrap_err()
        .contains("trailing characters"));
}

#[test]
fn huge_regex_is_refused_not_compiled_forever() {
    let e = config_error(json!({"rules": [{"match": {"path_regex": "a{1000}{1000}"}}]}));
    assert!(e.contains("bad regex"), "{e}");
    let e = config_error(json!({"rules": [{"match": {"path_regex": "a".repeat(5000)}}]}));
    assert!(e.contains("regex longer than 4096 bytes"), "{e}");
}
