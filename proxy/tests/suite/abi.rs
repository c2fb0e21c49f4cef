//! The rest of the Proxy-Wasm ABI through the real proxy: HTTP calls, ticks, shared
//! data, shared queues, metrics, properties across filters, foreign functions.

use std::time::Duration;

use crate::support::*;
use serde_json::Value;

#[test]
fn http_call_to_a_pool_resumes_or_answers_the_stream() {
    let main = origin("main");
    let side = origin("side");
    let s = sluice(&format!(
        r#"[pools.main]
peers = ["{}"]
[pools.side]
peers = ["{}"]
[pools.dead]
peers = ["{DEAD_PEER}"]

[filters.call_side]
module = {m}
config = {{ upstream = "side", path = "/echo/callout", timeout_ms = 2000, deny_status = 451 }}
[filters.call_dead]
module = {m}
config = {{ upstream = "dead", timeout_ms = 300 }}
[filters.call_unknown]
module = {m}
config = {{ upstream = "no-such-pool" }}

[[routes]]
path_prefix = "/echo/dead"
filters = ["call_dead"]
pool = "main"
[[routes]]
path_prefix = "/echo/unknown"
filters = ["call_unknown"]
pool = "main"
[[routes]]
filters = ["call_side"]
pool = "main"
"#,
        main.addr,
        side.addr,
        m = module("callout.wasm")
    ));
    let c = client();
    // The filter pauses, its call reaches the side pool, the response resumes the request.
    let r = c
        .get(s.url("/echo/x"))
        .header("x-callout", "1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-origin-id"], "main");
    let echo: Value = r.json().unwrap();
    assert_eq!(
        echo_header(&echo, "x-callout-status").as_deref(),
        Some("200")
    );
    assert_eq!(
        echo_header(&echo, "x-callout-origin").as_deref(),
        Some("side")
    );
    let len: usize = echo_header(&echo, "x-callout-body-len")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        len > 50,
        "the side origin's echo body came back ({len} bytes)"
    );
    // The call response can also answer the request locally.
    let r = c
        .get(s.url("/echo/x"))
        .header("x-callout", "deny")
        .send()
        .unwrap();
    assert_eq!(r.status(), 451);
    assert_eq!(r.headers()["x-callout-status"], "200");
    assert_eq!(r.text().unwrap(), "denied by callout\n");
    // Without the trigger header, no call.
    let echo: Value = c.get(s.url("/echo/x")).send().unwrap().json().unwrap();
    assert_eq!(echo_header(&echo, "x-callout-status"), None);
    // A call to a dead peer fails within its timeout and the filter sees the failure.
    let t = std::time::Instant::now();
    let echo: Value = c
        .get(s.url("/echo/dead"))
        .header("x-callout", "1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        echo_header(&echo, "x-callout-status").as_deref(),
        Some("failed")
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // Calls go only to pools of the policy.
    let echo: Value = c
        .get(s.url("/echo/unknown"))
        .header("x-callout", "1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        echo_header(&echo, "x-callout-error").as_deref(),
        Some("BadArgument")
    );
}

#[test]
fn ticks_update_shared_data() {
    let o = origin("o");
    // Two workers, each with its own VM ticking into the same shared data.
    let s = sluice_threads(
        &one_filter(
            &o,
            "t",
            &module("ticker.wasm"),
            r#"{ period_ms = 20, key = "ticks-test" }"#,
        ),
        2,
    );
    let c = client();
    let ticks = || -> u64 {
        let echo: Value = c.get(s.url("/echo")).send().unwrap().json().unwrap();
        echo_header(&echo, "x-ticks").unwrap().parse().unwrap()
    };
    let first = ticks(); // starts the worker's VM and its ticks
    let later = until_value(secs(10), "10 more ticks", ticks, |t| *t >= first + 10);
    assert!(later >= first + 10, "ticks: {first} then {later}");
}

#[test]
fn shared_queue_between_two_plugins() {
    let o = origin("o");
    // Two workers: producer and consumer VMs on both, one queue per vm_id.
    let s = sluice_threads(
        &format!(
            r#"[pools.o]
peers = ["{}"]
[filters.consumer]
module = {m}
config = {{ role = "consumer", queue = "jobs" }}
[filters.producer]
module = {m}
config = {{ role = "producer", queue = "jobs", vm_id = "consumer" }}
[[routes]]
path_prefix = "/echo/consume"
filters = ["consumer"]
pool = "o"
[[routes]]
filters = ["producer"]
pool = "o"
"#,
            o.addr,
            m = module("queue.wasm")
        ),
        2,
    );
    let c = client();
    let echo: Value = c
        .get(s.url("/echo/consume"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(echo_header(&echo, "x-queue-received").as_deref(), Some("0"));
    for item in ["one", "two", "three"] {
        let echo: Value = c
            .get(s.url("/echo/produce"))
            .header("x-enqueue", item)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(echo_header(&echo, "x-enqueued").as_deref(), Some("1"));
    }
    // The consumer's on_queue_ready runs on its own worker: wait for all three items.
    let echo: Value = until_value(
        secs(10),
        "the three items consumed",
        || {
            c.get(s.url("/echo/consume"))
                .send()
                .unwrap()
                .json::<Value>()
                .unwrap()
        },
        |echo| echo_header(echo, "x-queue-received").as_deref() == Some("3"),
    );
    assert_eq!(echo_header(&echo, "x-queue-received").as_deref(), Some("3"));
    assert_eq!(echo_header(&echo, "x-queue-last").as_deref(), Some("three"));
}

#[test]
fn metrics_defined_by_a_filter_count() {
    let o = origin("o");
    let s = sluice(&one_filter(
        &o,
        "m",
        &module("metrics.wasm"),
        r#"{ prefix = "t" }"#,
    ));
    let c = client();
    let count = || -> u64 {
        let echo: Value = c
            .post(s.url("/echo"))
            .body("12345")
            .send()
            .unwrap()
            .json()
            .unwrap();
        echo_header(&echo, "x-metric-requests")
            .unwrap()
            .parse()
            .unwrap()
    };
    let a = count();
    let b = count();
    assert_eq!(b, a + 1);
}

#[test]
fn properties_flow_between_filters_and_phases_and_foreign_functions_answer() {
    let o = origin("o");
    let s = sluice(&format!(
        r#"[pools.o]
peers = ["{}"]
[filters.writer]
module = {m}
config = {{ role = "writer" }}
[filters.reader]
module = {m}
config = {{ role = "reader" }}
[[routes]]
name = "stateful"
filters = ["writer", "reader"]
pool = "o"
"#,
        o.addr,
        m = module("state.wasm")
    ));
    let r = client().get(s.url("/echo/state")).send().unwrap();
    // Response phases: the reader runs first, then the writer; both see the value.
    assert_eq!(r.headers()["x-reader-saw"], "allow-/echo/state");
    assert_eq!(r.headers()["x-writer-saw"], "allow-/echo/state");
    let echo: Value = r.json().unwrap();
    assert_eq!(
        echo_header(&echo, "x-state").as_deref(),
        Some("allow-/echo/state")
    );
    assert_eq!(
        echo_header(&echo, "x-route-prop").as_deref(),
        Some("stateful")
    );
    assert_eq!(echo_header(&echo, "x-foreign").as_deref(), Some("ping"));
    assert_eq!(
        echo_header(&echo, "x-foreign-missing").as_deref(),
        Some("notfound")
    );
}

#[test]
fn probe_covers_the_remaining_hostcalls() {
    let o = origin("o");
    let s = sluice(&one_filter(
        &o,
        "probe",
        &module("probe.wasm"),
        r#"{ anything = "x" }"#,
    ));
    let c = client();
    let r = c
        .get(s.url("/echo/p?a=1"))
        .header("x-probe-set-pairs", "1")
        .header("x-probe-drop-me", "gone")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-probe-resp-code"], "200");
    let resp_pairs: usize = r.headers()["x-probe-resp-pairs"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(resp_pairs >= 4, "{resp_pairs}");
    let echo: Value = r.json().unwrap();
    let h = |n: &str| echo_header(&echo, n);
    assert_eq!(
        h("x-probe-log-level").as_deref(),
        Some("2"),
        "info is the default level"
    );
    assert_eq!(h("x-probe-has-path").as_deref(), Some("1"));
    let pairs: usize = h("x-probe-pairs").unwrap().parse().unwrap();
    assert!(pairs >= 6, "{pairs}");
    // proxy_set_header_map_pairs replaced the whole map.
    assert_eq!(h("x-probe-replaced").as_deref(), Some("1"));
    assert_eq!(h("x-probe-drop-me"), None);
    assert_eq!(h("x-probe-effective").as_deref(), Some("ok"));
    assert_eq!(
        h("x-probe-effective-bad").as_deref(),
        Some("err:BadArgument")
    );
    assert_eq!(h("x-probe-config-len").as_deref(), Some("16"));
    assert_eq!(h("x-probe-done").as_deref(), Some("ok"));
    assert_eq!(h("x-probe-grpc").as_deref(), Some("err:InternalFailure"));
    assert_eq!(h("x-probe-status").as_deref(), Some("0"));
    // proxy_log went to the log with the plugin name.
    let has_line = |log: &String| {
        log.lines()
            .any(|l| l.contains("probe: warn line /echo/p?a=1") && l.contains("plugin=\"probe\""))
    };
    let log = until_value(secs(5), "the probe's log line", || s.log(), has_line);
    assert!(has_line(&log), "{log}");
    // proxy_close_stream resets the stream: the connection closes with no response.
    let r = c.get(s.url("/echo/p")).header("x-probe-close", "1").send();
    assert!(
        r.is_err(),
        "a reset stream gets no response: {:?}",
        r.map(|r| r.status())
    );
    // And Sluice keeps serving.
    assert_eq!(c.get(s.url("/echo/p")).send().unwrap().status(), 200);
}

/// Sizes the SDK has no wrapper for: `proxy_get_header_map_size` must equal the size of
/// what `proxy_get_header_map_pairs` returns, and `proxy_get_buffer_status` the length
/// of the request body. The guest answers 299 when both agree, 599 otherwise.
const SIZES_WAT: &str = r#"(module
  (import "env" "proxy_get_header_map_size" (func $map_size (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $buf_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buf_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 0)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $map_size (i32.const 0) (i32.const 100)))
    (drop (call $map_pairs (i32.const 0) (i32.const 104) (i32.const 108)))
    (if (i32.ne (i32.load (i32.const 100)) (i32.load (i32.const 108)))
      (then (drop (call $respond (i32.const 599) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (if (i32.eqz (local.get 2)) (then (return (i32.const 1))))
    (drop (call $buf_status (i32.const 0) (i32.const 200) (i32.const 204)))
    (drop (call $buf_bytes (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 208) (i32.const 212)))
    (if (i32.and (i32.eq (i32.load (i32.const 200)) (i32.load (i32.const 212)))
                 (i32.eq (i32.load (i32.const 200)) (local.get 1)))
      (then (drop (call $respond (i32.const 299) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1))))
      (else (drop (call $respond (i32.const 599) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))))
    (i32.const 0)))
"#;

#[test]
fn header_map_size_and_buffer_status_agree_with_the_data() {
    let o = origin("o");
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("sizes.wat");
    std::fs::write(&wat, SIZES_WAT).unwrap();
    let s = sluice(&one_filter(
        &o,
        "sizes",
        &format!("{:?}", wat.display().to_string()),
        "",
    ));
    let r = client()
        .post(s.url("/echo/sizes"))
        .header("x-some", "value")
        .body("twelve bytes")
        .send()
        .unwrap();
    assert_eq!(r.status(), 299);
}
