//! `sluice:edge/fleet` (issue #21): the fleet store's key-value operations from component
//! guests. `filters/components/fleet_counter` (a per-client counter middleware that
//! answers 429 past its limit and fails open, plus the `x-kv` line protocol of the
//! Proxy-Wasm `fleetkv` filter) and `filters/components/visits` (an edge function counting
//! visits per path) on a real `redis-server` started here, two Sluice nodes sharing it, a
//! real origin. Requirement name: `redis-server`, except for the tests that need no store.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::fleet::redis;
use crate::support::*;

/// `[server]` key that enables component filters.
const ENABLE: &str = "component_model = true\n";

/// `[fleet]` on `url` (a short timeout and back-off, so outages show quickly).
fn fleet(url: &str, backoff_ms: u64) -> String {
    format!("[fleet]\nredis = \"{url}\"\ntimeout_ms = 200\nbackoff_ms = {backoff_ms}\n")
}

/// `[filters.NAME]`: the `fleet_counter` component.
fn counter(name: &str) -> String {
    format!(
        "[filters.{name}]\nkind = \"component\"\nmodule = {}\n",
        module("components/fleet_counter.wasm")
    )
}

/// Pool `o` and one route per `(path prefix, filter)`.
fn routes(origin: &Proc, routes: &[(&str, &str)]) -> String {
    let mut p = format!("[pools.o]\npeers = [\"{}\"]\n", origin.addr);
    for (i, (prefix, filter)) in routes.iter().enumerate() {
        p += &format!(
            "[[routes]]\nname = \"r{i}\"\npath_prefix = \"{prefix}\"\nfilters = [\"{filter}\"]\npool = \"o\"\n"
        );
    }
    p
}

/// One request counted under `key` with `limit`: status and the counter's headers
/// (`x-counter`, `x-counter-remaining`, `x-counter-error`, `retry-after`; "" when absent).
fn hit(s: &Sluice, path: &str, key: &str, limit: u32) -> (u16, [String; 4]) {
    let r = client()
        .get(s.url(path))
        .header("x-counter-key", key)
        .header("x-counter-limit", limit.to_string())
        .send()
        .unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let headers = [
        h("x-counter"),
        h("x-counter-remaining"),
        h("x-counter-error"),
        h("retry-after"),
    ];
    let status = r.status().as_u16();
    if status == 200 {
        // It went on to the origin.
        assert_eq!(h("x-origin-id"), "fleet-c", "{headers:?}");
    }
    (status, headers)
}

/// One `x-kv` line answered by the guest (or the Proxy-Wasm `fleetkv` filter) on `path`.
fn kv(s: &Sluice, path: &str, line: &str) -> String {
    let r = client()
        .get(s.url(path))
        .header("x-kv", line)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{line}");
    assert_eq!(
        r.headers().get("x-kv-result").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "{line}: answered by the filter"
    );
    r.text().unwrap()
}

#[test]
fn a_component_counter_is_shared_by_two_nodes_and_answers_429_past_its_limit() {
    let Some(redis) = redis() else { return };
    let origin = origin("fleet-c");
    let body = format!(
        "{}{}{}",
        fleet(&redis.url(), 250),
        counter("count"),
        routes(&origin, &[("/", "count")])
    );
    let (a, b) = (
        sluice_with_server(&body, ENABLE),
        sluice_with_server(&body, ENABLE),
    );
    // Alternating nodes, one count: 1..=4 go on, the 5th and 6th are refused by the guest.
    for i in 1..=4u32 {
        let node = if i % 2 == 0 { &b } else { &a };
        let (code, h) = hit(node, "/echo/x", "alice", 4);
        assert_eq!(code, 200, "request {i}: {h:?}");
        assert_eq!(h[0], i.to_string(), "request {i}");
        assert_eq!(h[1], (4 - i).to_string(), "request {i}");
        assert_eq!(h[2], "", "request {i}");
    }
    for node in [&a, &b] {
        let (code, h) = hit(node, "/echo/x", "alice", 4);
        assert_eq!(code, 429, "{h:?}");
        assert_eq!(h[1], "0");
        let retry: u64 = h[3].parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Another client has its own count.
    let (code, h) = hit(&b, "/echo/x", "bob", 4);
    assert_eq!((code, h[0].as_str()), (200, "1"));
    // Without `x-counter-key` the guest counts the client's address (`request-info`).
    let r = client().get(a.url("/echo/y")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-counter"], "1");
    assert!(metric(&a, r#"sluice_fleet_calls_total{op="incr",result="ok"}"#) >= 3.0);
}

#[test]
fn component_keys_are_their_own_and_hostile_keys_and_values_are_refused() {
    let Some(redis) = redis() else { return };
    let origin = origin("fleet-c");
    // `pw` is a Proxy-Wasm filter whose `vm_id` is the component `c1`'s name: the same
    // owner, still not the same keys.
    let body = format!(
        "{}{}{}[filters.pw]\nmodule = {}\nvm_id = \"c1\"\n{}",
        fleet(&redis.url(), 250),
        counter("c1"),
        counter("c2"),
        module("fleetkv.wasm"),
        routes(
            &origin,
            &[
                ("/echo/c1/", "c1"),
                ("/echo/c2/", "c2"),
                ("/echo/pw/", "pw")
            ]
        )
    );
    let (a, b) = (
        sluice_with_server(&body, ENABLE),
        sluice_with_server(&body, ENABLE),
    );
    assert_eq!(kv(&a, "/echo/c1/", "get color"), "absent");
    assert_eq!(kv(&a, "/echo/c1/", "set color 0 blue"), "done");
    assert_eq!(
        kv(&b, "/echo/c1/", "get color"),
        "found blue",
        "another node"
    );
    assert_eq!(
        kv(&b, "/echo/c2/", "get color"),
        "absent",
        "another component"
    );
    assert_eq!(
        kv(&b, "/echo/pw/", "get color"),
        "absent",
        "a Proxy-Wasm filter"
    );
    assert_eq!(kv(&a, "/echo/pw/", "set color 0 red"), "done");
    assert_eq!(kv(&a, "/echo/c1/", "get color"), "found blue");
    assert_eq!(kv(&b, "/echo/pw/", "get color"), "found red");
    // Compare-and-set, per component.
    assert_eq!(kv(&a, "/echo/c1/", "cas color red green"), "swapped 0");
    assert_eq!(kv(&b, "/echo/c1/", "cas color blue green"), "swapped 1");
    assert_eq!(kv(&a, "/echo/c1/", "get color"), "found green");
    assert_eq!(kv(&a, "/echo/c2/", "cas color - x"), "swapped 1");
    assert_eq!(kv(&a, "/echo/c2/", "cas color - y"), "swapped 0");
    // A TTL ends the value.
    assert_eq!(kv(&a, "/echo/c1/", "set short 300 soon-gone"), "done");
    assert_eq!(kv(&b, "/echo/c1/", "get short"), "found soon-gone");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(kv(&b, "/echo/c1/", "get short"), "absent");
    // Hostile input gets a typed error before the store, never a crash: a key over
    // 1,024 bytes, a value over 64 KiB; the largest allowed ones work.
    let long = "k".repeat(1025);
    let r = kv(&a, "/echo/c1/", &format!("get {long}"));
    assert!(
        r.starts_with("failed invalid get: key must be 1 to 1024"),
        "{r}"
    );
    let r = kv(&a, "/echo/c1/", "setn big 65537");
    assert!(
        r.starts_with("failed invalid set: value must be at most 65536"),
        "{r}"
    );
    assert_eq!(
        kv(&a, "/echo/c1/", &format!("setn {} 65536", "k".repeat(1024))),
        "done"
    );
    let r = kv(&b, "/echo/c1/", &format!("get {}", "k".repeat(1024)));
    assert_eq!(r.len(), "found ".len() + 65536);
    // The guest is still healthy, and counts.
    let (code, h) = hit(&a, "/echo/c1/x", "carol", 5);
    assert_eq!((code, h[0].as_str()), (200, "1"));
    // A value the counter cannot count (the guest wrote it under its counter's key): Redis
    // answers an error for that key alone, the guest fails open, and the node does not
    // take the store for down (no back-off: the next call, another key, is served).
    assert_eq!(kv(&a, "/echo/c1/", "set client:zed 0 abc"), "done");
    let (code, h) = hit(&a, "/echo/c1/x", "zed", 5);
    assert_eq!((code, h[2].as_str()), (200, "unavailable"));
    assert_eq!(kv(&a, "/echo/c1/", "get color"), "found green");
    assert!(metric(&a, r#"sluice_fleet_calls_total{op="cas",result="ok"}"#) >= 2.0);
}

#[test]
fn redis_down_reaches_the_guest_as_unavailable_and_its_fallback_is_served_at_once() {
    let Some(mut redis) = redis() else { return };
    let origin = origin("fleet-c");
    let body = format!(
        "{}{}{}",
        fleet(&redis.url(), 1000),
        counter("count"),
        routes(&origin, &[("/", "count")])
    );
    let s = sluice_with_server(&body, ENABLE);
    assert_eq!(hit(&s, "/echo/x", "dave", 5).1[0], "1");
    redis.stop();
    // Fail open: served by the origin with the guest's note, within the store's timeout
    // (200 ms) per request, then at once while the node backs off.
    // (A refused connection is `unavailable`; a call that was waiting when Redis died may
    // end in `timeout`.)
    let t = Instant::now();
    let mut errors = Vec::new();
    for i in 0..10 {
        let (code, h) = hit(&s, "/echo/x", "dave", 5);
        assert_eq!(code, 200, "request {i}");
        assert_eq!(h[0], "", "request {i}: not counted");
        assert!(
            h[2] == "unavailable" || h[2] == "timeout",
            "request {i}: {h:?}"
        );
        errors.push(h[2].clone());
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(errors.iter().any(|e| e == "unavailable"), "{errors:?}");
    let r = kv(&s, "/", "get color");
    assert!(
        r.starts_with("failed unavailable ") || r == "failed timeout ",
        "{r}"
    );
    // Back: the guest counts again.
    redis.start();
    eventually(secs(20), "the counter counts again", || {
        match hit(&s, "/echo/x", "erin", 5) {
            (200, h) if !h[0].is_empty() && h[2].is_empty() => Ok(()),
            other => Err(other),
        }
    });
}

#[test]
fn a_store_that_never_answers_times_out_without_holding_other_requests() {
    // A "Redis" that accepts connections and never answers: every call waits for the
    // store's timeout, on the guest's task alone.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", hole.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in hole.incoming().take(16) {
            conns.push(c);
        }
        conns
    });
    let origin = origin("fleet-c");
    // A long timeout (1 s), no back-off: each call waits it out.
    let body = format!(
        "[fleet]\nredis = \"{url}\"\ntimeout_ms = 1000\nbackoff_ms = 0\n{}{}",
        counter("count"),
        routes(&origin, &[("/", "count")])
    );
    let s = sluice_with_server(&body, ENABLE);
    let t = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let url = s.url("/echo/k");
            std::thread::spawn(move || {
                let r = client()
                    .get(url)
                    .header("x-counter-key", format!("k{i}"))
                    .send()
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers()
                        .get("x-counter-error")
                        .map(|v| v.to_str().unwrap().to_string()),
                )
            })
        })
        .collect();
    // Meanwhile, on the same (single) worker thread, a request through the same
    // component that asks nothing of the store (a bad `x-kv` line) is served at once,
    // while the four still wait.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(kv(&s, "/other", "nonsense"), "bad x-kv");
    assert!(calls.iter().all(|c| !c.is_finished()), "{:?}", t.elapsed());
    for c in calls {
        let (code, error) = c.join().unwrap();
        assert_eq!(code, 200);
        assert_eq!(error.as_deref(), Some("timeout"));
    }
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(
        metric(
            &s,
            r#"sluice_fleet_calls_total{op="incr",result="timeout"}"#
        ) >= 4.0
    );
    drop(s);
    drop(held);
}

#[test]
fn without_fleet_the_guest_hears_not_configured() {
    let origin = origin("fleet-c");
    let body = format!("{}{}", counter("count"), routes(&origin, &[("/", "count")]));
    let s = sluice_with_server(&body, ENABLE);
    let (code, h) = hit(&s, "/echo/x", "frank", 5);
    assert_eq!(code, 200);
    assert_eq!(h[2], "not-configured");
    assert_eq!(kv(&s, "/", "set color 0 blue"), "failed not-configured ");
}

/// `GET path` on `s` through `visits`: status, `x-visits` or `x-fleet-error`, body.
fn visit(s: &Sluice, path: &str) -> (u16, String, String) {
    let r = client().get(s.url(path)).send().unwrap();
    let status = r.status().as_u16();
    let h = r
        .headers()
        .get(if status == 200 {
            "x-visits"
        } else {
            "x-fleet-error"
        })
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, h, r.text().unwrap())
}

#[test]
fn an_edge_function_counts_on_two_nodes_with_concurrently_reused_instances() {
    let Some(mut redis) = redis() else { return };
    // `visits` imports only `sluice:edge/fleet` (no request state): concurrent reuse is
    // allowed, unlike `request-info` or `upstream`.
    let body = format!(
        "{}[filters.visits]\nkind = \"component\"\nmodule = {}\n\
         reuse_requests = 1000\nreuse_concurrency = 4\n\
         [[routes]]\nname = \"v\"\nfunction = \"visits\"\n",
        fleet(&redis.url(), 250),
        module("components/visits.wasm"),
    );
    let (a, b) = (
        sluice_with_server(&body, ENABLE),
        sluice_with_server(&body, ENABLE),
    );
    for i in 1..=4 {
        let node = if i % 2 == 0 { &b } else { &a };
        let (code, n, text) = visit(node, "/page");
        assert_eq!((code, n.as_str()), (200, i.to_string().as_str()));
        assert_eq!(text, format!("visit {i} of /page today\n"));
    }
    assert_eq!(visit(&b, "/other?x=1").1, "1");
    // Sixteen at once on both nodes: each counted exactly once.
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url("/page")
            } else {
                b.url("/page")
            };
            std::thread::spawn(move || {
                let r = client().get(url).send().unwrap();
                assert_eq!(r.status(), 200);
                r.headers()["x-visits"]
                    .to_str()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            })
        })
        .collect();
    let mut seen: Vec<u32> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, (5..=20).collect::<Vec<_>>());
    // The store gone: the function still answers, with its own 503.
    redis.stop();
    let (code, kind, text) = visit(&a, "/page");
    assert_eq!(code, 503, "{text}");
    assert!(kind == "unavailable" || kind == "timeout", "{kind}: {text}");
}
