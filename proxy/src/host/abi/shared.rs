//! Shared key-value store and shared queues, process-wide as in Envoy:
//! `proxy_get/set_shared_data`, `proxy_register/resolve/enqueue/dequeue_shared_queue`.
//!
//! Bounded: a value at most [`MAX_VALUE_BYTES`], at most [`MAX_KEYS`] keys, a queue
//! at most [`MAX_QUEUE_ITEMS`] items.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::host::memory;
use crate::host::state::{HostState, QueueNotifier};

/// Largest shared value or queue item.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys in the shared store.
pub const MAX_KEYS: usize = 16_384;
/// Most items waiting in one queue.
pub const MAX_QUEUE_ITEMS: usize = 10_000;
/// Most queues.
pub const MAX_QUEUES: usize = 1024;

#[derive(Default)]
struct Shared {
    data: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    queue_ids: HashMap<(String, String), u32>,
    queues: Vec<VecDeque<Vec<u8>>>,
    /// Who to wake when a queue gets an item: the VM that registered it last.
    notifiers: HashMap<u32, QueueNotifier>,
}

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    static S: OnceLock<Mutex<Shared>> = OnceLock::new();
    let m = S.get_or_init(Default::default);
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_get_shared_data",
        Support::Full,
        "process-wide, with CAS",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let key = memory::read(&mut c, kp, kl)?;
                let (v, cas) = shared().data.get(&key).cloned().ok_or(Status::NotFound)?;
                memory::write_u32(&mut c, ret_cas, cas)?;
                memory::copy_out(&mut c, &v, ret_ptr, ret_len)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_set_shared_data",
        Support::Full,
        "process-wide; a non-zero CAS must match (`CAS_MISMATCH`)",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32,
         cas: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let key = memory::read(&mut c, kp, kl)?;
                let value = memory::read(&mut c, vp, vl)?;
                if value.len() > MAX_VALUE_BYTES || key.len() > MAX_VALUE_BYTES {
                    return Err(Status::BadArgument);
                }
                let mut s = shared();
                let n = s.data.len();
                match s.data.get_mut(&key) {
                    Some(slot) => {
                        if cas != 0 && cas as u32 != slot.1 {
                            return Err(Status::CasMismatch);
                        }
                        *slot = (value, slot.1.wrapping_add(1).max(1));
                    }
                    None if n >= MAX_KEYS => return Err(Status::BadArgument),
                    None => {
                        s.data.insert(key, (value, 1));
                    }
                }
                Ok(())
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_register_shared_queue",
        Support::Full,
        "a queue named in this plugin's VM id",
        |mut c: Caller<'_, HostState>, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            status((|| {
                let name = memory::read_str(&mut c, np, nl)?;
                let vm = c.data().plugin.vm_id.clone();
                let notifier = c.data().queue_notifier.clone();
                let id = {
                    let mut s = shared();
                    let id = match s.queue_ids.get(&(vm.clone(), name.clone())) {
                        Some(id) => *id,
                        None if s.queues.len() >= MAX_QUEUES => return Err(Status::BadArgument),
                        None => {
                            s.queues.push(VecDeque::new());
                            let id = s.queues.len() as u32;
                            s.queue_ids.insert((vm, name), id);
                            id
                        }
                    };
                    if let Some(n) = notifier {
                        s.notifiers.insert(id, n);
                    }
                    id
                };
                memory::write_u32(&mut c, ret, id)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_resolve_shared_queue",
        Support::Full,
        "finds a queue by VM id and name",
        |mut c: Caller<'_, HostState>,
         vp: i32,
         vl: i32,
         np: i32,
         nl: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let vm = memory::read_str(&mut c, vp, vl)?;
                let name = memory::read_str(&mut c, np, nl)?;
                let id = *shared()
                    .queue_ids
                    .get(&(vm, name))
                    .ok_or(Status::NotFound)?;
                memory::write_u32(&mut c, ret, id)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_enqueue_shared_queue",
        Support::Full,
        "bounded queue",
        |mut c: Caller<'_, HostState>, id: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            status((|| {
                let value = memory::read(&mut c, vp, vl)?;
                if value.len() > MAX_VALUE_BYTES {
                    return Err(Status::BadArgument);
                }
                let mut s = shared();
                let q = (id as u32)
                    .checked_sub(1)
                    .and_then(|i| s.queues.get_mut(i as usize))
                    .ok_or(Status::NotFound)?;
                if q.len() >= MAX_QUEUE_ITEMS {
                    return Err(Status::BadArgument);
                }
                q.push_back(value);
                let notify = s.notifiers.get(&(id as u32)).cloned();
                drop(s);
                if let Some(n) = notify {
                    n(id as u32);
                }
                Ok(())
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_dequeue_shared_queue",
        Support::Full,
        "`EMPTY` when nothing waits",
        |mut c: Caller<'_, HostState>,
         id: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let item = {
                    let mut s = shared();
                    let q = (id as u32)
                        .checked_sub(1)
                        .and_then(|i| s.queues.get_mut(i as usize))
                        .ok_or(Status::NotFound)?;
                    q.pop_front().ok_or(Status::Empty)?
                };
                memory::copy_out(&mut c, &item, ret_ptr, ret_len)
            })())
        },
    )?;
    Ok(())
}
