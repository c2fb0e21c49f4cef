//! Stream control and context: `proxy_send_local_response`, `proxy_continue_stream`,
//! `proxy_close_stream`, `proxy_get_status`, `proxy_done`, `proxy_set_effective_context`.

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::memory;
use crate::state::HostState;
use crate::stream::LocalResponse;

/// Largest local response body a filter may ask for.
pub const MAX_LOCAL_BODY: usize = 1 << 20;

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_send_local_response",
        Support::Full,
        "answers the client; the chain stops and the upstream is not contacted (in request phases); in a response phase it replaces the upstream's response while its head is unsent (response headers, or a body callback while a filter holds the head), else the stream is reset",
        |mut c: Caller<'_, HostState>,
         code: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let code = u16::try_from(code)
                    .ok()
                    .filter(|c| (200..=599).contains(c))
                    .ok_or(Status::BadArgument)?;
                let details = String::from_utf8_lossy(&memory::read(&mut c, dp, dl)?).into_owned();
                let body = memory::read(&mut c, bp, bl)?;
                if body.len() > MAX_LOCAL_BODY {
                    return Err(Status::BadArgument);
                }
                let raw = memory::read(&mut c, hp, hl)?;
                let mut headers = Vec::new();
                for (k, v) in memory::decode_pairs(&raw)? {
                    headers.push((String::from_utf8(k).map_err(|_| Status::BadArgument)?, v));
                }
                let st = c.data_mut();
                if st.has_stream {
                    st.stream_mut().local_response = Some(LocalResponse {
                        status: code,
                        details,
                        body,
                        headers,
                    });
                }
                Ok(())
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_continue_stream",
        Support::Full,
        "resumes a paused request or response: from the stream's own callbacks, or from any other (a tick, a queue, a call response) after `proxy_set_effective_context` to the paused stream",
        |mut c: Caller<'_, HostState>, stream_type: i32| -> wasmtime::Result<i32> {
            if !(0..=3).contains(&stream_type) {
                return Ok(Status::BadArgument as i32);
            }
            let st = c.data_mut();
            let ctx = st.context_id;
            if st.paused.contains(&ctx) && !(st.has_stream && ctx == st.stream_context_id) {
                // A paused stream made effective from another callback (a tick...).
                if !st.resumed.contains(&ctx) {
                    st.resumed.push(ctx);
                }
            } else if st.has_stream {
                st.stream_mut().resumed = true;
            }
            Ok(Status::Ok as i32)
        },
    )?;
    reg.func(
        "env",
        "proxy_close_stream",
        Support::Full,
        "resets the stream (the client connection is closed without a response)",
        |mut c: Caller<'_, HostState>, stream_type: i32| -> wasmtime::Result<i32> {
            if !(0..=3).contains(&stream_type) {
                return Ok(Status::BadArgument as i32);
            }
            let st = c.data_mut();
            if st.has_stream {
                st.stream_mut().closed = true;
            }
            Ok(Status::Ok as i32)
        },
    )?;
    reg.func(
        "env",
        "proxy_get_status",
        Support::Full,
        "status code and message of the last HTTP call response",
        |mut c: Caller<'_, HostState>,
         ret_code: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let (code, msg) = c.data().status.clone();
                memory::write_u32(&mut c, ret_code, code)?;
                memory::copy_out(&mut c, &msg, ret_ptr, ret_len)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_done",
        Support::Full,
        "acknowledges that a context finished after answering false to `proxy_on_done`",
        |mut c: Caller<'_, HostState>| -> wasmtime::Result<i32> {
            c.data_mut().done_called = true;
            Ok(Status::Ok as i32)
        },
    )?;
    reg.func(
        "env",
        "proxy_set_effective_context",
        Support::Full,
        "switches to the root context, the stream being served, or a stream paused in a headers phase (to resume it with `proxy_continue_stream` from a tick, a queue or a call response); others answer `BAD_ARGUMENT`",
        |mut c: Caller<'_, HostState>, id: i32| -> wasmtime::Result<i32> {
            let st = c.data_mut();
            let id = id as u32;
            if id == st.root_context_id
                || (st.has_stream && id == st.stream_context_id)
                || st.paused.contains(&id)
            {
                st.context_id = id;
                Ok(Status::Ok as i32)
            } else {
                Ok(Status::BadArgument as i32)
            }
        },
    )?;
    Ok(())
}
