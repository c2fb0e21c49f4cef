//! A filter of a policy: its compiled module, configuration and limits, and its VMs,
//! one per worker thread, built off the request path.
//!
//! - `threads`: a thread's VMs (serving, spare) and requests paused on them.
//! - `prepare`: starting the VMs on every worker before a policy serves.
//! - `root`: root-context callbacks, the calls they dispatch, ticks and queues.
//! - `failures`: failure counts, hooks and the crash-loop guard's say.

mod failures;
mod prepare;
mod root;
mod threads;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thread_local::ThreadLocal;

use crate::callout::Callouts;
use crate::generations::lock_generations;
use crate::guard::{CrashGuard, GuardLimits};
use crate::{CompiledModule, Engine, HostError, Limits, PluginInfo, Vm};

pub use failures::{
    FailureCounts, GuardEvent, CRASH_COOLDOWN, CRASH_LIMIT, CRASH_WINDOW, FAILURE_HOOK, GUARD_HOOK,
};
pub use root::RootCallback;
use threads::ThreadVms;

/// A filter of a policy: a compiled module with its configuration, and its VMs, one
/// per thread that used it. Dropping the plugin (with its snapshot) drops its VMs and
/// ends their tick loops.
///
/// Worker threads never start a VM: builds run on the runtime's blocking pool
/// ([`Plugin::ready`] waits for one without holding the thread), so a filter whose
/// start-up is slow, or that an attacker makes fail on purpose, cannot stall the other
/// requests of its thread. With [`Limits::spare_vm`] each thread keeps a started VM in
/// reserve: a failed VM is replaced at once and the failure costs the failing request
/// only. The [`CrashGuard`] counts failures and the time their rebuilds take.
pub struct Plugin {
    /// Name, ids and configuration.
    pub info: Arc<PluginInfo>,
    /// The compiled module.
    pub module: Arc<CompiledModule>,
    /// Resource limits.
    pub limits: Limits,
    engine: Engine,
    callouts: Option<Arc<dyn Callouts>>,
    vms: ThreadLocal<ThreadVms>,
    /// The VM that validated the plugin, handed to the first thread that needs one.
    canary: Mutex<Option<Vm>>,
    incarnations: AtomicU64,
    vm_alive: AtomicI64,
    /// The plugin's snapshot was swapped out: no more ticks, queue wake-ups or builds.
    retired: AtomicBool,
    vm_memory: AtomicI64,
    /// Failures of this plugin's VMs, by kind.
    pub failures: FailureCounts,
    /// The crash-loop guard.
    pub guard: CrashGuard,
}

/// Why a VM is being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// A thread's first VM, or a spare kept in reserve.
    Fresh,
    /// The replacement of a failed VM: counted by the crash-loop guard.
    AfterFailure,
}

impl Plugin {
    /// Validates the plugin with a canary VM (instantiation, `proxy_on_vm_start`,
    /// `proxy_on_configure`); the canary then serves the first thread that needs a VM.
    pub fn new(
        engine: &Engine,
        module: Arc<CompiledModule>,
        info: PluginInfo,
        limits: Limits,
        callouts: Option<Arc<dyn Callouts>>,
    ) -> Result<Arc<Plugin>, HostError> {
        let info = Arc::new(info);
        let canary = Vm::start(
            engine,
            &module,
            info.clone(),
            limits,
            callouts.clone(),
            None,
        )?;
        let plugin = Plugin {
            info,
            module,
            limits,
            engine: engine.clone(),
            callouts,
            vms: ThreadLocal::new(),
            vm_alive: AtomicI64::new(0),
            retired: AtomicBool::new(false),
            vm_memory: AtomicI64::new(canary.memory_bytes() as i64),
            canary: Mutex::new(Some(canary)),
            incarnations: AtomicU64::new(0),
            failures: FailureCounts::default(),
            guard: CrashGuard::new(GuardLimits {
                window: CRASH_WINDOW,
                max_failures: CRASH_LIMIT,
                rebuild_budget: limits.rebuild_budget,
                cooldown: CRASH_COOLDOWN,
            }),
        };
        plugin.count_vms(1);
        Ok(Arc::new(plugin))
    }

    /// Drops a VM that will not serve, with its accounting.
    fn forget(&self, vm: Vm) {
        self.count_vms(-1);
        self.vm_memory
            .fetch_sub(vm.memory_bytes() as i64, Ordering::Relaxed);
    }

    /// The plugin's snapshot no longer serves new requests: its VMs stop ticking and
    /// being woken for queues, no VM is built for it any more, and its VMs go when the
    /// last request holding the snapshot ends (with the plugin).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// True once [`Plugin::retire`] was called.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Counts VMs started (`delta > 0`) or dropped, for the plugin and its generation.
    fn count_vms(&self, delta: i64) {
        self.vm_alive.fetch_add(delta, Ordering::Relaxed);
        *lock_generations().entry(self.info.generation).or_default() += delta;
    }

    /// VMs of this plugin alive now, on all threads (spares included).
    pub fn vm_count(&self) -> i64 {
        self.vm_alive.load(Ordering::Relaxed)
    }

    /// Linear memory of this plugin's VMs, bytes.
    pub fn vm_memory_bytes(&self) -> i64 {
        self.vm_memory.load(Ordering::Relaxed)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // The VMs go with the plugin (its thread slots drop after this).
        *lock_generations().entry(self.info.generation).or_default() -=
            self.vm_alive.load(Ordering::Relaxed);
    }
}
