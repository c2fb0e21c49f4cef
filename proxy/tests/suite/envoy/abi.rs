//! Issue #16, ABI: the Proxy-Wasm ABI answered as the reference host
//! (proxy-wasm-cpp-host) answers it, with raw-ABI WAT filters doing what the Go SDK does.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::*;

/// The Go SDK's allocator (`make([]byte, size); return &buf[0]`) panics on 0 bytes:
/// this one traps. With an empty plugin and VM configuration, an empty header value,
/// an empty property, an empty shared-data value, an empty body slice and an empty
/// foreign-function result, every copy-out must hand back pointer 0 and size 0 without
/// asking it. The filter answers 299 when all did, else 500 + the failing check.
const EMPTY_WAT: &str = r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $hget (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $pset (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $pget (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $sset (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $sget (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 1024) "x-empty")
  (data (i32.const 1040) "my_empty")
  (data (i32.const 1056) "empty-key")
  (data (i32.const 1072) "sluice.file.list")
  (global $bump (mut i32) (i32.const 65536))
  (global $failed (mut i32) (i32.const 0))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local $p i32)
    (if (i32.eqz (local.get 0)) (then unreachable))
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 0)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  ;; Poisons the return slots, so a host that writes nothing is caught too.
  (func $poison (i32.store (i32.const 100) (i32.const -1)) (i32.store (i32.const 104) (i32.const -1)))
  ;; Status OK and (0, 0) in the slots, or records check `code` as failed.
  (func $null (param $st i32) (param $code i32)
    (if (i32.or (i32.ne (local.get $st) (i32.const 0))
          (i32.or (i32.load (i32.const 100)) (i32.load (i32.const 104))))
      (then (if (i32.eqz (global.get $failed)) (then (global.set $failed (local.get $code)))))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $poison)
    (call $null (call $buf (i32.const 6) (i32.const 0) (local.get 1) (i32.const 100) (i32.const 104)) (i32.const 1))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $poison)
    (call $null (call $buf (i32.const 7) (i32.const 0) (local.get 1) (i32.const 100) (i32.const 104)) (i32.const 2))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $poison)
    (call $null (call $hget (i32.const 0) (i32.const 1024) (i32.const 7) (i32.const 100) (i32.const 104)) (i32.const 3))
    (drop (call $pset (i32.const 1040) (i32.const 8) (i32.const 0) (i32.const 0)))
    (call $poison)
    (call $null (call $pget (i32.const 1040) (i32.const 8) (i32.const 100) (i32.const 104)) (i32.const 4))
    (drop (call $sset (i32.const 1056) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 0)))
    (call $poison)
    (call $null (call $sget (i32.const 1056) (i32.const 9) (i32.const 100) (i32.const 104) (i32.const 108)) (i32.const 5))
    (call $poison)
    (call $null (call $foreign (i32.const 1072) (i32.const 16) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 104)) (i32.const 6))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (if (i32.eqz (local.get 2)) (then (return (i32.const 1))))
    ;; A slice past the end of the body is empty.
    (call $poison)
    (call $null (call $buf (i32.const 0) (local.get 1) (i32.const 10) (i32.const 100) (i32.const 104)) (i32.const 7))
    (drop (call $respond
      (select (i32.const 299) (i32.add (i32.const 500) (global.get $failed)) (i32.eqz (global.get $failed)))
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 0)))
"#;

#[test]
fn empty_results_come_back_null_without_calling_the_allocator() {
    let o = origin("o");
    let (_d, m) = wat_module("empty", EMPTY_WAT);
    // An empty configuration: a Go filter with none must start.
    let s = sluice(&one_filter(&o, "empty", &m, ""));
    let r = client()
        .post(s.url("/echo/empty"))
        .header("x-empty", "")
        .body("some body")
        .send()
        .unwrap();
    assert_eq!(r.status(), 299, "{}", s.log());
}

/// The WASI calls Go's `GOOS=wasip1` runtime makes, answered as the reference host
/// answers them; then a panic message on stderr. 299 when all agree, else 500 + check.
const WASI_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $setflags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $dirname (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $filestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 2048) "panic: go filter panicked on purpose\n")
  (global $failed (mut i32) (i32.const 0))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 8192))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func $want (param $got i32) (param $want i32) (param $code i32)
    (if (i32.ne (local.get $got) (local.get $want))
      (then (if (i32.eqz (global.get $failed)) (then (global.set $failed (local.get $code)))))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; A 1 ms clock subscription (Go's usleep): success, one event with its userdata.
    (i64.store (i32.const 1024) (i64.const 0x1234))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (i64.const 1000000))
    (i32.store (i32.const 300) (i32.const 99))
    (call $want (call $poll (i32.const 1024) (i32.const 1536) (i32.const 1) (i32.const 300)) (i32.const 0) (i32.const 1))
    (call $want (i32.load (i32.const 300)) (i32.const 1) (i32.const 2))
    (call $want (i32.wrap_i64 (i64.load (i32.const 1536))) (i32.const 0x1234) (i32.const 3))
    (call $want (i32.load16_u (i32.const 1544)) (i32.const 0) (i32.const 4))
    ;; stdout and stderr: write rights; stdin and others: EBADF.
    (call $want (call $fdstat (i32.const 1) (i32.const 400)) (i32.const 0) (i32.const 5))
    (call $want (i32.wrap_i64 (i64.load (i32.const 408))) (i32.const 64) (i32.const 6))
    (call $want (call $fdstat (i32.const 5) (i32.const 400)) (i32.const 8) (i32.const 7))
    (call $want (call $setflags (i32.const 1) (i32.const 4)) (i32.const 52) (i32.const 8))
    (call $want (call $close (i32.const 1)) (i32.const 0) (i32.const 9))
    (call $want (call $prestat (i32.const 3) (i32.const 400)) (i32.const 8) (i32.const 10))
    (call $want (call $dirname (i32.const 3) (i32.const 400) (i32.const 8)) (i32.const 52) (i32.const 11))
    (call $want (call $read (i32.const 0) (i32.const 400) (i32.const 0) (i32.const 300)) (i32.const 52) (i32.const 12))
    (call $want (call $seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 400)) (i32.const 0) (i32.const 13))
    (call $want (call $filestat (i32.const 1) (i32.const 400)) (i32.const 8) (i32.const 14))
    (call $want (call $open (i32.const 3) (i32.const 0) (i32.const 2048) (i32.const 4) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 300)) (i32.const 44) (i32.const 15))
    ;; The panic message goes to stderr: the proxy logs it.
    (i32.store (i32.const 500) (i32.const 2048))
    (i32.store (i32.const 504) (i32.const 37))
    (call $want (call $write (i32.const 2) (i32.const 500) (i32.const 1) (i32.const 300)) (i32.const 0) (i32.const 16))
    (drop (call $respond
      (select (i32.const 299) (i32.add (i32.const 500) (global.get $failed)) (i32.eqz (global.get $failed)))
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 0)))
"#;

#[test]
fn wasi_calls_of_the_go_runtime_answer_as_the_reference_host() {
    let o = origin("o");
    let (_d, m) = wat_module("wasi", WASI_WAT);
    let s = sluice(&one_filter(&o, "gowasi", &m, ""));
    let r = client().get(s.url("/echo/wasi")).send().unwrap();
    assert_eq!(r.status(), 299, "{}", s.log());
    let log = until_value(
        secs(10),
        "the panic line in the log",
        || s.log(),
        |log| log.contains("go filter panicked on purpose"),
    );
    assert!(
        log.lines()
            .any(|l| l.contains("go filter panicked on purpose") && l.contains("gowasi")),
        "{log}"
    );
}

/// Dispatches an HTTP call from the request headers of a stream and pauses; the
/// response callback checks that it got the root context's id (what the Go SDK looks
/// its callbacks up by), then adds a header to the stream and resumes it.
const CALL_WAT: &str = r#"(module
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $hadd (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "side")
  (data (i32.const 1100) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\0a\00\00\00\0a\00\00\00\04\00\00\00\3a\6d\65\74\68\6f\64\00\47\45\54\00\3a\70\61\74\68\00\2f\65\63\68\6f\2f\73\69\64\65\00\3a\61\75\74\68\6f\72\69\74\79\00\73\69\64\65\00")
  (data (i32.const 1200) "x-call-context")
  (data (i32.const 1220) "root")
  (data (i32.const 1230) "not-root")
  (global $root (mut i32) (i32.const 0))
  (global $bump (mut i32) (i32.const 8192))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 0)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32)
    (if (i32.eqz (local.get 1)) (then (global.set $root (local.get 0)))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (call $call (i32.const 1024) (i32.const 4) (i32.const 1100) (i32.const 73)
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 2000) (i32.const 300))
      (then (return (i32.const 0))))
    (i32.const 1))
  (func (export "proxy_on_http_call_response") (param $ctx i32) (param i32 i32 i32 i32)
    (if (i32.eq (local.get $ctx) (global.get $root))
      (then (drop (call $hadd (i32.const 0) (i32.const 1200) (i32.const 14) (i32.const 1220) (i32.const 4))))
      (else (drop (call $hadd (i32.const 0) (i32.const 1200) (i32.const 14) (i32.const 1230) (i32.const 8)))))
    (drop (call $continue (i32.const 0)))))
"#;

#[test]
fn http_call_response_gets_the_root_context_id_and_acts_on_the_stream() {
    let main = origin("main");
    let side = origin("side");
    let (_d, m) = wat_module("call", CALL_WAT);
    let s = sluice(&format!(
        "[pools.main]\npeers = [\"{}\"]\n[pools.side]\npeers = [\"{}\"]\n[filters.caller]\nmodule = {m}\n[[routes]]\nfilters = [\"caller\"]\npool = \"main\"\n",
        main.addr, side.addr
    ));
    let c = client();
    for _ in 0..3 {
        let echo: Value = c.get(s.url("/echo/x")).send().unwrap().json().unwrap();
        assert_eq!(
            echo_header(&echo, "x-call-context").as_deref(),
            Some("root"),
            "{echo}"
        );
    }
}

/// Appends to the response body the way the SDKs do: `start` = the body's length,
/// then `start` = i32::MAX (Go's `AppendHttpResponseBody`).
const APPEND_WAT: &str = r#"(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $hdel (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "+tail1")
  (data (i32.const 1040) "+tail2")
  (data (i32.const 1056) "content-length")
  (global $bump (mut i32) (i32.const 8192))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 0)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  ;; The length changes: drop content-length, as a filter must on Envoy.
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $hdel (i32.const 2) (i32.const 1056) (i32.const 14)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (if (i32.eqz (local.get 2)) (then (return (i32.const 1))))
    (if (call $set (i32.const 1) (local.get 1) (i32.const 0) (i32.const 1024) (i32.const 6))
      (then unreachable))
    (if (call $set (i32.const 1) (i32.const 0x7fffffff) (i32.const 0) (i32.const 1040) (i32.const 6))
      (then unreachable))
    (i32.const 0)))
"#;

#[test]
fn set_buffer_bytes_at_or_past_the_end_appends() {
    let o = origin("o");
    let (_d, m) = wat_module("append", APPEND_WAT);
    let s = sluice(&one_filter(&o, "append", &m, ""));
    let r = client().get(s.url("/echo/append")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", s.log());
    let body = r.text().unwrap();
    assert!(
        body.ends_with("}+tail1+tail2") || body.ends_with("}\n+tail1+tail2"),
        "{body}"
    );
}

/// An allocator that traps on any request with a non-zero size once a request carries
/// `x-trap`; the filter says whether its VM is fresh (`x-fresh: 1` on a VM's first
/// request).
const ALLOC_TRAP_WAT: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $hget (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $hadd (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-trap")
  (data (i32.const 1040) "x-fresh")
  (data (i32.const 1056) "10")
  (global $bump (mut i32) (i32.const 8192))
  (global $served (mut i32) (i32.const 0))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local $p i32)
    (if (local.get 0) (then unreachable))
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 0)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $hadd (i32.const 0) (i32.const 1040) (i32.const 7)
      (select (i32.const 1056) (i32.const 1057) (i32.eqz (global.get $served))) (i32.const 1)))
    (global.set $served (i32.add (global.get $served) (i32.const 1)))
    ;; Its value is copied out: the allocator traps.
    (drop (call $hget (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 100) (i32.const 104)))
    (i32.const 0)))
"#;

#[test]
fn allocator_trap_during_a_copy_out_fails_the_request_and_replaces_the_vm() {
    let o = origin("o");
    let (_d, m) = wat_module("alloctrap", ALLOC_TRAP_WAT);
    let s = sluice(&one_filter(&o, "alloc", &m, ""));
    let c = client();
    let fresh = || -> String {
        let echo: Value = c.get(s.url("/echo/a")).send().unwrap().json().unwrap();
        echo_header(&echo, "x-fresh").unwrap_or_default()
    };
    assert_eq!(fresh(), "1");
    assert_eq!(fresh(), "0");
    let before = metric_with(&s, "sluice_filter_failures_total", "alloc");
    let r = c
        .get(s.url("/echo/a"))
        .header("x-trap", "yes")
        .send()
        .unwrap();
    // The filter's failure policy (fail_closed, 503), not a request that runs on.
    assert_eq!(r.status(), 503, "{}", s.log());
    let after = until_value(
        secs(10),
        "the failure counted",
        || metric_with(&s, "sluice_filter_failures_total", "alloc"),
        |n| *n > before,
    );
    assert_eq!(after, before + 1.0);
    // The VM was replaced: the next request runs on a fresh one.
    assert_eq!(fresh(), "1");
}

/// Writes shared key `k` with the filter's configuration as value when the request has
/// `x-write`, then reads `k` into request header `x-shared` (`none` when absent, `refused`
/// when the write was refused).
const SHARED_WAT: &str = r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $hget (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $hadd (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $sset (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $sget (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-write")
  (data (i32.const 1040) "x-shared")
  (data (i32.const 1056) "none")
  (data (i32.const 1064) "refused")
  (data (i32.const 1080) "k")
  (global $bump (mut i32) (i32.const 8192))
  (global $cfg (mut i32) (i32.const 0))
  (global $cfg_len (mut i32) (i32.const 0))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get 0)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $buf (i32.const 7) (i32.const 0) (local.get 1) (i32.const 100) (i32.const 104)))
    (global.set $cfg (i32.load (i32.const 100)))
    (global.set $cfg_len (i32.load (i32.const 104)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $hget (i32.const 0) (i32.const 1024) (i32.const 7) (i32.const 100) (i32.const 104)))
      (then
        (if (call $sset (i32.const 1080) (i32.const 1) (global.get $cfg) (global.get $cfg_len) (i32.const 0))
          (then
            (drop (call $hadd (i32.const 0) (i32.const 1040) (i32.const 8) (i32.const 1064) (i32.const 7)))
            (return (i32.const 0))))))
    (if (call $sget (i32.const 1080) (i32.const 1) (i32.const 100) (i32.const 104) (i32.const 108))
      (then (drop (call $hadd (i32.const 0) (i32.const 1040) (i32.const 8) (i32.const 1056) (i32.const 4))))
      (else (drop (call $hadd (i32.const 0) (i32.const 1040) (i32.const 8) (i32.load (i32.const 100)) (i32.load (i32.const 104))))))
    (i32.const 0)))
"#;

/// Filters `a`, `b`, `c` (`vm_id = "a"`), `d` (quota 16 bytes) on routes `/echo/NAME`.
fn shared_policy(o: &Proc, m: &str, with_b: bool) -> String {
    let mut p = format!("[pools.o]\npeers = [\"{}\"]\n", o.addr);
    let mut filters = vec![
        ("a", "config = \"from-a\"\n"),
        ("c", "config = \"from-c\"\nvm_id = \"a\"\n"),
        (
            "d",
            "config = \"a-value-longer-than-the-quota\"\nshared_data_max_bytes = 16\n",
        ),
    ];
    if with_b {
        filters.push(("b", "config = \"from-b\"\n"));
    }
    for (name, extra) in &filters {
        p.push_str(&format!("[filters.{name}]\nmodule = {m}\n{extra}"));
    }
    for (name, _) in &filters {
        p.push_str(&format!(
            "[[routes]]\npath_prefix = \"/echo/{name}\"\nfilters = [\"{name}\"]\npool = \"o\"\n"
        ));
    }
    p.push_str("[[routes]]\npool = \"o\"\n");
    p
}

#[test]
fn shared_data_is_scoped_per_vm_id_with_quotas_and_freed_with_its_vm_id() {
    let o = origin("o");
    let (_d, m) = wat_module("shared", SHARED_WAT);
    // Two workers: shared data belongs to the vm_id, whichever worker's VM wrote it.
    let s = sluice_threads(&shared_policy(&o, &m, true), 2);
    let c = client();
    let get = |name: &str, write: bool| -> String {
        let mut r = c.get(s.url(&format!("/echo/{name}")));
        if write {
            r = r.header("x-write", "1");
        }
        let echo: Value = r.send().unwrap().json().unwrap();
        echo_header(&echo, "x-shared").unwrap_or_default()
    };
    assert_eq!(get("a", true), "from-a");
    assert_eq!(get("b", true), "from-b");
    // Same key, different vm_id: each sees its own value.
    let seen: HashMap<&str, String> = ["a", "b", "c"]
        .iter()
        .map(|n| (*n, get(n, false)))
        .collect();
    assert_eq!(seen["a"], "from-a");
    assert_eq!(seen["b"], "from-b");
    // Same vm_id: c shares a's keys, and its write is a's to read.
    assert_eq!(seen["c"], "from-a");
    assert_eq!(get("c", true), "from-c");
    assert_eq!(get("a", false), "from-c");
    // Over its quota, d's write is refused with CAS_MISMATCH (what SDKs handle), and
    // nothing was stored.
    assert_eq!(get("d", true), "refused");
    assert_eq!(get("d", false), "none");
    // A swap that drops b's vm_id frees its data; a's survives. b comes back empty.
    s.rewrite(&shared_policy(&o, &m, false));
    reload(&s);
    until_value(
        secs(10),
        "the swap without b",
        || c.get(s.url("/echo/b")).send().unwrap().json::<Value>().ok(),
        |echo| {
            echo.as_ref()
                .and_then(|e| e["headers"].as_array())
                .is_some_and(|h| h.iter().all(|p| p[0] != "x-shared"))
        },
    );
    assert_eq!(get("a", false), "from-c");
    s.rewrite(&shared_policy(&o, &m, true));
    reload(&s);
    until_value(
        secs(10),
        "the swap with b again",
        || {
            c.get(s.url("/echo/b"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
        },
        |echo| {
            echo.as_ref()
                .and_then(|e| echo_header(e, "x-shared"))
                .is_some()
        },
    );
    assert_eq!(get("b", false), "none");
    assert_eq!(get("a", false), "from-c");
}

/// Memory-cap hits, per failure: `x-grow` asks for more memory than the cap (refused; the
/// guest carries on), `x-trap` traps, and `x-copy` has its value copied out by an
/// allocator that grows beyond the cap and answers null when refused.
const MEMORY_WAT: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $hget (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-grow")
  (data (i32.const 1040) "x-trap")
  (data (i32.const 1056) "x-copy")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (if (i32.eq (memory.grow (i32.const 4000)) (i32.const -1)) (then (return (i32.const 0))))
    (i32.const 8192))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func $has (param $name i32) (result i32)
    ;; proxy_get_header_map_value of an absent header answers NOT_FOUND without allocating.
    (i32.eqz (call $hget (i32.const 0) (local.get $name) (i32.const 6) (i32.const 100) (i32.const 104))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (call $has (i32.const 1024)) (then (drop (memory.grow (i32.const 4000)))))
    (if (call $has (i32.const 1040)) (then unreachable))
    (drop (call $has (i32.const 1056)))
    (i32.const 0)))
"#;

#[test]
fn memory_cap_hits_count_per_failure_and_inside_the_allocator() {
    let o = origin("o");
    let (_d, m) = wat_module("memory", MEMORY_WAT);
    let s = sluice(&one_filter(&o, "mem", &m, "").replace(
        "[filters.mem]\n",
        "[filters.mem]\nmemory_mb = 2\nspare_vm = false\n",
    ));
    let c = client();
    let failures = |kind: &str| {
        metric_with(
            &s,
            "sluice_filter_failures_total",
            &format!("kind=\"{kind}\""),
        )
    };
    // A refused growth the guest handles is no failure.
    let r = c.get(s.url("/echo/m")).header("x-grow", "").send().unwrap();
    assert_eq!(r.status(), 200, "{}", s.log());
    // A trap in a later callback of the same VM is a trap, not a memory hit.
    let r = c.get(s.url("/echo/m")).header("x-trap", "").send().unwrap();
    assert_eq!(r.status(), 503);
    until_value(
        secs(10),
        "the trap counted",
        || failures("trap"),
        |n| *n == 1.0,
    );
    assert_eq!(failures("memory"), 0.0);
    // The allocator hitting the cap during a copy-out fails the request as a memory hit
    // (the empty x-grow value above needed no allocation).
    let r = c
        .get(s.url("/echo/m"))
        .header("x-copy", "some value")
        .send()
        .unwrap();
    assert_eq!(r.status(), 503, "{}", s.log());
    until_value(
        secs(10),
        "the memory hit counted",
        || failures("memory"),
        |n| *n == 1.0,
    );
    assert_eq!(failures("trap"), 1.0);
}
