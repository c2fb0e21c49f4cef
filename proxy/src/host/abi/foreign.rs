//! Foreign functions: `proxy_call_foreign_function`, Sluice's way to offer host powers
//! (image transforms, fast matchers) to filters while stock filters keep working.
//!
//! Functions are looked up by name in [`FOREIGN_FUNCTIONS`]; an unknown name answers
//! `NOT_FOUND`.

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::host::memory;
use crate::host::state::HostState;

/// A host function callable from filters: arguments in, results out.
pub type ForeignFn = fn(&[u8]) -> Result<Vec<u8>, Status>;

/// The registry of named host functions.
pub const FOREIGN_FUNCTIONS: &[(&str, ForeignFn)] = &[("sluice.echo", |args| Ok(args.to_vec()))];

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_call_foreign_function",
        Support::Full,
        "named host functions (`sluice.echo` returns its arguments); unknown names answer `NOT_FOUND`",
        |mut c: Caller<'_, HostState>, np: i32, nl: i32, ap: i32, al: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            status((|| {
                let name = memory::read_str(&mut c, np, nl).map_err(|_| Status::NotFound)?;
                let args = memory::read(&mut c, ap, al)?;
                let f = FOREIGN_FUNCTIONS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| *f)
                    .ok_or(Status::NotFound)?;
                let out = f(&args)?;
                memory::copy_out(&mut c, &out, ret_ptr, ret_len)
            })())
        },
    )?;
    Ok(())
}
