//! THE Proxy-Wasm hostcall table: every function a guest can import, one file per
//! area of the v0.2.1 spec. Each row is registered through [`Registry`], which both
//! links it into wasmtime and records it for the compatibility table
//! (`sluice abi` prints it; `docs/ABI.md` is generated from it).
//!
//! Status discipline: the `proxy-wasm` SDK panics on statuses it does not expect, so
//! each hostcall answers only with the statuses the SDK (and Envoy) use for that call.

use wasmtime::Result;
use wasmtime::{IntoFunc, Linker};

use super::state::HostState;

mod buffers;
mod foreign;
mod grpc;
mod headers;
mod http_call;
mod log;
mod metrics;
mod properties;
mod shared;
mod stream;
mod wasi;

pub use log::set_guest_log_level;
pub use metrics::{metric_snapshot, MetricKind, MetricValue};
pub use shared::{charged_bytes, retain_vm_ids};

/// `proxy_status_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// `OK`.
    Ok = 0,
    /// `NOT_FOUND`.
    NotFound = 1,
    /// `BAD_ARGUMENT`.
    BadArgument = 2,
    /// `SERIALIZATION_FAILURE`.
    SerializationFailure = 3,
    /// `PARSE_FAILURE`.
    ParseFailure = 4,
    /// `INVALID_MEMORY_ACCESS`.
    InvalidMemoryAccess = 6,
    /// `EMPTY`.
    Empty = 7,
    /// `CAS_MISMATCH`.
    CasMismatch = 8,
    /// `INTERNAL_FAILURE`.
    InternalFailure = 10,
    /// `UNIMPLEMENTED`.
    Unimplemented = 12,
}

/// Folds a hostcall body's result into the status the guest receives. A pointer or
/// length outside the guest's memory is misuse: it ends the callback with a trap (the
/// VM is replaced), as the SDK cannot handle `INVALID_MEMORY_ACCESS` anyway.
pub(crate) fn status(r: Result<(), Status>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok as i32),
        Err(Status::InvalidMemoryAccess) => Err(wasmtime::format_err!(
            "hostcall misuse: a pointer or length outside the guest's memory"
        )),
        Err(s) => Ok(s as i32),
    }
}

/// How far Sluice implements a hostcall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented as the spec says.
    Full,
    /// Links and answers a defined error status; see the note.
    Unimplemented,
}

/// One row of the hostcall table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Import module (`env` or `wasi_snapshot_preview1`).
    pub module: &'static str,
    /// Function name, exactly as in the spec.
    pub name: &'static str,
    /// Support level.
    pub support: Support,
    /// What Sluice does, in one line.
    pub note: &'static str,
}

/// Links hostcalls into a wasmtime linker and records them as table rows.
pub(crate) struct Registry<'a> {
    linker: &'a mut Linker<HostState>,
    rows: Vec<Row>,
}

impl Registry<'_> {
    /// Links `func` as `module.name` and records its row.
    pub(crate) fn func<Params, Args>(
        &mut self,
        module: &'static str,
        name: &'static str,
        support: Support,
        note: &'static str,
        func: impl IntoFunc<HostState, Params, Args>,
    ) -> Result<()> {
        self.linker.func_wrap(module, name, func)?;
        self.rows.push(Row {
            module,
            name,
            support,
            note,
        });
        Ok(())
    }
}

/// Links every hostcall into `linker` and returns the table of what was linked.
pub(crate) fn register(linker: &mut Linker<HostState>) -> Result<Vec<Row>> {
    let mut reg = Registry {
        linker,
        rows: Vec::new(),
    };
    log::register(&mut reg)?;
    buffers::register(&mut reg)?;
    headers::register(&mut reg)?;
    stream::register(&mut reg)?;
    properties::register(&mut reg)?;
    http_call::register(&mut reg)?;
    grpc::register(&mut reg)?;
    shared::register(&mut reg)?;
    metrics::register(&mut reg)?;
    foreign::register(&mut reg)?;
    wasi::register(&mut reg)?;
    Ok(reg.rows)
}

/// The integration test (file::function in `proxy/tests/suite/`) that drives each hostcall
/// through the real proxy. Hostcalls not listed have no SDK wrapper to call them.
pub const COVERAGE: &[(&str, &str)] = &[
    ("proxy_log", "abi::probe_covers_the_remaining_hostcalls"),
    (
        "proxy_get_log_level",
        "abi::probe_covers_the_remaining_hostcalls",
    ),
    (
        "proxy_get_current_time_nanoseconds",
        "chain::properties_and_time_reach_filters",
    ),
    (
        "proxy_set_tick_period_milliseconds",
        "abi::ticks_update_shared_data",
    ),
    (
        "proxy_get_buffer_bytes",
        "chain::body_rewrite_keeps_content_length_right",
    ),
    (
        "proxy_set_buffer_bytes",
        "chain::body_rewrite_keeps_content_length_right (also envoy::abi::set_buffer_bytes_at_or_past_the_end_appends)",
    ),
    (
        "proxy_get_header_map_pairs",
        "abi::probe_covers_the_remaining_hostcalls",
    ),
    (
        "proxy_set_header_map_pairs",
        "abi::probe_covers_the_remaining_hostcalls",
    ),
    (
        "proxy_get_header_map_value",
        "chain::header_edits_both_ways_and_chain_order",
    ),
    (
        "proxy_add_header_map_value",
        "chain::header_edits_both_ways_and_chain_order",
    ),
    (
        "proxy_replace_header_map_value",
        "chain::header_edits_both_ways_and_chain_order",
    ),
    (
        "proxy_remove_header_map_value",
        "chain::header_edits_both_ways_and_chain_order",
    ),
    (
        "proxy_send_local_response",
        "chain::local_response_never_contacts_the_upstream",
    ),
    (
        "proxy_continue_stream",
        "envoy::lifecycle::a_header_pause_holds_the_request_and_later_filters_until_a_tick_resumes_it",
    ),
    (
        "proxy_close_stream",
        "abi::probe_covers_the_remaining_hostcalls",
    ),
    (
        "proxy_get_status",
        "abi::probe_covers_the_remaining_hostcalls",
    ),
    ("proxy_done", "abi::probe_covers_the_remaining_hostcalls"),
    (
        "proxy_set_effective_context",
        "envoy::lifecycle::a_header_pause_holds_the_request_and_later_filters_until_a_tick_resumes_it",
    ),
    (
        "proxy_get_property",
        "abi::properties_flow_between_filters_and_phases_and_foreign_functions_answer",
    ),
    (
        "proxy_set_property",
        "abi::properties_flow_between_filters_and_phases_and_foreign_functions_answer",
    ),
    (
        "proxy_http_call",
        "abi::http_call_to_a_pool_resumes_or_answers_the_stream",
    ),
    (
        "proxy_grpc_call",
        "abi::probe_covers_the_remaining_hostcalls",
    ),
    ("proxy_get_shared_data", "abi::ticks_update_shared_data"),
    (
        "proxy_set_shared_data",
        "envoy::abi::shared_data_is_scoped_per_vm_id_with_quotas_and_freed_with_its_vm_id (also abi::ticks_update_shared_data)",
    ),
    (
        "proxy_register_shared_queue",
        "abi::shared_queue_between_two_plugins",
    ),
    (
        "proxy_resolve_shared_queue",
        "abi::shared_queue_between_two_plugins",
    ),
    (
        "proxy_enqueue_shared_queue",
        "abi::shared_queue_between_two_plugins",
    ),
    (
        "proxy_dequeue_shared_queue",
        "abi::shared_queue_between_two_plugins",
    ),
    (
        "proxy_define_metric",
        "abi::metrics_defined_by_a_filter_count",
    ),
    (
        "proxy_increment_metric",
        "abi::metrics_defined_by_a_filter_count",
    ),
    (
        "proxy_record_metric",
        "abi::metrics_defined_by_a_filter_count",
    ),
    ("proxy_get_metric", "abi::metrics_defined_by_a_filter_count"),
    (
        "proxy_call_foreign_function",
        "waf::sluice_waf_agrees_with_modsecurity (sluice.file.*, sluice.regex.*, sluice.pm.*; also waf::rule_files_are_policy_content, abi::properties_flow_between_filters_and_phases_and_foreign_functions_answer)",
    ),
    ("fd_write", "chain::wasip1_module_loads_and_runs (linked)"),
    (
        "environ_get",
        "chain::wasip1_module_loads_and_runs (linked)",
    ),
    (
        "environ_sizes_get",
        "chain::wasip1_module_loads_and_runs (linked)",
    ),
    ("proc_exit", "chain::wasip1_module_loads_and_runs (linked)"),
    (
        "poll_oneoff",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_fdstat_get",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_fdstat_set_flags",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_prestat_get",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_prestat_dir_name",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_filestat_get",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_read",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_close",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "fd_seek",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
    (
        "path_open",
        "envoy::abi::wasi_calls_of_the_go_runtime_answer_as_the_reference_host",
    ),
];

/// Callbacks Sluice calls in guests, and when.
pub const CALLBACKS: &[(&str, &str)] = &[
    (
        "_initialize",
        "once per VM, before anything else (wasip1 reactors and SDK modules)",
    ),
    (
        "proxy_on_memory_allocate / malloc",
        "whenever the host returns data to the guest",
    ),
    (
        "proxy_on_context_create",
        "root context at VM start; a stream context at a request's first callback",
    ),
    (
        "proxy_on_vm_start",
        "once per VM; false rejects the policy (or fails the VM). VMs start with the policy: at load (or swap), every filter of the policy, used by a route or not, gets a VM (and its spare) on every worker thread before the policy serves",
    ),
    (
        "proxy_on_configure",
        "once per VM, right after `proxy_on_vm_start` (so before the policy serves); false rejects the policy (or fails the VM)",
    ),
    (
        "proxy_on_request_headers",
        "`request_filter`, chain order. `Pause` with no body to follow holds the request and the later filters' header callbacks until the filter calls `proxy_continue_stream` (from any callback: a tick or queue after `proxy_set_effective_context` to the stream, a call response), at most the route pool's `read_timeout_ms` (then 504, logged); with a body, the filter's body callback answering `Continue` ends the pause",
    ),
    (
        "proxy_on_request_body",
        "before the upstream for bodies up to 64 KiB, else streamed; chain order",
    ),
    (
        "proxy_on_response_headers",
        "`response_filter`, reverse chain order; `Pause` with no body to follow holds the response as for requests; `Pause` with a body to follow holds the response head (HTTP/1 clients: nothing of the response is sent) until the body flows on from the chain, and a local response from a body callback meanwhile replaces the whole response (Envoy's `StopIteration`)",
    ),
    (
        "proxy_on_response_body",
        "`response_body_filter`, reverse chain order",
    ),
    (
        "proxy_on_done / proxy_on_log / proxy_on_delete",
        "when the request ends (`logging`), chain order; `proxy_on_delete` waits for the responses of calls dispatched from body phases or `proxy_on_log`",
    ),
    (
        "proxy_on_request_trailers / proxy_on_response_trailers",
        "not called: Pingora 0.9 carries no HTTP/1 trailers (comes with HTTP/2)",
    ),
    (
        "proxy_on_tick",
        "on each worker thread's VM at the root context's period, from policy load (no traffic or route needed) until the policy is swapped out",
    ),
    (
        "proxy_on_queue_ready",
        "on the VM that registered the queue last, on its own thread; not once its policy is swapped out",
    ),
    (
        "proxy_on_http_call_response",
        "with the root context's id (as the spec and the reference host; SDKs find the stream by token), the dispatching stream attached and effective; a headers phase waits for it; calls from body phases and `proxy_on_log` are answered too (before `proxy_on_delete`); a failed call arrives with no headers",
    ),
    (
        "proxy_on_foreign_function",
        "completes a fleet operation (`sluice.fleet.*`) with (the starting context's id, the token, the size of the result in buffer 8); a stream context gets it with the stream attached and effective (it may resume or answer locally); a headers phase waits for it, bounded by `[fleet] timeout_ms`; never for a deleted stream",
    ),
    (
        "proxy_on_new_connection and other TCP callbacks",
        "never: Sluice is an HTTP proxy",
    ),
];

/// The hostcall table as Markdown (`Name | Supported | Comment`).
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out =
        String::from("| Module | Name | Supported | Comment | Test |\n|---|---|---|---|---|\n");
    for r in rows {
        let s = match r.support {
            Support::Full => "yes",
            Support::Unimplemented => "no (defined status)",
        };
        let test = COVERAGE
            .iter()
            .find(|(n, _)| *n == r.name)
            .map_or("—".to_string(), |(_, t)| format!("`{t}`"));
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            r.module, r.name, s, r.note, test
        ));
    }
    out.push_str("\n## Callbacks\n\n| Callback | When Sluice calls it |\n|---|---|\n");
    for (name, when) in CALLBACKS {
        out.push_str(&format!("| `{name}` | {when} |\n"));
    }
    out
}
