//! Shared key-value store and shared queues, process-wide and scoped per `vm_id` as in
//! Envoy: `proxy_get/set_shared_data`, `proxy_register/resolve/enqueue/dequeue_shared_queue`.
//!
//! A key belongs to the `vm_id` of the filter that reads or writes it: filters with
//! different `vm_id`s never see each other's keys, filters sharing a `vm_id` share them.
//! Queues are registered under the registering filter's `vm_id` and resolved by
//! (`vm_id`, name). The bytes of a key (name and value) are charged to the filter that
//! wrote it last, up to its `shared_data_max_bytes`; a swap that drops a `vm_id` frees
//! its keys and queues ([`retain_vm_ids`]).
//!
//! Bounded: a value at most [`MAX_VALUE_BYTES`], at most [`MAX_KEYS`] keys, a queue
//! at most [`MAX_QUEUE_ITEMS`] items, at most [`MAX_QUEUES`] queues.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::memory;
use crate::state::{HostState, QueueNotifier};

/// Largest shared value or queue item.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys in the shared store.
pub const MAX_KEYS: usize = 16_384;
/// Most items waiting in one queue.
pub const MAX_QUEUE_ITEMS: usize = 10_000;
/// Most queues.
pub const MAX_QUEUES: usize = 1024;

/// One shared value.
struct Entry {
    value: Vec<u8>,
    cas: u32,
    /// The filter (plugin name) its bytes are charged to: the last writer.
    owner: String,
}

impl Entry {
    fn cost(&self, key: &[u8]) -> usize {
        key.len() + self.value.len()
    }
}

/// One queue: its place (vm_id, name) and its items.
struct Queue {
    vm_id: String,
    items: VecDeque<Vec<u8>>,
}

#[derive(Default)]
struct Shared {
    /// (vm_id, key) -> value.
    data: HashMap<(String, Vec<u8>), Entry>,
    /// Bytes charged to each filter.
    charged: HashMap<String, usize>,
    queue_ids: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    /// Last queue id handed out (ids are never reused).
    last_queue_id: u32,
    /// Who to wake when a queue gets an item: the VM that registered it last.
    notifiers: HashMap<u32, QueueNotifier>,
}

impl Shared {
    fn charge(&mut self, owner: &str, delta: isize) {
        let c = self.charged.entry(owner.to_string()).or_insert(0);
        *c = c.saturating_add_signed(delta);
        if *c == 0 {
            self.charged.remove(owner);
        }
    }
}

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    static S: OnceLock<Mutex<Shared>> = OnceLock::new();
    let m = S.get_or_init(Default::default);
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Frees the keys and queues of every `vm_id` not in `keep` (called after a swap with
/// the `vm_id`s of the published policy; the others' data is gone with their filters).
pub fn retain_vm_ids(keep: &HashSet<String>) {
    let mut s = shared();
    let dropped: Vec<(String, Vec<u8>)> = s
        .data
        .keys()
        .filter(|(vm, _)| !keep.contains(vm))
        .cloned()
        .collect();
    for k in dropped {
        if let Some(e) = s.data.remove(&k) {
            let cost = e.cost(&k.1);
            s.charge(&e.owner, -(cost as isize));
        }
    }
    let gone: Vec<u32> = s
        .queues
        .iter()
        .filter(|(_, q)| !keep.contains(&q.vm_id))
        .map(|(id, _)| *id)
        .collect();
    for id in gone {
        s.queues.remove(&id);
        s.notifiers.remove(&id);
    }
    s.queue_ids.retain(|(vm, _), _| keep.contains(vm));
}

/// Bytes of shared data charged to filter `plugin` now.
pub fn charged_bytes(plugin: &str) -> usize {
    shared().charged.get(plugin).copied().unwrap_or(0)
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_get_shared_data",
        Support::Full,
        "the keys of this filter's `vm_id`, with CAS; an empty value comes back as null",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let key = memory::read(&mut c, kp, kl)?;
                let vm = c.data().plugin.vm_id.clone();
                let (v, cas) = shared()
                    .data
                    .get(&(vm, key))
                    .map(|e| (e.value.clone(), e.cas))
                    .ok_or(Status::NotFound)?;
                memory::write_u32(&mut c, ret_cas, cas)?;
                memory::copy_out(&mut c, &v, ret_ptr, ret_len)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_set_shared_data",
        Support::Full,
        "the keys of this filter's `vm_id`; a non-zero CAS must match, and a write beyond the filter's `shared_data_max_bytes` answers `CAS_MISMATCH` too (the one failure SDKs handle)",
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
                let me = c.data().plugin.name.clone();
                let quota = c.data().shared_data_max_bytes;
                let slot = (c.data().plugin.vm_id.clone(), key);
                let cost = slot.1.len() + value.len();
                let mut s = shared();
                let n = s.data.len();
                let (old_cas, refund) = match s.data.get(&slot) {
                    Some(e) => {
                        if cas != 0 && cas as u32 != e.cas {
                            return Err(Status::CasMismatch);
                        }
                        (e.cas, Some((e.owner.clone(), e.cost(&slot.1))))
                    }
                    None if n >= MAX_KEYS => return Err(Status::BadArgument),
                    None => (0, None),
                };
                let mine = s.charged.get(&me).copied().unwrap_or(0);
                let mine_after = match &refund {
                    Some((owner, old)) if *owner == me => mine - old + cost,
                    _ => mine + cost,
                };
                if mine_after > quota {
                    tracing::debug!(filter = %me, bytes = mine_after, quota, "shared data over the filter's shared_data_max_bytes; the write is refused");
                    return Err(Status::CasMismatch);
                }
                if let Some((owner, old)) = refund {
                    s.charge(&owner, -(old as isize));
                }
                s.charge(&me, cost as isize);
                s.data.insert(
                    slot,
                    Entry {
                        value,
                        cas: old_cas.wrapping_add(1).max(1),
                        owner: me,
                    },
                );
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
                            s.last_queue_id = s.last_queue_id.wrapping_add(1).max(1);
                            let id = s.last_queue_id;
                            s.queues.insert(
                                id,
                                Queue {
                                    vm_id: vm.clone(),
                                    items: VecDeque::new(),
                                },
                            );
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
                let q = s.queues.get_mut(&(id as u32)).ok_or(Status::NotFound)?;
                if q.items.len() >= MAX_QUEUE_ITEMS {
                    return Err(Status::BadArgument);
                }
                q.items.push_back(value);
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
                    let q = s.queues.get_mut(&(id as u32)).ok_or(Status::NotFound)?;
                    q.items.pop_front().ok_or(Status::Empty)?
                };
                memory::copy_out(&mut c, &item, ret_ptr, ret_len)
            })())
        },
    )?;
    Ok(())
}
