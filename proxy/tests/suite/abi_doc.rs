//! docs/ABI.md is generated from the hostcall table: it must not drift.

use std::process::Command;

#[test]
fn abi_doc_matches_the_hostcall_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("abi")
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ABI.md")).unwrap();
    assert!(
        doc.contains(&table),
        "docs/ABI.md is stale: regenerate it with scripts/gen-abi-doc.sh"
    );
    // Every import the proxy-wasm 0.2.5 SDK can make is in the table.
    for name in [
        "proxy_log",
        "proxy_get_log_level",
        "proxy_get_current_time_nanoseconds",
        "proxy_set_tick_period_milliseconds",
        "proxy_get_buffer_bytes",
        "proxy_set_buffer_bytes",
        "proxy_get_header_map_pairs",
        "proxy_set_header_map_pairs",
        "proxy_get_header_map_value",
        "proxy_remove_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_add_header_map_value",
        "proxy_get_property",
        "proxy_set_property",
        "proxy_get_shared_data",
        "proxy_set_shared_data",
        "proxy_register_shared_queue",
        "proxy_resolve_shared_queue",
        "proxy_dequeue_shared_queue",
        "proxy_enqueue_shared_queue",
        "proxy_continue_stream",
        "proxy_close_stream",
        "proxy_send_local_response",
        "proxy_http_call",
        "proxy_grpc_call",
        "proxy_grpc_stream",
        "proxy_grpc_send",
        "proxy_grpc_cancel",
        "proxy_grpc_close",
        "proxy_get_status",
        "proxy_set_effective_context",
        "proxy_call_foreign_function",
        "proxy_done",
        "proxy_define_metric",
        "proxy_get_metric",
        "proxy_record_metric",
        "proxy_increment_metric",
    ] {
        assert!(
            table.contains(&format!("| env | `{name}` |")),
            "{name} missing"
        );
    }
}

#[test]
fn every_test_the_table_names_exists() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ABI.md")).unwrap();
    let mut named = 0;
    // The hostcall table's last column: `file::function` or a dash.
    for row in doc
        .lines()
        .filter(|l| l.starts_with("| env ") || l.starts_with("| wasi_"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let test = cells[cells.len() - 2].trim_matches('`');
        // `file::function`, or `binary::module::function` for a module of a test binary
        // (`envoy::abi::x` is in tests/suite/envoy/abi.rs): modules of the suite binary.
        let Some((file, func)) = test.split(' ').next().unwrap().rsplit_once("::") else {
            continue;
        };
        let file = file.replace("::", "/");
        let src = std::fs::read_to_string(format!(
            "{}/tests/suite/{file}.rs",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_else(|_| {
            panic!("docs/ABI.md names {test}, but tests/suite/{file}.rs does not exist")
        });
        assert!(
            src.contains(&format!("fn {func}()")),
            "docs/ABI.md names {test}, which does not exist"
        );
        named += 1;
    }
    assert!(named > 30, "only {named} tests named");
}
