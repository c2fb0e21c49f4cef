//! gRPC calls: `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel`, `proxy_grpc_close`.
//!
//! Sluice does not speak gRPC to upstreams: calls answer `INTERNAL_FAILURE` (the SDK
//! returns `Err`), operations on tokens answer `NOT_FOUND` (no such call).

use wasmtime::Caller;
use wasmtime::Result;

use super::{Registry, Status, Support};
use crate::state::HostState;

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_grpc_call",
        Support::Unimplemented,
        "answers `INTERNAL_FAILURE`",
        |_c: Caller<'_, HostState>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _timeout: i32,
         _ret: i32|
         -> wasmtime::Result<i32> { Ok(Status::InternalFailure as i32) },
    )?;
    reg.func(
        "env",
        "proxy_grpc_stream",
        Support::Unimplemented,
        "answers `INTERNAL_FAILURE`",
        |_c: Caller<'_, HostState>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _ret: i32|
         -> wasmtime::Result<i32> { Ok(Status::InternalFailure as i32) },
    )?;
    reg.func(
        "env",
        "proxy_grpc_send",
        Support::Unimplemented,
        "answers `NOT_FOUND`",
        |_c: Caller<'_, HostState>,
         _t: i32,
         _p: i32,
         _l: i32,
         _end: i32|
         -> wasmtime::Result<i32> { Ok(Status::NotFound as i32) },
    )?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        reg.func(
            "env",
            name,
            Support::Unimplemented,
            "answers `NOT_FOUND`",
            |_c: Caller<'_, HostState>, _t: i32| -> wasmtime::Result<i32> {
                Ok(Status::NotFound as i32)
            },
        )?;
    }
    Ok(())
}
