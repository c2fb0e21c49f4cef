//! `[limits]`: the filter limits every filter inherits and the request header rules.

use toml::Spanned;

use super::errors::Lines;
use super::filters::FilterLimits;
use super::raw::RawLimits;

/// A filter's shared-data quota when its policy sets none (`shared_data_max_bytes`).
pub const DEFAULT_SHARED_DATA_BYTES: usize = 16 << 20;

/// The filter limits `[limits]` sets for every filter (each may override them).
pub(super) fn default_limits(l: &mut Lines<'_>, raw: &RawLimits) -> FilterLimits {
    FilterLimits {
        memory_bytes: raw.memory_mb.unwrap_or(64) << 20,
        callback_ms: raw.callback_ms.unwrap_or(100),
        startup_ms: raw.startup_ms.unwrap_or(5000),
        table_elements: raw.table_elements.unwrap_or(100_000),
        spare_vm: raw.spare_vm.unwrap_or(true),
        rebuild_budget_ms: rebuild_budget(l, raw.rebuild_budget_ms.as_ref(), 2500),
        shared_data_bytes: raw
            .shared_data_max_bytes
            .unwrap_or(DEFAULT_SHARED_DATA_BYTES),
    }
}

/// `rebuild_budget_ms`: 1 ms to the crash-loop window (10 s).
pub(super) fn rebuild_budget(l: &mut Lines<'_>, v: Option<&Spanned<u64>>, default: u64) -> u64 {
    match v {
        None => default,
        Some(v) if (1..=10_000).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            l.err(
                Some(v.span()),
                "rebuild_budget_ms must be 1..10000 (the crash-loop window is 10 s)",
            );
            default
        }
    }
}

/// `max_header_bytes`, `max_header_count` and `non_utf8_headers` of `[limits]`.
pub(super) fn header_rules(l: &mut Lines<'_>, raw: &RawLimits) -> crate::header_guard::HeaderRules {
    use crate::header_guard::{HeaderRules, NonUtf8, MAX_MAX_BYTES, MAX_MAX_COUNT};
    let mut rules = HeaderRules::default();
    if let Some(v) = &raw.max_header_bytes {
        if (1024..=MAX_MAX_BYTES).contains(v.get_ref()) {
            rules.max_bytes = *v.get_ref();
        } else {
            l.err(
                Some(v.span()),
                format!("max_header_bytes must be 1024..{MAX_MAX_BYTES}"),
            );
        }
    }
    if let Some(v) = &raw.max_header_count {
        if (1..=MAX_MAX_COUNT).contains(v.get_ref()) {
            rules.max_count = *v.get_ref();
        } else {
            l.err(
                Some(v.span()),
                format!("max_header_count must be 1..{MAX_MAX_COUNT}"),
            );
        }
    }
    if let Some(v) = &raw.non_utf8_headers {
        match v.get_ref().as_str() {
            "reject" => rules.non_utf8 = NonUtf8::Reject,
            "pass" => rules.non_utf8 = NonUtf8::Pass,
            other => l.err(
                Some(v.span()),
                format!("non_utf8_headers must be \"reject\" or \"pass\", not {other:?}"),
            ),
        }
    }
    rules
}
