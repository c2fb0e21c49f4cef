//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`.

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::memory;
use crate::state::HostState;
use crate::stream::BodyKind;

/// The bytes of a buffer, or `NOT_FOUND` when the running callback has no such buffer.
fn buffer(state: &HostState, kind: i32) -> Result<&[u8], Status> {
    let body = |want: BodyKind| {
        if state.has_stream && state.stream().body_kind == Some(want) {
            Ok(state.stream().body.as_slice())
        } else {
            Err(Status::NotFound)
        }
    };
    match kind {
        0 => body(BodyKind::Request),
        1 => body(BodyKind::Response),
        4 => state
            .call_response
            .as_ref()
            .map(|r| r.body.as_slice())
            .ok_or(Status::NotFound),
        6 => Ok(&state.plugin.vm_config),
        7 => Ok(&state.plugin.plugin_config),
        8 => state.call_data.as_deref().ok_or(Status::NotFound),
        2 | 3 | 5 => Err(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_get_buffer_bytes",
        Support::Full,
        "request/response body of the running body phase, call response body, VM and plugin configuration, \
         foreign-function completion data (8, `CallData`, in `proxy_on_foreign_function`)",
        |mut c: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let buf = buffer(c.data(), kind)?;
                let start = (start as u32 as usize).min(buf.len());
                let end = start.saturating_add(max as u32 as usize).min(buf.len());
                let bytes = buf[start..end].to_vec();
                memory::copy_out(&mut c, &bytes, ret_ptr, ret_len)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_get_buffer_status",
        Support::Full,
        "size of a buffer",
        |mut c: Caller<'_, HostState>,
         kind: i32,
         ret_size: i32,
         ret_flags: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let n = buffer(c.data(), kind)?.len() as u32;
                memory::write_u32(&mut c, ret_size, n)?;
                memory::write_u32(&mut c, ret_flags, 0)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_set_buffer_bytes",
        Support::Full,
        "replaces `size` bytes at `start` of the body being filtered (prepend, replace; a `start` at or past the end appends)",
        |mut c: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let want = match kind {
                    0 => BodyKind::Request,
                    1 => BodyKind::Response,
                    2..=8 => return Err(Status::NotFound),
                    _ => return Err(Status::BadArgument),
                };
                let data = memory::read(&mut c, ptr, len)?;
                let st = c.data_mut();
                if !st.has_stream || st.stream().body_kind != Some(want) {
                    return Err(Status::NotFound);
                }
                let max = st.stream().max_buffer_bytes;
                let body = &mut st.stream_mut().body;
                // A start at or past the end appends (the SDKs' append; Envoy's buffer
                // does the same).
                let start = (start as u32 as usize).min(body.len());
                let end = start.saturating_add(size as u32 as usize).min(body.len());
                let new_len = body.len() - (end - start) + data.len();
                if new_len > max {
                    return Err(Status::BadArgument);
                }
                body.splice(start..end, data);
                Ok(())
            })())
        },
    )?;
    Ok(())
}
