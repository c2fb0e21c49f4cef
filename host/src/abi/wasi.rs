//! The WASI preview1 calls the Proxy-Wasm spec lists, for modules built for
//! `wasm32-wasip1`: `fd_write` (stdout/stderr become log lines), clocks, `random_get`,
//! an empty environment and argument list, `proc_exit`; and the other calls language
//! runtimes make at start-up or on a panic (Go's `GOOS=wasip1` runtime sleeps with
//! `poll_oneoff`, asks `fd_fdstat_get`, closes and seeks), answered as the reference
//! host (proxy-wasm-cpp-host) answers them. No file descriptor beyond stdout and stderr
//! exists and no directory is preopened: a filter reaches neither the filesystem nor
//! the network. Other WASI imports link as `ENOSYS` stubs (see `engine.rs`).

use wasmtime::Caller;
use wasmtime::Result;

use super::{log::emit, log::now_nanos, Registry, Support};
use crate::memory;
use crate::state::HostState;

const W: &str = "wasi_snapshot_preview1";
/// WASI errno values used here.
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
/// `__WASI_RIGHTS_FD_WRITE`.
const RIGHTS_FD_WRITE: u64 = 64;
/// Size of a wasip1 `subscription` and of an `event`.
const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;
/// Most subscriptions one `poll_oneoff` may pass.
const MAX_SUBSCRIPTIONS: u32 = 4096;
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
    others(reg)?;
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

/// True for the two descriptors that exist: stdout and stderr.
fn is_stdio(fd: i32) -> bool {
    fd == 1 || fd == 2
}

/// The calls beyond the spec's list that language runtimes make.
fn others(reg: &mut Registry) -> Result<()> {
    reg.func(
        W,
        "poll_oneoff",
        Support::Full,
        "returns at once: clock subscriptions are reported as elapsed, others as `EBADF` events (no sleep blocks a worker)",
        |mut c: Caller<'_, HostState>, sin: i32, sout: i32, n: i32, ret: i32| -> i32 {
            if n as u32 > MAX_SUBSCRIPTIONS {
                return EINVAL;
            }
            errno((|| {
                let subs = memory::read(&mut c, sin, n.wrapping_mul(SUBSCRIPTION_BYTES as i32))?;
                let mut events = Vec::with_capacity(subs.len() / SUBSCRIPTION_BYTES * EVENT_BYTES);
                for sub in subs.chunks_exact(SUBSCRIPTION_BYTES) {
                    let mut ev = [0u8; EVENT_BYTES];
                    ev[0..8].copy_from_slice(&sub[0..8]); // userdata
                    let tag = sub[8];
                    let error: u16 = if tag == 0 { 0 } else { EBADF as u16 };
                    ev[8..10].copy_from_slice(&error.to_le_bytes());
                    ev[10] = tag;
                    events.extend_from_slice(&ev);
                }
                memory::write(&mut c, sout, &events)?;
                memory::write_u32(&mut c, ret, n as u32)
            })())
        },
    )?;
    reg.func(
        W,
        "fd_fdstat_get",
        Support::Full,
        "stdout and stderr: write rights only; other fds answer `EBADF`",
        |mut c: Caller<'_, HostState>, fd: i32, ret: i32| -> i32 {
            if !is_stdio(fd) {
                return EBADF;
            }
            let mut stat = [0u8; 24];
            stat[8..16].copy_from_slice(&RIGHTS_FD_WRITE.to_le_bytes());
            errno(memory::write(&mut c, ret, &stat))
        },
    )?;
    reg.func(
        W,
        "fd_fdstat_set_flags",
        Support::Full,
        "`ENOSYS`: no flag means anything for stdout and stderr",
        |_c: Caller<'_, HostState>, _fd: i32, _flags: i32| -> i32 { ENOSYS },
    )?;
    reg.func(
        W,
        "fd_prestat_dir_name",
        Support::Full,
        "`ENOSYS`: no directory is preopened",
        |_c: Caller<'_, HostState>, _fd: i32, _p: i32, _l: i32| -> i32 { ENOSYS },
    )?;
    reg.func(
        W,
        "fd_filestat_get",
        Support::Full,
        "`EBADF`: no file exists",
        |_c: Caller<'_, HostState>, _fd: i32, _ret: i32| -> i32 { EBADF },
    )?;
    reg.func(
        W,
        "fd_read",
        Support::Full,
        "`ENOSYS`: nothing can be read",
        |_c: Caller<'_, HostState>, _fd: i32, _iovs: i32, _n: i32, _ret: i32| -> i32 { ENOSYS },
    )?;
    reg.func(
        W,
        "fd_close",
        Support::Full,
        "succeeds and does nothing (stdout and stderr stay open)",
        |_c: Caller<'_, HostState>, _fd: i32| -> i32 { ESUCCESS },
    )?;
    reg.func(
        W,
        "fd_seek",
        Support::Full,
        "succeeds and does nothing",
        |_c: Caller<'_, HostState>, _fd: i32, _off: i64, _whence: i32, _ret: i32| -> i32 {
            ESUCCESS
        },
    )?;
    reg.func(
        W,
        "fd_tell",
        Support::Full,
        "offset 0 on stdout and stderr; other fds answer `EBADF`",
        |mut c: Caller<'_, HostState>, fd: i32, ret: i32| -> i32 {
            if !is_stdio(fd) {
                return EBADF;
            }
            errno(memory::write_u64(&mut c, ret, 0))
        },
    )?;
    for name in ["fd_sync", "fd_datasync"] {
        reg.func(
            W,
            name,
            Support::Full,
            "succeeds on stdout and stderr; other fds answer `EBADF`",
            |_c: Caller<'_, HostState>, fd: i32| -> i32 {
                if is_stdio(fd) {
                    ESUCCESS
                } else {
                    EBADF
                }
            },
        )?;
    }
    reg.func(
        W,
        "path_open",
        Support::Full,
        "`ENOENT`: no file exists",
        |_c: Caller<'_, HostState>,
         _fd: i32,
         _dirflags: i32,
         _p: i32,
         _l: i32,
         _oflags: i32,
         _base: i64,
         _inheriting: i64,
         _fdflags: i32,
         _ret: i32|
         -> i32 { ENOENT },
    )?;
    reg.func(
        W,
        "path_filestat_get",
        Support::Full,
        "`ENOTSUP`: no file exists",
        |_c: Caller<'_, HostState>, _fd: i32, _flags: i32, _p: i32, _l: i32, _ret: i32| -> i32 {
            ENOTSUP
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
