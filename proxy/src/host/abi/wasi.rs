//! The WASI preview1 calls the Proxy-Wasm spec lists, for modules built for
//! `wasm32-wasip1`: `fd_write` (stdout/stderr become log lines), clocks, `random_get`,
//! an empty environment and argument list, `proc_exit`. No file descriptor beyond
//! stdout and stderr exists and no directory is preopened: a filter reaches neither
//! the filesystem nor the network. Other WASI imports link as `ENOSYS` stubs
//! (see `engine.rs`).

use wasmtime::Caller;
use wasmtime::Result;

use super::{log::emit, log::now_nanos, Registry, Support};
use crate::host::memory;
use crate::host::state::HostState;

const W: &str = "wasi_snapshot_preview1";
/// WASI errno values used here.
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
/// Most iovecs one `fd_write` may pass.
const MAX_IOVS: u32 = 1024;

fn errno(r: Result<(), super::Status>) -> i32 {
    match r {
        Ok(()) => ESUCCESS,
        Err(_) => EFAULT,
    }
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        W,
        "fd_write",
        Support::Full,
        "fd 1 and 2 become log lines (info, error); other fds answer `EBADF`",
        |mut c: Caller<'_, HostState>, fd: i32, iovs: i32, n: i32, ret: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return EBADF;
            }
            if n as u32 > MAX_IOVS {
                return EINVAL;
            }
            let mut text = Vec::new();
            let r = (|| {
                let raw = memory::read(&mut c, iovs, n.wrapping_mul(8))?;
                for iov in raw.chunks_exact(8) {
                    let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    text.extend(memory::read(&mut c, ptr, len)?);
                    if text.len() > memory::MAX_GUEST_READ {
                        return Err(super::Status::BadArgument);
                    }
                }
                memory::write_u32(&mut c, ret, text.len() as u32)
            })();
            let msg = String::from_utf8_lossy(&text);
            let msg = msg.trim_end();
            if r.is_ok() && !msg.is_empty() {
                emit(&c.data().plugin.name, if fd == 1 { 2 } else { 4 }, msg);
            }
            errno(r)
        },
    )?;
    reg.func(
        W,
        "clock_time_get",
        Support::Full,
        "realtime and monotonic clocks, nanoseconds",
        |mut c: Caller<'_, HostState>, id: i32, _precision: i64, ret: i32| -> i32 {
            let t = match id {
                0 => now_nanos(),
                1..=3 => monotonic_nanos(),
                _ => return EINVAL,
            };
            errno(memory::write_u64(&mut c, ret, t))
        },
    )?;
    reg.func(
        W,
        "clock_res_get",
        Support::Full,
        "1 ns",
        |mut c: Caller<'_, HostState>, id: i32, ret: i32| -> i32 {
            if !(0..=3).contains(&id) {
                return EINVAL;
            }
            errno(memory::write_u64(&mut c, ret, 1))
        },
    )?;
    reg.func(
        W,
        "random_get",
        Support::Full,
        "operating-system randomness",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| -> i32 {
            if len as u32 as usize > memory::MAX_GUEST_READ {
                return EINVAL;
            }
            let mut buf = vec![0u8; len as u32 as usize];
            if getrandom(&mut buf).is_err() {
                return EINVAL;
            }
            errno(memory::write(&mut c, ptr, &buf))
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        reg.func(
            W,
            name,
            Support::Full,
            "empty: a filter sees no environment and no arguments",
            |mut c: Caller<'_, HostState>, count: i32, size: i32| -> i32 {
                errno(
                    memory::write_u32(&mut c, count, 0)
                        .and_then(|_| memory::write_u32(&mut c, size, 0)),
                )
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        reg.func(
            W,
            name,
            Support::Full,
            "empty",
            |_c: Caller<'_, HostState>, _a: i32, _b: i32| -> i32 { ESUCCESS },
        )?;
    }
    reg.func(
        W,
        "fd_prestat_get",
        Support::Full,
        "`EBADF`: no directory is preopened",
        |_c: Caller<'_, HostState>, _fd: i32, _ret: i32| -> i32 { EBADF },
    )?;
    reg.func(
        W,
        "sched_yield",
        Support::Full,
        "returns at once",
        |_c: Caller<'_, HostState>| -> i32 { ESUCCESS },
    )?;
    reg.func(
        W,
        "proc_exit",
        Support::Full,
        "ends the callback with a trap; the VM is replaced like any failed VM",
        |_c: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            wasmtime::bail!("filter called proc_exit({code})")
        },
    )?;
    Ok(())
}

fn monotonic_nanos() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}
