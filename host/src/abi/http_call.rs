//! HTTP calls: `proxy_http_call`. The call is queued and sent by the proxy once the
//! callback returns; the response comes back through `proxy_on_http_call_response`
//! (headers as map 6, body as buffer 4, trailers as map 7). Calls go only to pools
//! of the policy (`BAD_ARGUMENT` otherwise) and are bounded in number and time.

use std::time::Duration;

use wasmtime::{Caller, Result};

use super::{status, Registry, Status, Support};
use crate::callout::{HttpCallRequest, MAX_CALLS_PER_STREAM, MAX_CALL_TIMEOUT, MAX_PENDING_CALLS};
use crate::memory;
use crate::state::HostState;

/// Queues a call of the running callback (an HTTP call or a fleet operation) under the
/// VM's and the stream's bounds: gives it the next token and the calling context, and
/// answers the token. The proxy sends it once the callback returns.
pub(super) fn queue_call(st: &mut HostState, mut req: HttpCallRequest) -> Result<u32, Status> {
    if st.pending_calls.len() >= MAX_PENDING_CALLS
        || (st.has_stream && st.stream().calls >= MAX_CALLS_PER_STREAM)
    {
        return Err(Status::InternalFailure);
    }
    if st.has_stream {
        st.stream_mut().calls += 1;
    }
    st.calls_made = st.calls_made.wrapping_add(1).max(1);
    req.token = st.calls_made;
    req.context_id = st.context_id;
    st.pending_calls.push(req);
    Ok(st.calls_made)
}

fn pairs(
    c: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<Vec<(String, Vec<u8>)>, Status> {
    let raw = memory::read(c, ptr, len)?;
    memory::decode_pairs(&raw)?
        .into_iter()
        .map(|(k, v)| Ok((String::from_utf8(k).map_err(|_| Status::BadArgument)?, v)))
        .collect()
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_http_call",
        Support::Full,
        "to a pool of the policy, by name; at most 16 outstanding and 64 per request, timeout at most 60 s",
        |mut c: Caller<'_, HostState>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let upstream = memory::read_str(&mut c, up, ul).map_err(|_| Status::BadArgument)?;
                let headers = pairs(&mut c, hp, hl).map_err(|_| Status::BadArgument)?;
                let body = memory::read(&mut c, bp, bl)?;
                let trailers = pairs(&mut c, tp, tl).map_err(|_| Status::BadArgument)?;
                let st = c.data_mut();
                let Some(callouts) = st.callouts.as_ref() else {
                    return Err(Status::InternalFailure);
                };
                if !callouts.knows(&upstream) {
                    return Err(Status::BadArgument);
                }
                if !headers.iter().any(|(k, _)| k == ":path") || !headers.iter().any(|(k, _)| k == ":method") {
                    return Err(Status::BadArgument);
                }
                let timeout = Duration::from_millis(timeout as u32 as u64).min(MAX_CALL_TIMEOUT);
                let timeout = if timeout.is_zero() { MAX_CALL_TIMEOUT } else { timeout };
                let token = queue_call(st, HttpCallRequest {
                    token: 0,
                    context_id: 0,
                    upstream,
                    headers,
                    body,
                    trailers,
                    timeout,
                    fleet: None,
                })?;
                memory::write_u32(&mut c, ret, token)
            })())
        },
    )?;
    Ok(())
}
