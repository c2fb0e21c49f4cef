//! Hardening tests: filters (issue #15, item 2). One byte must not crash a filter, and
//! a filter made to fail on purpose must not stall anything else.
//!
//! - Header bytes the Proxy-Wasm SDKs cannot represent, oversized header sections and
//!   control bytes are answered before any filter runs (400 / 431), never by a filter
//!   failure (503), with the real WAF (the CRS) and a headers filter on the route.
//! - A filter that traps on demand, with a slow start (as the WAF's), is rebuilt off the
//!   worker thread: an unrelated route on the same thread keeps its latency, and the
//!   crash-loop guard counts rebuild time and trips.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::exchange as raw;
use crate::support::*;
use serde_json::Value;

/// A GET of `path` with one extra header line (raw bytes, CRLF added).
fn get_with(path: &str, header_line: &[u8]) -> Vec<u8> {
    let mut r =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n").into_bytes();
    r.extend_from_slice(header_line);
    r.extend_from_slice(b"\r\n\r\n");
    r
}

/// The CRS in the WAF filter, as policies/default.toml configures it, in front of
/// `/echo/waf` with a headers filter after it; `/echo/plain` runs no filter, the rest
/// the headers filter only (the origin echoes every `/echo/...` request).
fn waf_policy(origin: &Proc, limits: &str) -> String {
    format!(
        r#"[limits]
{limits}

[pools.o]
peers = ["{origin}"]

{waf}
[filters.edge-headers]
module = {hdr}
config = {{ request = {{ set = {{ "x-forwarded-by" = "sluice" }} }}, response = {{ set = {{ "x-served-by" = "sluice" }} }}, chain_tag = "edge-headers" }}

[[routes]]
name = "echo"
path_prefix = "/echo/waf"
filters = ["waf", "edge-headers"]
pool = "o"

[[routes]]
name = "plain"
path_prefix = "/echo/plain"
pool = "o"

[[routes]]
name = "site"
path_prefix = "/"
filters = ["edge-headers"]
pool = "o"
"#,
        origin = origin.addr,
        waf = waf_filter(),
        hdr = module("headers.wasm"),
    )
}

/// A filter's failure counters from `/admin/status`.
fn failures(s: &Sluice, name: &str) -> Value {
    let status = s.status();
    status["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no filter {name} in {status}"))["failures"]
        .clone()
}

fn assert_no_filter_failure(s: &Sluice) {
    for name in ["waf", "edge-headers"] {
        let f = failures(s, name);
        for kind in [
            "traps",
            "deadlines",
            "memory",
            "vms_replaced",
            "crash_loop_refusals",
        ] {
            assert_eq!(f[kind], 0, "{name} {kind}: {f}\n{}", s.log());
        }
    }
}

#[test]
fn header_bytes_filters_cannot_read_are_answered_before_any_filter() {
    if !require("crs", CRS_RULES) {
        return;
    }
    let o = origin("o");
    let s = sluice(&waf_policy(&o, ""));
    // Warm up: the WAF answers a clean request (and its VM is up).
    let (st, body) = raw(s.proc.addr, &get_with("/echo/waf/warm", b"X-Ok: 1"));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));

    let cases: &[(&str, &str, &[u8], u16)] = &[
        // Obs-text that is not UTF-8 on filtered routes: refused, never a panic (503).
        (
            "0xFF in a value, WAF route",
            "/echo/waf/a",
            b"X-Bad: abc\xffdef",
            400,
        ),
        (
            "0xFF in a value, headers route",
            "/echo/a",
            b"X-Bad: \xff",
            400,
        ),
        (
            "Latin-1 user agent, WAF route",
            "/echo/waf/a",
            b"User-Agent: caf\xe9",
            400,
        ),
        (
            "0xFF in x-sluice-chain",
            "/echo/a",
            b"X-Sluice-Chain: \xfe\xff",
            400,
        ),
        // The same bytes on a route without filters: passed, as Envoy does.
        (
            "0xFF in a value, no filter",
            "/echo/plain/a",
            b"X-Bad: \xff",
            200,
        ),
        // UTF-8 is what the SDKs read: served.
        (
            "UTF-8 value, WAF route",
            "/echo/waf/a",
            "X-Name: café ✓".as_bytes(),
            200,
        ),
        // Bytes every codec refuses (Pingora's parser answers these itself).
        ("0xFF in a name", "/echo/waf/a", b"X-B\xffd: 1", 400),
        ("NUL in a value", "/echo/waf/a", b"X-Bad: a\x00b", 400),
        (
            "control byte in a value",
            "/echo/waf/a",
            b"X-Bad: a\x01b",
            400,
        ),
        ("DEL in a value", "/echo/waf/a", b"X-Bad: a\x7fb", 400),
        ("ESC in a value", "/echo/a", b"X-Bad: \x1b[31m", 400),
    ];
    let mut wrong = Vec::new();
    for (what, path, line, want) in cases {
        let (got, body) = raw(s.proc.addr, &get_with(path, line));
        if got != *want {
            wrong.push(format!(
                "{what}: {got}, want {want}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), s.log());
    assert_no_filter_failure(&s);
    assert!(metric(&s, "sluice_header_refusals_total{reason=\"not_utf8\"}") >= 4.0);
}

#[test]
fn oversized_header_sections_get_431_before_any_filter() {
    if !require("crs", CRS_RULES) {
        return;
    }
    let o = origin("o");
    let s = sluice(&waf_policy(&o, ""));
    let (st, _) = raw(s.proc.addr, &get_with("/echo/waf/warm", b"X-Ok: 1"));
    assert_eq!(st, 200);

    let line = |n: usize| {
        let mut l = b"X-Big: ".to_vec();
        l.resize(7 + n, b'a');
        l
    };
    // 1 MB: the SDK used to get a non-Ok status on a header edit and panic (503).
    let t = Instant::now();
    let (st, body) = raw(s.proc.addr, &get_with("/echo/waf/a", &line(1_000_000)));
    assert_eq!(
        st,
        431,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    let (st, _) = raw(s.proc.addr, &get_with("/echo/a", &line(1_000_000)));
    assert_eq!(st, 431);
    // Just past the 60 KiB default (Envoy's max_request_headers_kb), on every route.
    let (st, _) = raw(s.proc.addr, &get_with("/echo/plain/a", &line(61 << 10)));
    assert_eq!(st, 431);
    // 101 fields: past max_header_count (Envoy's max_headers_count, 100).
    let mut many = Vec::new();
    for i in 0..101 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.truncate(many.len() - 2);
    let (st, _) = raw(s.proc.addr, &get_with("/echo/a", &many));
    assert_eq!(st, 431);
    // Under the limit: served by the headers filter.
    let (st, body) = raw(s.proc.addr, &get_with("/echo/waf/a", &line(8 << 10)));
    assert_eq!(
        st,
        200,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    eprintln!("oversized headers answered in {:?}", t.elapsed());
    assert_no_filter_failure(&s);
    assert!(metric(&s, "sluice_header_refusals_total{reason=\"too_large\"}") >= 3.0);
    assert!(metric(&s, "sluice_header_refusals_total{reason=\"too_many\"}") >= 1.0);
}

#[test]
fn header_limits_are_policy_keys_with_lines() {
    let o = origin("o");
    // `pass` hands obs-text to filters (as Envoy does): the hostile filter reads headers
    // with the SDK's `_bytes` calls and serves the request.
    let s = sluice(&format!(
        "[limits]\nnon_utf8_headers = \"pass\"\nmax_header_bytes = 4096\n{}",
        one_filter(
            &o,
            "h",
            &module("hostile.wasm"),
            "{ mode = \"panic\", path_prefix = \"/bad\" }"
        )
    ));
    let (st, body) = raw(s.proc.addr, &get_with("/echo/a", b"X-Bad: \xff"));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let mut big = b"X-Big: ".to_vec();
    big.resize(5000, b'a');
    let (st, _) = raw(s.proc.addr, &get_with("/echo/a", &big));
    assert_eq!(st, 431);
    assert_eq!(failures(&s, "h")["traps"], 0);
    let base = "[pools.p]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\npool = \"p\"\n";
    for (bad, msg) in [
        ("non_utf8_headers = \"drop\"", "non_utf8_headers must be"),
        ("max_header_bytes = 10", "max_header_bytes must be"),
        ("max_header_count = 1000", "max_header_count must be"),
        ("rebuild_budget_ms = 0", "rebuild_budget_ms must be"),
    ] {
        let (out, path, _d) = check(&format!("[limits]\n{bad}\n{base}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!("{}:2:", path.display())) && err.contains(msg),
            "{err}"
        );
    }
}

/// p50 and max of `samples`.
fn p50_max(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], *samples.last().unwrap())
}

#[test]
fn a_filter_trapping_on_demand_stalls_no_other_route() {
    let o = origin("o");
    // One worker thread. The hostile filter panics on /h/bad, and each of its VMs takes
    // 300 ms to start (as the WAF compiling the CRS does).
    let s = sluice(&format!(
        r#"[pools.o]
peers = ["{origin}"]
[filters.hostile]
module = {h}
config = {{ mode = "panic", path_prefix = "/echo/h/bad", start_ms = 300 }}
[[routes]]
path_prefix = "/echo/h/"
filters = ["hostile"]
pool = "o"
[[routes]]
path_prefix = "/"
pool = "o"
"#,
        origin = o.addr,
        h = module("hostile.wasm"),
    ));
    let c = client();
    let fast = |c: &reqwest::blocking::Client| {
        let t = Instant::now();
        let r = c.get(s.url("/echo/fast")).send().unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().unwrap();
        t.elapsed()
    };
    // The filter works (and its VM is up); the unrelated route's latency at rest.
    assert_eq!(c.get(s.url("/echo/h/ok")).send().unwrap().status(), 200);
    let rest: Vec<_> = (0..20).map(|_| fast(&c)).collect();
    let (rest_p50, _) = p50_max(rest);

    // Four attackers make the filter trap as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new([
        AtomicU64::new(0), // 503
        AtomicU64::new(0), // other
    ]);
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answers, addr) = (stop.clone(), answers.clone(), s.proc.addr);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (st, _) = raw(addr, &get_with("/echo/h/bad", b"X-A: 1"));
                    answers[usize::from(st != 503)].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // The attack gets going before the measurement starts (the stimulus).
    std::thread::sleep(Duration::from_millis(300));
    let mut under_attack = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        under_attack.push(fast(&c));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status_during = failures(&s, "hostile");
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let n = under_attack.len();
    let (p50, max) = p50_max(under_attack);
    eprintln!(
        "unrelated route: p50 {rest_p50:?} at rest; under attack p50 {p50:?}, max {max:?} over {n} requests; \
         attackers got {} x 503, {} other; hostile failures: {status_during}",
        answers[0].load(Ordering::Relaxed),
        answers[1].load(Ordering::Relaxed),
    );
    assert_eq!(
        answers[1].load(Ordering::Relaxed),
        0,
        "attackers got only 503"
    );
    assert!(
        p50 < Duration::from_millis(50),
        "the unrelated route's p50 went from {rest_p50:?} to {p50:?} under attack"
    );
    // The guard counted the time the rebuilds took (300 ms each, 2.5 s allowed per 10 s)
    // and tripped: the attackers got the failure answer without a rebuild.
    assert!(
        status_during["crash_loop_trips"].as_u64().unwrap() >= 1
            && status_during["crash_loop_refusals"].as_u64().unwrap() >= 1,
        "{status_during}"
    );
    assert!(metric(&s, "sluice_filter_crash_loops_total{filter=\"hostile\"}") >= 1.0);
    assert!(
        metric(
            &s,
            "sluice_filter_vm_rebuild_seconds_total{filter=\"hostile\"}"
        ) >= 2.0
    );
    // After the cooldown the filter serves again.
    let echo: Value = eventually(secs(15), "the filter back after its cooldown", || {
        let r = c.get(s.url("/echo/h/ok")).send().unwrap();
        match r.status().as_u16() {
            200 => Ok(r.json::<Value>().unwrap()),
            other => Err(other),
        }
    });
    assert_eq!(echo_header(&echo, "x-hostile").as_deref(), Some("spared"));
}
