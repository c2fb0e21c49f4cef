//! Foreign functions: `proxy_call_foreign_function`, Sluice's way to offer host powers
//! (policy files, fast matchers) to filters while stock filters keep working.
//!
//! Functions are looked up by name in [`FOREIGN_FUNCTIONS`]; an unknown name answers
//! `NOT_FOUND`. Each gets the VM's [`HostState`] and the argument bytes. Integers in
//! arguments and results are u32 little-endian; see `docs/ABI.md` for each encoding.

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::callout::{HttpCallRequest, MAX_CALL_TIMEOUT};
use crate::collections::{collections, decode_ops, now_ms};
use crate::fleet::{self, FleetOp, MAX_KEY};
use crate::matchers::MatchError;
use crate::memory;
use crate::state::HostState;

/// A host function callable from filters: the VM's state and the arguments in,
/// result bytes out.
pub type ForeignFn = fn(&mut HostState, &[u8]) -> Result<Vec<u8>, Status>;

fn bad(e: MatchError) -> Status {
    tracing::debug!(error = %e, "foreign matcher call refused");
    Status::BadArgument
}

/// The registry of named host functions.
pub const FOREIGN_FUNCTIONS: &[(&str, ForeignFn)] = &[
    ("sluice.echo", |_, args| Ok(args.to_vec())),
    ("sluice.file.list", |st, _| {
        let names: Vec<&str> = st.plugin.files.iter().map(|f| f.name.as_str()).collect();
        Ok(names.join("\n").into_bytes())
    }),
    ("sluice.file.read", |st, args| {
        st.plugin
            .files
            .iter()
            .find(|f| f.name.as_bytes() == args)
            .map(|f| f.data.to_vec())
            .ok_or(Status::NotFound)
    }),
    ("sluice.regex.compile", |st, args| {
        st.matchers.regex_compile(args).map_err(bad)
    }),
    ("sluice.regex.match", |st, args| {
        st.matchers.regex_match(args).map_err(bad)
    }),
    ("sluice.regex.captures", |st, args| {
        st.matchers.regex_captures(args).map_err(bad)
    }),
    ("sluice.pm.compile", |st, args| {
        st.matchers.pm_compile(args).map_err(bad)
    }),
    ("sluice.pm.match", |st, args| {
        st.matchers.pm_match(args).map_err(bad)
    }),
    ("sluice.collection.read", |st, args| {
        if args.is_empty() || args.len() > MAX_KEY {
            return Err(Status::BadArgument);
        }
        let refresh = st.callouts.as_ref().and_then(|c| c.collection_refresh_ms());
        Ok(collections().read(&collection_key(st, args), refresh, now_ms()))
    }),
    ("sluice.collection.apply", |st, args| {
        let (timeout_s, key, ops) = split_apply(args).ok_or(Status::BadArgument)?;
        let ops = decode_ops(ops).ok_or(Status::BadArgument)?;
        let fleet = st
            .callouts
            .as_ref()
            .and_then(|c| c.collection_refresh_ms())
            .is_some();
        let key = collection_key(st, key);
        collections().apply(&key, u64::from(timeout_s) * 1000, ops, fleet, now_ms());
        Ok(Vec::new())
    }),
    ("sluice.fleet.enabled", |st, _| {
        let on = st.callouts.as_ref().is_some_and(|c| c.fleet_enabled());
        Ok(vec![on as u8])
    }),
];

/// A collection record's key: the filter's `vm_id` (filters sharing one share their
/// records, as they share shared data), then the filter's key.
fn collection_key(st: &HostState, key: &[u8]) -> Vec<u8> {
    scoped_key(st, COLLECTION_KIND, key)
}

/// The kind of a collection record's key ([`scoped_key`]): `sluice.collection.*` and
/// `sluice.fleet.load` must name a record alike.
const COLLECTION_KIND: &[u8] = b"col";

/// The filter's key in the fleet (and collection) namespace: [`fleet::scoped_key`] with
/// the filter's `vm_id` as the owner.
fn scoped_key(st: &HostState, kind: &[u8], key: &[u8]) -> Vec<u8> {
    fleet::scoped_key(kind, st.plugin.vm_id.as_bytes(), key)
}

/// `sluice.collection.apply`'s arguments: timeout (seconds), key_len, key, then the changes.
fn split_apply(args: &[u8]) -> Option<(u32, &[u8], &[u8])> {
    let timeout = u32::from_le_bytes(args.get(..4)?.try_into().ok()?);
    let len = u32::from_le_bytes(args.get(4..8)?.try_into().ok()?) as usize;
    if len == 0 || len > MAX_KEY {
        return None;
    }
    let key = args.get(8..8usize.checked_add(len)?)?;
    Some((timeout, key, &args[8 + len..]))
}

/// Starts a fleet operation: queued with the running callback's HTTP calls (same
/// limits, same token sequence), run by the proxy once the callback returns, and
/// completed with `proxy_on_foreign_function(context, token, size)`. Answers the token.
fn start_fleet(st: &mut HostState, op: FleetOp) -> Result<u32, Status> {
    let Some(callouts) = st.callouts.as_ref() else {
        return Err(Status::InternalFailure);
    };
    if !callouts.fleet_enabled() {
        return Err(Status::NotFound);
    }
    if st.fleet_tokens.len() >= MAX_PENDING_FLEET {
        return Err(Status::InternalFailure);
    }
    let token = super::http_call::queue_call(
        st,
        HttpCallRequest {
            token: 0,
            context_id: 0,
            upstream: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            timeout: MAX_CALL_TIMEOUT,
            fleet: Some(op),
        },
    )?;
    st.fleet_tokens.push((token, st.context_id));
    Ok(token)
}

/// Most fleet operations a VM may have outstanding (across its streams).
pub const MAX_PENDING_FLEET: usize = 4096;

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_call_foreign_function",
        Support::Full,
        "named host functions; unknown names answer `NOT_FOUND`, bad arguments `BAD_ARGUMENT`; \
         integers are u32 little-endian. \
         `sluice.echo`(bytes) -> the same bytes. \
         `sluice.file.list`() -> the names of the filter's policy `files`, joined with `\\n`, in load order. \
         `sluice.file.read`(name) -> its contents (`NOT_FOUND` if not declared). \
         `sluice.regex.compile`(count, count x (len, pattern)) -> handle: a `regex::bytes` set (Rust syntax, flags inline), \
         cached host-wide. \
         `sluice.regex.match`(handle, input) -> n, n x index of the set's patterns that match. \
         `sluice.regex.captures`(handle, index, input) -> n, n x (start, end) of each group of pattern `index` \
         (0xFFFFFFFF pairs for absent groups; n = 0: no match). \
         `sluice.pm.compile`(count, count x (len, phrase)) -> handle: Aho-Corasick, ASCII case-insensitive. \
         `sluice.pm.match`(handle, input) -> found, index, start, end of the earliest-ending match. \
         Limits: 64 KiB per pattern, 10,000 patterns or 100,000 phrases (8 MiB) per set, 64 MiB compiled size, \
         16 MiB input, 4,096 handles per VM. \
         Persistent collections (WAF `initcol`; see docs/ABI.md, Persistent collections): \
         `sluice.collection.read`(key) -> stale (u8), created, updated, counter, n, n x (name_len, name, value_len, value); \
         `sluice.collection.apply`(timeout_s, key_len, key, n, n x change) -> nothing. \
         Fleet operations (asynchronous; see docs/ABI.md, Fleet operations): `sluice.fleet.enabled`() -> 1 byte, 1 when \
         the policy has a `[fleet]` store. `sluice.fleet.incr`(window_ms, limit, key), `sluice.fleet.sliding`(window_ms, \
         limit, key), `sluice.fleet.get`(key), `sluice.fleet.load`(collection key), `sluice.fleet.set`(ttl_ms, key_len, key, value), \
         `sluice.fleet.cas`(ttl_ms, key_len, key, expected_len or 0xFFFFFFFF for absent, expected, new) -> token; the \
         filter returns `Pause` and gets `proxy_on_foreign_function(context, token, size)` with the result in buffer 8 \
         (`NOT_FOUND` without `[fleet]`; keys 1..1024 bytes, values up to 64 KiB, TTLs up to 1 day)",
        |mut c: Caller<'_, HostState>, np: i32, nl: i32, ap: i32, al: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            status((|| {
                let name = memory::read_str(&mut c, np, nl).map_err(|_| Status::NotFound)?;
                let args = memory::read(&mut c, ap, al)?;
                if let Some(op) = FleetOp::decode(&name, &args) {
                    let mut op = op?;
                    // Each filter (`vm_id`) has its own keys: no filter reads or moves
                    // another's counters or records.
                    let kind: &[u8] = match op {
                        FleetOp::Load { .. } => COLLECTION_KIND,
                        _ => fleet::FILTER_KIND,
                    };
                    op.scope(|key| scoped_key(c.data(), kind, key));
                    let token = start_fleet(c.data_mut(), op)?;
                    return memory::copy_out(&mut c, &token.to_le_bytes(), ret_ptr, ret_len);
                }
                let f = FOREIGN_FUNCTIONS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| *f)
                    .ok_or(Status::NotFound)?;
                let out = f(c.data_mut(), &args)?;
                memory::copy_out(&mut c, &out, ret_ptr, ret_len)
            })())
        },
    )?;
    Ok(())
}
