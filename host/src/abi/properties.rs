//! Properties: `proxy_get_property`, `proxy_set_property`.
//!
//! Paths are the Envoy attribute names (segments separated by NUL, or one dotted
//! string). Strings are raw bytes, integers little-endian i64, maps in the pairs
//! format. Sluice's own facts live under `sluice.*` (documented in docs/POLICY.md); the
//! embedder's read-only ones ([`crate::StaticProperties`]) come with the engine.
//! Values set by filters are stream-local filter state, readable by later filters
//! and later phases of the same request; outside a stream they are VM-local.

use std::time::UNIX_EPOCH;

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::memory;
use crate::state::HostState;

/// Largest property value a filter may set.
pub const MAX_PROPERTY_BYTES: usize = 64 << 10;
/// Most properties a filter may set on one stream.
pub const MAX_PROPERTIES: usize = 256;

fn path_of(raw: &[u8]) -> Result<String, Status> {
    let s = memory::guest_str(raw)?;
    Ok(s.trim_end_matches('\0').replace('\0', "."))
}

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn header_str(state: &HostState, name: &str) -> Option<Vec<u8>> {
    state.stream().request_headers.get(name).map(<[u8]>::to_vec)
}

/// Envoy's route metadata attribute, down to one value: `<namespace>.<key>` follows.
const ROUTE_METADATA: &str = "xds.route_metadata.filter_metadata.";

/// The route's metadata value at `<namespace>.<key>` (namespaces may contain dots,
/// as Envoy's do, so the pair is matched whole).
fn route_metadata(i: &crate::RequestInfo, rest: &str) -> Option<Vec<u8>> {
    i.route_metadata
        .iter()
        .find(|(ns, k, _)| {
            rest.len() == ns.len() + 1 + k.len()
                && rest.starts_with(ns.as_str())
                && rest[ns.len()..].starts_with('.')
                && rest.ends_with(k.as_str())
        })
        .map(|(_, _, v)| v.clone().into_bytes())
}

/// The well-known value at `path`, if the host knows it.
fn well_known(state: &HostState, path: &str) -> Option<Vec<u8>> {
    let p = &state.plugin;
    match path {
        "plugin_name" => return Some(p.name.clone().into_bytes()),
        "plugin_root_id" => return Some(p.root_id.clone().into_bytes()),
        "plugin_vm_id" => return Some(p.vm_id.clone().into_bytes()),
        "sluice.generation" => return Some(int(p.generation as i64)),
        _ => {}
    }
    if let Some(v) = state.properties.get(path) {
        return Some(v.to_vec());
    }
    if !state.has_stream {
        return None;
    }
    let s = state.stream();
    let i = &s.info;
    let path_hdr = || s.request_headers.get(":path").unwrap_or(b"/").to_vec();
    Some(match path {
        "request.path" => path_hdr(),
        "request.url_path" => {
            let full = path_hdr();
            let end = full.iter().position(|b| *b == b'?').unwrap_or(full.len());
            full[..end].to_vec()
        }
        "request.query" => {
            let full = path_hdr();
            match full.iter().position(|b| *b == b'?') {
                Some(q) => full[q + 1..].to_vec(),
                None => Vec::new(),
            }
        }
        "request.host" => header_str(state, ":authority")?,
        "request.scheme" => header_str(state, ":scheme")?,
        "request.method" => header_str(state, ":method")?,
        "request.referer" => header_str(state, "referer")?,
        "request.useragent" => header_str(state, "user-agent")?,
        "request.id" | "sluice.request_id" => i.id.clone().into_bytes(),
        "sluice.request_target" => i.absolute_target.clone()?,
        "sluice.request_head" => i.received_head.as_ref()?.to_vec(),
        "request.protocol" => i.protocol.as_bytes().to_vec(),
        "request.headers" => memory::encode_pairs(
            s.request_headers
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .map(|(k, v)| (k.as_bytes(), v)),
        ),
        "request.time" => int(i
            .start
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)),
        "request.duration" => int(i.start.elapsed().map(|d| d.as_nanos() as i64).unwrap_or(0)),
        "response.code" => int(i64::from(i.response_code?)),
        "response.headers" => memory::encode_pairs(
            s.response_headers
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .map(|(k, v)| (k.as_bytes(), v)),
        ),
        "source.address" => i.source?.to_string().into_bytes(),
        "source.port" => int(i64::from(i.source?.port())),
        "destination.address" => i.destination?.to_string().into_bytes(),
        "destination.port" => int(i64::from(i.destination?.port())),
        "upstream.address" => i.upstream?.to_string().into_bytes(),
        "upstream.port" => int(i64::from(i.upstream?.port())),
        "sluice.route" | "route_name" | "xds.route_name" => i.route.as_bytes().to_vec(),
        "sluice.pool" | "cluster_name" | "xds.cluster_name" => i.pool.as_bytes().to_vec(),
        p if p.starts_with(ROUTE_METADATA) => route_metadata(i, &p[ROUTE_METADATA.len()..])?,
        _ => return None,
    })
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_get_property",
        Support::Full,
        "Envoy attributes (request, response, source, destination, upstream, plugin_*) and `sluice.*`",
        |mut c: Caller<'_, HostState>, pp: i32, pl: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            status((|| {
                let raw = memory::read(&mut c, pp, pl)?;
                let path = path_of(&raw).map_err(|_| Status::NotFound)?;
                let st = c.data();
                let value = match well_known(st, &path) {
                    Some(v) => v,
                    None if st.has_stream => st.stream().filter_state.get(&path).cloned().ok_or(Status::NotFound)?,
                    None => st.root_properties.get(&path).cloned().ok_or(Status::NotFound)?,
                };
                memory::copy_out(&mut c, &value, ret_ptr, ret_len)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_set_property",
        Support::Full,
        "filter state for the rest of the stream (or the VM, outside streams)",
        |mut c: Caller<'_, HostState>,
         pp: i32,
         pl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let raw = memory::read(&mut c, pp, pl)?;
                let path = path_of(&raw)?;
                let value = memory::read(&mut c, vp, vl)?;
                if value.len() > MAX_PROPERTY_BYTES {
                    return Err(Status::BadArgument);
                }
                let st = c.data_mut();
                let map = if st.has_stream {
                    &mut st.stream_mut().filter_state
                } else {
                    &mut st.root_properties
                };
                if map.len() >= MAX_PROPERTIES && !map.contains_key(&path) {
                    return Err(Status::BadArgument);
                }
                map.insert(path, value);
                Ok(())
            })())
        },
    )?;
    Ok(())
}
