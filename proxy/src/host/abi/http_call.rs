//! HTTP calls: `proxy_http_call`.
//!
//! Not implemented yet: answers `INTERNAL_FAILURE`, which the SDK turns into an `Err`
//! from `dispatch_http_call` (no trap).

use wasmtime::Caller;
use wasmtime::Result;

use super::{Registry, Status, Support};
use crate::host::state::HostState;

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_http_call",
        Support::Unimplemented,
        "answers `INTERNAL_FAILURE` (the SDK returns `Err`)",
        |_c: Caller<'_, HostState>,
         _up: i32,
         _ul: i32,
         _hp: i32,
         _hl: i32,
         _bp: i32,
         _bl: i32,
         _tp: i32,
         _tl: i32,
         _timeout: i32,
         _ret: i32|
         -> i32 { Status::InternalFailure as i32 },
    )?;
    Ok(())
}
