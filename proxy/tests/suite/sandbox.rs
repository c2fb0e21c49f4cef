//! Fault isolation: filters that panic, loop forever, eat memory, flood headers or
//! misuse hostcalls are contained within their limits, answered by their failure
//! policy and counted, while the proxy and other routes keep serving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const WILD_POINTER_WAT: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; a key pointer far outside the 64 KiB memory
    (drop (call $get (i32.const 0) (i32.const -256) (i32.const 100) (i32.const 8) (i32.const 16)))
    (i32.const 0)))
"#;

#[test]
fn misbehaving_filters_are_contained_under_load() {
    let o = origin("o");
    let dir = tempfile::tempdir().unwrap();
    let wild = dir.path().join("wild.wat");
    std::fs::write(&wild, WILD_POINTER_WAT).unwrap();
    let h = module("hostile.wasm");
    // Two workers: each has its own VMs to fail, replace and count.
    let s = sluice_threads(
        &format!(
            r#"[limits]
callback_ms = 100
memory_mb = 32

[pools.o]
peers = ["{origin}"]

[filters.panic]
module = {h}
config = {{ mode = "panic", path_prefix = "/echo/bad" }}
[filters.loop]
module = {h}
config = {{ mode = "loop", path_prefix = "/echo/bad" }}
on_failure = "fail_open"
[filters.grow]
module = {h}
config = {{ mode = "grow", path_prefix = "/echo/bad" }}
failure_status = 507
[filters.flood]
module = {h}
config = {{ mode = "huge_header", path_prefix = "/echo/bad" }}
[filters.resp]
module = {h}
config = {{ mode = "response_panic", path_prefix = "/echo/bad" }}
[filters.after]
module = {hdr}
config = {{ request = {{ set = {{ "x-after" = "1" }} }} }}
[filters.wild]
module = {wild:?}

[[routes]]
path_prefix = "/echo/bad/panic"
filters = ["panic"]
pool = "o"
[[routes]]
path_prefix = "/echo/bad/loop"
filters = ["loop", "after"]
pool = "o"
[[routes]]
path_prefix = "/echo/bad/grow"
filters = ["grow"]
pool = "o"
[[routes]]
path_prefix = "/echo/bad/flood"
filters = ["flood"]
pool = "o"
[[routes]]
path_prefix = "/echo/bad/resp"
filters = ["resp"]
pool = "o"
[[routes]]
path_prefix = "/echo/bad/wild"
filters = ["wild"]
pool = "o"
[[routes]]
path_prefix = "/"
filters = ["panic", "loop", "grow", "flood", "resp"]
pool = "o"
"#,
            origin = o.addr,
            hdr = module("headers.wasm"),
            wild = wild.display().to_string(),
        ),
        2,
    );
    let pid = s.proc.child.id();

    // Good traffic runs beside the bad requests on the same filters, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let good = Arc::new(AtomicU64::new(0));
    let bad_good = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (url, stop, good, bad_good) = (
            s.url("/echo/good"),
            stop.clone(),
            good.clone(),
            bad_good.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let ok = c
                    .get(&url)
                    .send()
                    .ok()
                    .filter(|r| r.status() == 200)
                    .and_then(|r| r.json::<Value>().ok());
                match ok {
                    Some(echo) if echo_header(&echo, "x-hostile").as_deref() == Some("spared") => {
                        good.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => bad_good.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let c = client();
    // Warm-up, then the memory baseline.
    for _ in 0..20 {
        c.get(s.url("/echo/good")).send().unwrap();
    }
    let baseline = rss_kib(pid);

    for round in 0..3 {
        // A panic: fail_closed, 503 by default.
        let r = c.get(s.url("/echo/bad/panic")).send().unwrap();
        assert_eq!(r.status(), 503, "round {round}");
        assert_eq!(r.text().unwrap(), "filter panic failed\n");
        // An endless loop: stopped at its deadline; fail_open skips it, the next filter runs.
        let t = Instant::now();
        let r = c.get(s.url("/echo/bad/loop")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "deadline took {:?}",
            t.elapsed()
        );
        let echo: Value = r.json().unwrap();
        assert_eq!(echo_header(&echo, "x-after").as_deref(), Some("1"));
        // A memory hog: stopped at its cap, answered with its configured status.
        assert_eq!(c.get(s.url("/echo/bad/grow")).send().unwrap().status(), 507);
        // Enormous headers: the host refuses past its cap; the filter carries on.
        let echo: Value = c
            .get(s.url("/echo/bad/flood"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let added: usize = echo_header(&echo, "x-hostile-added")
            .unwrap()
            .parse()
            .unwrap();
        assert!(added < 64, "the host let {added} 64 KiB headers through");
        // A panic in a response phase: the response is replaced by the failure status.
        assert_eq!(c.get(s.url("/echo/bad/resp")).send().unwrap().status(), 503);
        // Wild pointers end the callback (hostcall misuse), never the host.
        assert_eq!(c.get(s.url("/echo/bad/wild")).send().unwrap().status(), 503);
    }
    // Many memory hogs in a row do not add up: failed VMs are freed.
    for _ in 0..20 {
        assert_eq!(
            c.get(s.url("/echo/bad/grow/x")).send().unwrap().status(),
            507
        );
    }
    for _ in 0..5 {
        c.get(s.url("/echo/good")).send().unwrap();
    }
    let after = rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(bad_good.load(Ordering::Relaxed), 0, "a good request failed");
    assert!(
        good.load(Ordering::Relaxed) > 50,
        "only {} good requests",
        good.load(Ordering::Relaxed)
    );
    assert!(
        after < baseline + 96 * 1024,
        "memory did not return: {baseline} KiB before, {after} KiB after 23 memory hogs"
    );

    // Every failure is counted by kind, and logged with the plugin and the request id.
    let status = s.status();
    let failures = |name: &str| {
        status["filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["failures"]
            .clone()
    };
    assert!(
        failures("panic")["traps"].as_u64().unwrap() >= 3,
        "{status}"
    );
    assert!(
        failures("loop")["deadlines"].as_u64().unwrap() >= 3,
        "{status}"
    );
    // Each growing request fails its VM: mostly at the memory cap, but on a loaded machine
    // the wall-clock deadline may end a growth first (counted per failure, as it happened).
    let grow = failures("grow");
    assert!(grow["memory"].as_u64().unwrap() >= 15, "{status}");
    assert!(
        grow["memory"].as_u64().unwrap() + grow["deadlines"].as_u64().unwrap() >= 23,
        "{status}"
    );
    assert!(failures("wild")["traps"].as_u64().unwrap() >= 3, "{status}");
    assert!(
        failures("grow")["vms_replaced"].as_u64().unwrap() >= 20,
        "{status}"
    );
    let log = s.log();
    assert!(
        log.lines().any(|l| l.contains("filter failed")
            && l.contains("filter=panic")
            && l.contains("request_id=")),
        "{log}"
    );
    assert!(log.contains("exceeded its CPU deadline"), "{log}");
    assert!(log.contains("hostcall misuse"), "{log}");
}

#[test]
fn start_up_failures_reject_the_policy() {
    let h = module("hostile.wasm");
    let base =
        "[pools.p]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\nfilters = [\"f\"]\npool = \"p\"\n";
    let (out, path, _d) = check(&format!(
        "[limits]\nstartup_ms = 300\n[filters.f]\nmodule = {h}\nconfig = {{ mode = \"slow_start\" }}\n{base}"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{}:4: filter \"f\"", path.display()))
            && err.contains("exceeded its CPU deadline"),
        "{err}"
    );
    let (out, _p, _d) = check(&format!(
        "[filters.f]\nmodule = {h}\nconfig = {{ mode = \"configure_panic\" }}\n{base}"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("filter \"f\"") && err.contains("trapped"),
        "{err}"
    );
}

#[test]
fn table_cap_is_enforced_per_filter() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("table.wat");
    std::fs::write(
        &wat,
        r#"(module
  (table 1000 funcref)
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32)))"#,
    )
    .unwrap();
    let policy = |cap: usize| {
        format!(
            "[pools.p]\npeers = [\"127.0.0.1:1\"]\n[filters.t]\nmodule = {:?}\ntable_elements = {cap}\n[[routes]]\nfilters = [\"t\"]\npool = \"p\"\n",
            wat.display().to_string()
        )
    };
    let (out, path, _d) = check(&policy(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "{}:4: filter \"t\": instantiation failed",
            path.display()
        )),
        "{err}"
    );
    let (out, _p, _d) = check(&policy(1000));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Context switches of the process's thread named `name` so far.
fn thread_switches(pid: u32, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        return status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .sum();
    }
    panic!("no thread named {name} in process {pid}");
}

#[test]
fn an_idle_proxy_parks_its_epoch_ticker_and_an_endless_loop_still_meets_its_deadline() {
    let o = origin("o");
    let h = module("hostile.wasm");
    let s = sluice_threads(
        &format!(
            r#"[limits]
callback_ms = 100

[pools.o]
peers = ["{origin}"]

[filters.loop]
module = {h}
config = {{ mode = "loop", path_prefix = "/echo/bad" }}
on_failure = "fail_open"

[[routes]]
filters = ["loop"]
pool = "o"
"#,
            origin = o.addr,
        ),
        2,
    );
    let pid = s.proc.child.id();
    let c = client();
    for round in 0..3 {
        // No guest code runs: the ticker stops ticking every millisecond (a thousand
        // context switches a second); it looks once every 100 ms.
        let parked = until_value(
            secs(10),
            "the epoch ticker parked",
            || {
                let before = thread_switches(pid, "sluice-epoch");
                std::thread::sleep(Duration::from_millis(500));
                thread_switches(pid, "sluice-epoch") - before
            },
            |n| *n <= 50,
        );
        assert!(parked <= 50, "round {round}: {parked} switches in 500 ms");
        // A guest that never returns, entering while the ticker is parked, wakes it and
        // meets its deadline; the filter fails open.
        let t = Instant::now();
        let r = c.get(s.url("/echo/bad/loop")).send().unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "round {round}: the deadline took {:?}",
            t.elapsed()
        );
        // Ordinary requests through the same filter run its callbacks (short guest
        // calls): each one also finds the ticker parked or ticking, and is served.
        let r = c.get(s.url("/echo/good")).send().unwrap();
        assert_eq!(r.status(), 200, "round {round}");
    }
    let deadlines = metric_with(
        &s,
        "sluice_filter_failures_total",
        "filter=\"loop\",kind=\"deadline\"",
    );
    assert_eq!(deadlines, 3.0);
}
