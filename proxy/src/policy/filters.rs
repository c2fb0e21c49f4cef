//! `[filters.*]`: a filter's module, configuration, files, limits and failure policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::errors::Lines;
use super::limits::rebuild_budget;
use super::raw::RawFilter;
use super::{files, FileGrant};

/// What to do when a filter fails (trap, deadline, lost VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer the request with this status.
    Closed(u16),
    /// Skip the filter for the rest of the request.
    Open,
}

/// Whether a filter needs the whole request body before the origin sees the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestBodyMode {
    /// Hold the request (header and body) until the chain has seen the whole body:
    /// read up to `[limits] max_body_bytes` before the upstream is contacted, 413
    /// beyond (nginx's `proxy_request_buffering on`, as ModSecurity needs it).
    #[default]
    Buffer,
    /// Stream the body to the origin chunk by chunk as the filters pass it on; the
    /// origin sees the request before the filters have seen its body.
    Stream,
}

/// Limits applied to filters (policy-wide defaults, overridable per filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Linear-memory cap of one VM, bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one callback, milliseconds.
    pub callback_ms: u64,
    /// CPU deadline of start-up (instantiate, `proxy_on_vm_start`, `proxy_on_configure`), milliseconds.
    pub startup_ms: u64,
    /// Most elements of one wasm table (function pointers), per VM.
    pub table_elements: usize,
    /// Keep a started VM in reserve on each worker thread.
    pub spare_vm: bool,
    /// Time VM rebuilds after failures may take within 10 s before the crash-loop
    /// guard pauses rebuilds, milliseconds.
    pub rebuild_budget_ms: u64,
    /// Most shared-data bytes (keys and values) the filter may have written.
    pub shared_data_bytes: usize,
}

/// A filter: a module and the configuration it is started with.
#[derive(Debug, Clone)]
pub struct FilterDef {
    /// Name (`plugin_name`).
    pub name: String,
    /// Resolved path of the `.wasm` file.
    pub module: PathBuf,
    /// Line of the `module` key, for errors found later.
    pub line: usize,
    /// Bytes for `proxy_on_configure` (tables are handed over as JSON).
    pub config: Vec<u8>,
    /// Bytes for `proxy_on_vm_start`.
    pub vm_config: Vec<u8>,
    /// Root id.
    pub root_id: String,
    /// VM id (`vm_id`): filters with the same one share shared data and queues.
    pub vm_id: String,
    /// Limits.
    pub limits: FilterLimits,
    /// Failure handling.
    pub on_failure: OnFailure,
    /// Files declared with `files`, read when the policy loaded.
    pub files: std::sync::Arc<Vec<FileGrant>>,
    /// `request_body`: hold the request until this filter has seen the whole body.
    pub request_body: RequestBodyMode,
}

/// Validates `[filters.*]`: modules, configuration, files, limits, failure policy.
pub(super) fn parse_filters(
    l: &mut Lines<'_>,
    base: &Path,
    raw: &BTreeMap<String, RawFilter>,
    default_limits: &FilterLimits,
    component_model: bool,
) -> (Vec<FilterDef>, Vec<super::ComponentDef>) {
    let mut filters = Vec::new();
    let mut components = Vec::new();
    for (name, f) in raw {
        let line = l.line_of(f.module.span().start);
        let module = if crate::bundle::BundleRef::is_bundle(f.module.get_ref()) {
            crate::bundle::module::fetch(f.module.get_ref()).unwrap_or_else(|e| {
                l.err(Some(f.module.span()), format!("filter {name:?}: {e}"));
                PathBuf::new()
            })
        } else {
            base.join(f.module.get_ref())
        };
        let on_failure = match f.on_failure.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("fail_closed") => {
                let status = f
                    .failure_status
                    .as_ref()
                    .map(|s| *s.get_ref())
                    .unwrap_or(503);
                if !(200..=599).contains(&status) {
                    l.err(
                        f.failure_status.as_ref().map(|s| s.span()),
                        "failure_status must be 200..599",
                    );
                }
                OnFailure::Closed(status)
            }
            Some("fail_open") => OnFailure::Open,
            Some(other) => {
                l.err(
                    f.on_failure.as_ref().map(|s| s.span()),
                    format!("filter {name:?}: on_failure must be \"fail_open\" or \"fail_closed\", not {other:?}"),
                );
                OnFailure::Open
            }
        };
        if super::components::is_component(l, name, f) {
            components.push(super::components::parse_component(
                l,
                name,
                f,
                module,
                on_failure,
                default_limits,
                component_model,
            ));
            continue;
        }
        let request_body = match f.request_body.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("buffer") => RequestBodyMode::Buffer,
            Some("stream") => RequestBodyMode::Stream,
            Some(other) => {
                l.err(
                    f.request_body.as_ref().map(|s| s.span()),
                    format!("filter {name:?}: request_body must be \"buffer\" or \"stream\", not {other:?}"),
                );
                RequestBodyMode::Buffer
            }
        };
        let files = match &f.files {
            Some(list) => files::load(base, list.get_ref()).unwrap_or_else(|e| {
                l.err(Some(list.span()), format!("filter {name:?}: {e}"));
                Vec::new()
            }),
            None => Vec::new(),
        };
        filters.push(FilterDef {
            files: std::sync::Arc::new(files),
            name: name.clone(),
            module,
            line,
            config: f.config.as_ref().map(config_bytes).unwrap_or_default(),
            vm_config: f.vm_config.as_ref().map(config_bytes).unwrap_or_default(),
            root_id: f.root_id.clone().unwrap_or_default(),
            vm_id: f.vm_id.clone().unwrap_or_else(|| name.clone()),
            limits: FilterLimits {
                memory_bytes: f
                    .memory_mb
                    .map(|m| m << 20)
                    .unwrap_or(default_limits.memory_bytes),
                callback_ms: f.callback_ms.unwrap_or(default_limits.callback_ms),
                startup_ms: f.startup_ms.unwrap_or(default_limits.startup_ms),
                table_elements: f.table_elements.unwrap_or(default_limits.table_elements),
                spare_vm: f.spare_vm.unwrap_or(default_limits.spare_vm),
                rebuild_budget_ms: rebuild_budget(
                    l,
                    f.rebuild_budget_ms.as_ref(),
                    default_limits.rebuild_budget_ms,
                ),
                shared_data_bytes: f
                    .shared_data_max_bytes
                    .unwrap_or(default_limits.shared_data_bytes),
            },
            on_failure,
            request_body,
        });
    }
    (filters, components)
}

/// Bytes handed to a filter for a config value: strings as they are, anything else
/// (tables, arrays, numbers) as JSON.
fn config_bytes(v: &toml::Value) -> Vec<u8> {
    match v {
        toml::Value::String(s) => s.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}
