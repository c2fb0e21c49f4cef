//! `[filters.NAME]` with `kind = "component"`: a WASI 0.3 `wasi:http` component (issue #21),
//! experimental behind `[server] component_model = true`. Its keys: `module`, `memory_mb`,
//! `callback_ms` (the CPU deadline of one entry into the guest), `on_failure`,
//! `failure_status`, `reuse_requests` and `reuse_concurrency`.

use std::path::PathBuf;

use super::errors::Lines;
use super::filters::{FilterLimits, OnFailure};
use super::raw::RawFilter;

/// A component filter: a middleware in a route's `filters`, or a route's `function`.
#[derive(Debug, Clone)]
pub struct ComponentDef {
    /// Name (metrics label, logs).
    pub name: String,
    /// Resolved path of the component `.wasm` file.
    pub module: PathBuf,
    /// Line of the `module` key, for errors found later (wrong world, missing import).
    pub line: usize,
    /// Linear-memory cap of one instance, bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one entry into the guest, milliseconds.
    pub callback_ms: u64,
    /// What a failure does to the request.
    pub on_failure: OnFailure,
    /// Requests one instance serves (1: a fresh instance per request).
    pub reuse_requests: usize,
    /// Requests one instance serves at a time.
    pub reuse_concurrency: usize,
    /// Time rebuilding instances after failures may take within the crash-loop guard's
    /// window, milliseconds.
    pub rebuild_budget_ms: u64,
}

/// Whether a raw filter is a component (`kind = "component"`); any `kind` but
/// `"component"` and `"proxy-wasm"` is an error.
pub(super) fn is_component(l: &mut Lines<'_>, name: &str, f: &RawFilter) -> bool {
    match f.kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("proxy-wasm") => false,
        Some("component") => true,
        Some(other) => {
            l.err(
                f.kind.as_ref().map(|k| k.span()),
                format!(
                    "filter {name:?}: kind must be \"proxy-wasm\" or \"component\", not {other:?}"
                ),
            );
            false
        }
    }
}

/// Validates a component filter. `enabled`: `[server] component_model = true`.
pub(super) fn parse_component(
    l: &mut Lines<'_>,
    name: &str,
    f: &RawFilter,
    module: PathBuf,
    on_failure: OnFailure,
    defaults: &FilterLimits,
    enabled: bool,
) -> ComponentDef {
    if !enabled {
        l.err(
            f.kind.as_ref().map(|k| k.span()),
            format!("filter {name:?}: kind = \"component\" is experimental: set [server] component_model = true"),
        );
    }
    let unsupported = [
        ("config", f.config.is_some()),
        ("vm_config", f.vm_config.is_some()),
        ("files", f.files.is_some()),
        ("root_id", f.root_id.is_some()),
        ("vm_id", f.vm_id.is_some()),
        ("request_body", f.request_body.is_some()),
    ];
    for (key, set) in unsupported {
        if set {
            l.err(
                f.kind.as_ref().map(|k| k.span()),
                format!("filter {name:?}: {key} is a Proxy-Wasm key; a component has none"),
            );
        }
    }
    let positive = |l: &mut Lines<'_>, v: &Option<toml::Spanned<usize>>, key: &str| match v {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 100_000 => {
            l.err(
                Some(n.span()),
                format!("filter {name:?}: {key} must be 1..100000"),
            );
            1
        }
        Some(n) => *n.get_ref(),
        None => 1,
    };
    let reuse_requests = positive(l, &f.reuse_requests, "reuse_requests");
    let reuse_concurrency = positive(l, &f.reuse_concurrency, "reuse_concurrency");
    ComponentDef {
        name: name.to_string(),
        module,
        line: l.line_of(f.module.span().start),
        memory_bytes: f
            .memory_mb
            .map(|m| m << 20)
            .unwrap_or(defaults.memory_bytes),
        callback_ms: f.callback_ms.unwrap_or(defaults.callback_ms),
        on_failure,
        reuse_requests,
        reuse_concurrency,
        rebuild_budget_ms: super::limits::rebuild_budget(
            l,
            f.rebuild_budget_ms.as_ref(),
            defaults.rebuild_budget_ms,
        ),
    }
}
