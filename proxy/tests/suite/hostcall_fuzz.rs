//! Property test over the hostcall boundary: a guest calls every hostcall with
//! arbitrary pointers, lengths and enum values. The host never panics, never writes
//! outside the guest's memory, and answers a status or ends the callback with a trap.
//! Bounded: a fixed number of cases (`PROPTEST_CASES` overrides it).

use std::sync::Arc;

use proptest::prelude::*;
use sluice::host::{Engine, HeaderMap, Limits, PluginInfo, StreamState, Vm};
use wasmtime::Val;

/// (module, name, parameter types as 'i' (i32) / 'I' (i64), has an i32 result)
const HOSTCALLS: &[(&str, &str, &str, bool)] = &[
    ("env", "proxy_log", "iii", true),
    ("env", "proxy_get_log_level", "i", true),
    ("env", "proxy_get_current_time_nanoseconds", "i", true),
    ("env", "proxy_set_tick_period_milliseconds", "i", true),
    ("env", "proxy_get_buffer_bytes", "iiiii", true),
    ("env", "proxy_set_buffer_bytes", "iiiii", true),
    ("env", "proxy_get_buffer_status", "iii", true),
    ("env", "proxy_get_header_map_pairs", "iii", true),
    ("env", "proxy_get_header_map_size", "ii", true),
    ("env", "proxy_set_header_map_pairs", "iii", true),
    ("env", "proxy_get_header_map_value", "iiiii", true),
    ("env", "proxy_add_header_map_value", "iiiii", true),
    ("env", "proxy_replace_header_map_value", "iiiii", true),
    ("env", "proxy_remove_header_map_value", "iii", true),
    ("env", "proxy_send_local_response", "iiiiiiii", true),
    ("env", "proxy_continue_stream", "i", true),
    ("env", "proxy_close_stream", "i", true),
    ("env", "proxy_get_status", "iii", true),
    ("env", "proxy_done", "", true),
    ("env", "proxy_set_effective_context", "i", true),
    ("env", "proxy_get_property", "iiii", true),
    ("env", "proxy_set_property", "iiii", true),
    ("env", "proxy_http_call", "iiiiiiiiii", true),
    ("env", "proxy_grpc_call", "iiiiiiiiiiii", true),
    ("env", "proxy_grpc_stream", "iiiiiiiii", true),
    ("env", "proxy_grpc_send", "iiii", true),
    ("env", "proxy_grpc_cancel", "i", true),
    ("env", "proxy_grpc_close", "i", true),
    ("env", "proxy_get_shared_data", "iiiii", true),
    ("env", "proxy_set_shared_data", "iiiii", true),
    ("env", "proxy_register_shared_queue", "iii", true),
    ("env", "proxy_resolve_shared_queue", "iiiii", true),
    ("env", "proxy_enqueue_shared_queue", "iii", true),
    ("env", "proxy_dequeue_shared_queue", "iii", true),
    ("env", "proxy_define_metric", "iiii", true),
    ("env", "proxy_increment_metric", "iI", true),
    ("env", "proxy_record_metric", "iI", true),
    ("env", "proxy_get_metric", "ii", true),
    ("env", "proxy_call_foreign_function", "iiiiii", true),
    ("wasi_snapshot_preview1", "fd_write", "iiii", true),
    ("wasi_snapshot_preview1", "clock_time_get", "iIi", true),
    ("wasi_snapshot_preview1", "clock_res_get", "ii", true),
    ("wasi_snapshot_preview1", "random_get", "ii", true),
    ("wasi_snapshot_preview1", "environ_sizes_get", "ii", true),
    ("wasi_snapshot_preview1", "environ_get", "ii", true),
    ("wasi_snapshot_preview1", "args_sizes_get", "ii", true),
    ("wasi_snapshot_preview1", "args_get", "ii", true),
    ("wasi_snapshot_preview1", "fd_prestat_get", "ii", true),
    ("wasi_snapshot_preview1", "sched_yield", "", true),
    ("wasi_snapshot_preview1", "poll_oneoff", "iiii", true),
    ("wasi_snapshot_preview1", "fd_fdstat_get", "ii", true),
    ("wasi_snapshot_preview1", "fd_fdstat_set_flags", "ii", true),
    ("wasi_snapshot_preview1", "fd_prestat_dir_name", "iii", true),
    ("wasi_snapshot_preview1", "fd_filestat_get", "ii", true),
    ("wasi_snapshot_preview1", "fd_read", "iiii", true),
    ("wasi_snapshot_preview1", "fd_close", "i", true),
    ("wasi_snapshot_preview1", "fd_seek", "iIii", true),
    ("wasi_snapshot_preview1", "fd_tell", "ii", true),
    ("wasi_snapshot_preview1", "fd_sync", "i", true),
    ("wasi_snapshot_preview1", "fd_datasync", "i", true),
    ("wasi_snapshot_preview1", "path_open", "iiiiiIIii", true),
    ("wasi_snapshot_preview1", "path_filestat_get", "iiiii", true),
    ("wasi_snapshot_preview1", "proc_exit", "i", false),
];

const PAGES: u32 = 2;

/// A guest that imports every hostcall and exports `f<k>(i64...)` calling import k.
fn wat() -> String {
    let mut w = String::from("(module\n");
    for (k, (m, n, params, result)) in HOSTCALLS.iter().enumerate() {
        let ps: Vec<&str> = params
            .chars()
            .map(|c| if c == 'I' { "i64" } else { "i32" })
            .collect();
        let res = if *result { "(result i32)" } else { "" };
        w.push_str(&format!(
            "  (import \"{m}\" \"{n}\" (func $h{k} (param {}) {res}))\n",
            ps.join(" ")
        ));
    }
    w.push_str(&format!("  (memory (export \"memory\") {PAGES} {PAGES})\n"));
    // A bump allocator that wraps inside memory: what it returns may still be too
    // close to the end for the size asked; the host must check.
    w.push_str("  (global $bump (mut i32) (i32.const 4096))\n");
    w.push_str(
        "  (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) (local $p i32)\n",
    );
    w.push_str("    (local.set $p (global.get $bump))\n");
    w.push_str(&format!(
        "    (global.set $bump (i32.rem_u (i32.add (global.get $bump) (local.get 0)) (i32.const {})))\n",
        PAGES * 65536
    ));
    w.push_str("    (local.get $p))\n");
    w.push_str("  (func (export \"proxy_abi_version_0_2_1\"))\n");
    w.push_str("  (func (export \"proxy_on_context_create\") (param i32 i32))\n");
    for (k, (_, _, params, result)) in HOSTCALLS.iter().enumerate() {
        let sig: Vec<&str> = params.chars().map(|_| "i64").collect();
        w.push_str(&format!(
            "  (func (export \"f{k}\") (param {})\n    (call $h{k}",
            sig.join(" ")
        ));
        for (i, c) in params.chars().enumerate() {
            if c == 'I' {
                w.push_str(&format!(" (local.get {i})"));
            } else {
                w.push_str(&format!(" (i32.wrap_i64 (local.get {i}))"));
            }
        }
        w.push_str(if *result { ")\n    drop)\n" } else { "))\n" });
    }
    w.push_str(")\n");
    w
}

fn arg() -> impl Strategy<Value = i64> {
    let end = (PAGES * 65536) as i64;
    prop_oneof![
        Just(0i64),
        0i64..16,
        0i64..end,
        (end - 64)..(end + 64),
        Just(-1i64),
        Just(i32::MAX as i64),
        Just(u32::MAX as i64),
        any::<u32>().prop_map(|v| v as i64),
        any::<i64>(),
    ]
}

fn stream() -> StreamState {
    StreamState {
        request_headers: HeaderMap::from_pairs([
            (":path".to_string(), b"/x".to_vec()),
            ("a".to_string(), b"1".to_vec()),
        ]),
        body: b"body".to_vec(),
        body_kind: Some(sluice::host::BodyKind::Request),
        max_buffer_bytes: 1 << 20,
        ..StreamState::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_guest_input_crashes_or_escapes_the_host(calls in prop::collection::vec((0..HOSTCALLS.len(), prop::collection::vec(arg(), 12)), 1..8)) {
        let engine = Engine::global().unwrap();
        let module = engine.compile(wat().as_bytes()).unwrap();
        let info = Arc::new(PluginInfo {
            name: "fuzz".into(),
            root_id: String::new(),
            vm_id: "fuzz".into(),
            vm_config: b"vm".to_vec(),
            plugin_config: b"plugin".to_vec(),
            generation: 1,
            files: Default::default(),
        });
        let limits = Limits { memory_bytes: PAGES as usize * 65536, ..Limits::default() };
        let mut vm = Vm::start(&engine, &module, info.clone(), limits, None, None).unwrap();
        let mut s = stream();
        for (k, raw) in calls {
            let n = HOSTCALLS[k].2.len();
            let args: Vec<Val> = raw[..n].iter().map(|v| Val::I64(*v)).collect();
            match vm.call_export(&mut s, 2, &format!("f{k}"), &args) {
                Ok(()) => {}
                // A trap ends the callback and fails the VM: start a fresh one.
                Err(_) => vm = Vm::start(&engine, &module, info.clone(), limits, None, None).unwrap(),
            }
            // Whatever the guest did, the host's view stays within its caps.
            prop_assert!(s.request_headers.byte_size() <= 256 << 10);
            prop_assert!(s.body.len() <= 1 << 20);
        }
    }
}

#[test]
fn the_fuzz_guest_links_against_every_hostcall() {
    let engine = Engine::global().unwrap();
    let module = engine.compile(wat().as_bytes()).unwrap();
    assert!(
        module.stubbed_imports.is_empty(),
        "{:?}",
        module.stubbed_imports
    );
    assert_eq!(
        engine.hostcalls().len(),
        HOSTCALLS.len(),
        "the fuzz list and the hostcall table differ"
    );
}
