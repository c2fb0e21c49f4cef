//! Starting a VM: instantiation, the guest's exports, `_initialize`, the root context,
//! `proxy_on_vm_start` and `proxy_on_configure`, all under the start-up deadline.

use std::sync::Arc;

use wasmtime::{Store, StoreLimitsBuilder};

use super::{Exports, Limits, Vm, ROOT_CONTEXT_ID};
use crate::callout::Callouts;
use crate::engine::{CompiledModule, Engine, EPOCH_TICK};
use crate::state::{HostState, PluginInfo, QueueNotifier};
use crate::HostError;

impl Vm {
    /// Instantiates `module`, runs `_initialize`, creates the root context and runs
    /// `proxy_on_vm_start` and `proxy_on_configure`; either answering false fails.
    pub fn start(
        engine: &Engine,
        module: &CompiledModule,
        plugin: Arc<PluginInfo>,
        limits: Limits,
        callouts: Option<Arc<dyn Callouts>>,
        queue_notifier: Option<QueueNotifier>,
    ) -> Result<Vm, HostError> {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(1)
            .tables(8)
            .memories(1)
            .table_elements(limits.table_elements)
            .build();
        let mut state = HostState::new(plugin.clone(), store_limits);
        state.callouts = callouts;
        state.properties = engine.properties.clone();
        state.queue_notifier = queue_notifier;
        state.shared_data_max_bytes = limits.shared_data_bytes;
        let mut store = Store::new(&engine.engine, state);
        store.limiter(|s| &mut s.limits);
        let deadline_ticks =
            (limits.callback_deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        // Instantiation and start-up have their own deadline (a WAF compiling rules).
        let startup = (limits.startup_deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(startup);
        // A module's start function is guest code too.
        let running = crate::ticker::enter();
        let instance = module.pre.instantiate(&mut store);
        drop(running);
        let instance = instance.map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .map_err(|e| HostError::NotProxyWasm(format!("allocator: {e:#}")))?;
        store.data_mut().memory = memory;
        store.data_mut().instance = Some(instance);
        store.data_mut().alloc = Some(Arc::new(alloc));
        macro_rules! opt {
            ($name:literal) => {
                instance.get_typed_func(&mut store, $name).ok()
            };
        }
        let f = Exports {
            context_create: instance
                .get_typed_func(&mut store, "proxy_on_context_create")
                .map_err(|e| HostError::NotProxyWasm(format!("proxy_on_context_create: {e:#}")))?,
            vm_start: opt!("proxy_on_vm_start"),
            configure: opt!("proxy_on_configure"),
            request_headers: opt!("proxy_on_request_headers"),
            request_body: opt!("proxy_on_request_body"),
            request_trailers: opt!("proxy_on_request_trailers"),
            response_headers: opt!("proxy_on_response_headers"),
            response_body: opt!("proxy_on_response_body"),
            response_trailers: opt!("proxy_on_response_trailers"),
            log: opt!("proxy_on_log"),
            tick: opt!("proxy_on_tick"),
            queue_ready: opt!("proxy_on_queue_ready"),
            http_call_response: opt!("proxy_on_http_call_response"),
            foreign_function: opt!("proxy_on_foreign_function"),
            done: opt!("proxy_on_done"),
            delete: opt!("proxy_on_delete"),
        };
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .ok();
        let mut vm = Vm {
            store,
            f,
            next_context_id: ROOT_CONTEXT_ID + 1,
            failed: false,
            deadline_ticks,
            accounted_memory: 0,
        };
        if let Some(init) = init {
            vm.call(startup, |_, s| init.call(s, ()))?;
        }
        vm.store.data_mut().root_context_id = ROOT_CONTEXT_ID;
        vm.store.data_mut().context_id = ROOT_CONTEXT_ID;
        vm.call(startup, |f, s| {
            f.context_create.call(s, (ROOT_CONTEXT_ID as i32, 0))
        })?;
        if vm.f.vm_start.is_some() {
            let n = plugin.vm_config.len() as i32;
            let ok = vm.call(startup, |f, s| match &f.vm_start {
                Some(start) => start.call(s, (ROOT_CONTEXT_ID as i32, n)),
                None => Ok(1),
            })?;
            if ok == 0 {
                return Err(HostError::VmStartFailed);
            }
        }
        if vm.f.configure.is_some() {
            let n = plugin.plugin_config.len() as i32;
            let ok = vm.call(startup, |f, s| match &f.configure {
                Some(configure) => configure.call(s, (ROOT_CONTEXT_ID as i32, n)),
                None => Ok(1),
            })?;
            if ok == 0 {
                return Err(HostError::ConfigureFailed);
            }
        }
        // The memory the VM starts with is counted by whoever takes it in service.
        vm.store.data_mut().limits.memory_grew = false;
        vm.accounted_memory = vm.memory_bytes();
        Ok(vm)
    }
}
