//! The Proxy-Wasm host on wasmtime. It knows nothing of Pingora: the proxy hands it a
//! [`StreamState`] per request and gets [`Action`]s back.
//!
//! - [`engine`]: the shared wasmtime engine, linker, epoch ticker, module compilation.
//! - [`disk_cache`]: trust checks of the on-disk module cache (owner, mode).
//! - [`vm`]: one plugin instance with its root and stream contexts.
//! - [`abi`]: the hostcall table, one file per area of the spec.
//! - [`matchers`]: host-side regex and phrase sets offered as foreign functions.
//! - [`memory`]: bounds-checked guest memory access and the pairs codec.
//! - [`stream`]: the per-request data filters see.
//!
//! One VM per plugin per worker thread ([`Plugin::with_vm`]), as Envoy does: a heavy
//! `proxy_on_configure` runs once per thread per policy, not per request.

pub mod abi;
pub mod callout;
pub mod disk_cache;
pub mod engine;
pub mod guard;
pub mod matchers;
pub mod memory;
pub mod spare;
pub mod state;
pub mod static_properties;
pub mod stream;
pub mod vm;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

use callout::Callouts;
use guard::{CrashGuard, GuardLimits};
use spare::SpareSlot;
use state::QueueNotifier;

pub use callout::{CallResult, HttpCallRequest, HttpCallResponse};
pub use engine::{CompiledModule, Engine};
pub use state::{PluginFile, PluginInfo};
pub use static_properties::StaticProperties;
pub use stream::{BodyKind, HeaderMap, LocalResponse, RequestInfo, StreamState};
pub use vm::{Action, Limits, Vm};

/// Why a module, a VM or a callback failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The engine could not be created.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The module is not valid WebAssembly or could not be compiled.
    #[error("compile error: {0}")]
    Compile(String),
    /// The module is not a Proxy-Wasm 0.2.x module.
    #[error("not a Proxy-Wasm 0.2.0/0.2.1 module: {0}")]
    NotProxyWasm(String),
    /// Instantiation failed (start function trapped, limits...).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// `proxy_on_vm_start` answered false.
    #[error("proxy_on_vm_start returned false")]
    VmStartFailed,
    /// `proxy_on_configure` answered false (the plugin rejected its configuration).
    #[error("proxy_on_configure returned false (the filter rejected its configuration)")]
    ConfigureFailed,
    /// A callback trapped.
    #[error("filter {plugin} trapped: {message}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// Trap message.
        message: String,
    },
    /// A callback ran past its CPU deadline.
    #[error("filter {plugin} exceeded its CPU deadline")]
    Deadline {
        /// Plugin name.
        plugin: String,
    },
    /// The VM hit its linear-memory cap.
    #[error("filter {plugin} hit its memory limit")]
    MemoryLimit {
        /// Plugin name.
        plugin: String,
    },
    /// The plugin's VMs keep failing: no new VM is started for a while.
    #[error("filter {plugin} is crash-looping; its VMs are not restarted for {cooldown_s} s")]
    CrashLoop {
        /// Plugin name.
        plugin: String,
        /// Seconds before a new VM is tried.
        cooldown_s: u64,
    },
    /// The stream's context lived in a VM that has since been replaced.
    #[error("the filter's VM was replaced during this request")]
    ContextLost,
    /// The VM failed earlier and cannot run callbacks.
    #[error("the VM failed earlier")]
    VmFailed,
    /// This thread's VM is being started off the request path (see [`Plugin::ready`]).
    #[error("the filter's VM is starting")]
    VmStarting,
}

impl HostError {
    fn from_trap(e: wasmtime::Error, plugin: &str) -> HostError {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => HostError::Deadline {
                plugin: plugin.to_string(),
            },
            _ => HostError::Trap {
                plugin: plugin.to_string(),
                message: format!("{e:#}"),
            },
        }
    }
}

/// Called on every filter failure with the plugin name and the kind (`trap`,
/// `deadline`, `memory`, `crash_loop`): how the proxy counts them in its metrics.
pub static FAILURE_HOOK: std::sync::OnceLock<fn(&str, &str)> = std::sync::OnceLock::new();

/// What the crash-loop guard of a plugin saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuardEvent {
    /// A VM was rebuilt after a failure, taking this long (on a blocking thread).
    Rebuilt(Duration),
    /// The guard tripped: no VM is rebuilt during its cooldown.
    Tripped,
}

/// Called with the plugin name on every [`GuardEvent`]: how the proxy counts them.
pub static GUARD_HOOK: std::sync::OnceLock<fn(&str, GuardEvent)> = std::sync::OnceLock::new();

/// A callback run on a plugin's root context.
pub type RootCallback = Box<dyn FnOnce(&mut Vm) -> Result<(), HostError>>;

/// One worker thread's VMs of a plugin: the one serving, and the slot a VM built off
/// the request path arrives in (the warm spare, or the replacement of a failed VM).
#[derive(Default)]
struct ThreadVms {
    current: RefCell<Option<(Vm, u64)>>,
    spare: Arc<SpareSlot>,
    /// The thread's last VM failed and none has replaced it yet.
    lost: Cell<bool>,
    /// Requests waiting for a paused stream context of the VM to be resumed.
    waiters: RefCell<std::collections::HashMap<u32, tokio::sync::oneshot::Sender<()>>>,
}

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

/// Failures of one plugin's VMs, by kind, since the plugin started.
#[derive(Debug, Default)]
pub struct FailureCounts {
    /// Traps (panics, `unreachable`, out-of-bounds, hostcall misuse).
    pub traps: AtomicU64,
    /// Callbacks stopped at their CPU deadline.
    pub deadlines: AtomicU64,
    /// Memory-cap hits.
    pub memory: AtomicU64,
    /// VMs replaced after a failure.
    pub replaced: AtomicU64,
    /// Requests refused a VM while the plugin was crash-looping.
    pub crash_loop: AtomicU64,
    /// Times the crash-loop guard tripped.
    pub guard_trips: AtomicU64,
    /// VMs rebuilt after a failure.
    pub rebuilds: AtomicU64,
    /// Microseconds spent rebuilding VMs after failures (on blocking threads).
    pub rebuild_us: AtomicU64,
}

/// More VM failures than this within [`CRASH_WINDOW`] pause rebuilds for [`CRASH_COOLDOWN`].
pub const CRASH_LIMIT: usize = 50;
/// Window of the crash-loop detector.
pub const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// How long a crash-looping plugin gets no new VM.
pub const CRASH_COOLDOWN: Duration = Duration::from_secs(5);

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

    /// Starts this plugin's VMs on every worker thread in `workers` (one each, and its
    /// spare with [`Limits::spare_vm`]) and waits until each thread has them in
    /// service, ticking: a request that comes later pays no start-up. The VMs are
    /// built on threads of this call (in parallel, at most one per core), never on a
    /// worker thread; the canary is one of them. Blocking. A thread that does not
    /// answer within `wait`, or a VM that fails to start, leaves that thread to start
    /// its VM at its first request as before. Answers how many threads got a VM.
    pub fn prepare(self: &Arc<Self>, workers: &[tokio::runtime::Handle], wait: Duration) -> usize {
        if workers.is_empty() {
            return 0;
        }
        let per_worker = if self.limits.spare_vm { 2 } else { 1 };
        let n = workers.len() * per_worker;
        let mut slots: Vec<Option<Vm>> = (0..n).map(|_| None).collect();
        slots[0] = self.canary.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Each VM is built knowing the worker that will wake it for its queues: a
        // queue registered in `proxy_on_configure` keeps the registrant's notifier.
        let jobs = (0..n)
            .filter(|k| slots[*k].is_none())
            .map(|k| (k, self.queue_notifier_on(&workers[k / per_worker])))
            .collect();
        for (k, vm) in self.build_many(jobs) {
            slots[k] = Some(vm);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut sent = 0;
        let mut slots = slots.into_iter();
        for handle in workers {
            let vm = slots.next().flatten();
            let spare = if per_worker == 2 {
                slots.next().flatten()
            } else {
                None
            };
            let (vm, spare) = match (vm, spare) {
                (Some(vm), spare) => (vm, spare),
                (None, Some(spare)) => (spare, None),
                (None, None) => continue,
            };
            let (plugin, tx) = (self.clone(), tx.clone());
            handle.spawn(async move {
                plugin.install(vm, spare);
                let _ = tx.send(());
            });
            sent += 1;
        }
        drop(tx);
        let deadline = Instant::now() + wait;
        let mut ready = 0;
        while ready < sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                tracing::warn!(plugin = %self.info.name, ready, sent, "worker threads did not take their VMs in time");
                break;
            }
            ready += 1;
        }
        ready
    }

    /// Builds one VM per job (its slot and queue notifier) on up to one thread per
    /// core; the ones that fail are logged.
    fn build_many(self: &Arc<Self>, jobs: Vec<(usize, Option<QueueNotifier>)>) -> Vec<(usize, Vm)> {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let n = jobs.len();
        let jobs = Mutex::new(jobs);
        let out = Mutex::new(Vec::with_capacity(n));
        std::thread::scope(|scope| {
            for _ in 0..n.min(cores) {
                scope.spawn(|| {
                    while let Some((k, notifier)) =
                        jobs.lock().unwrap_or_else(|e| e.into_inner()).pop()
                    {
                        let started = Instant::now();
                        let vm = Vm::start(
                            &self.engine,
                            &self.module,
                            self.info.clone(),
                            self.limits,
                            self.callouts.clone(),
                            notifier,
                        );
                        self.built(Build::Fresh, started.elapsed(), &vm);
                        match vm {
                            Ok(vm) => out.lock().unwrap_or_else(|e| e.into_inner()).push((k, vm)),
                            Err(e) => {
                                tracing::error!(plugin = %self.info.name, error = %e, "a VM failed to start; its thread starts one at its first request")
                            }
                        }
                    }
                });
            }
        });
        out.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// On a worker thread: puts `vm` in service (and `spare` in reserve) unless the
    /// thread has its own already, then runs its start-up calls and its tick loop.
    fn install(self: &Arc<Self>, mut vm: Vm, spare: Option<Vm>) {
        let tv = self.vms.get_or_default();
        let inc = {
            let Ok(mut slot) = tv.current.try_borrow_mut() else {
                self.forget(vm);
                return;
            };
            if slot.is_some() {
                drop(slot);
                self.forget(vm);
                if let Some(s) = spare {
                    self.forget(s);
                }
                return;
            }
            vm.set_queue_notifier(self.queue_notifier());
            let inc = self.incarnations.fetch_add(1, Ordering::Relaxed);
            *slot = Some((vm, inc));
            inc
        };
        if let Some(mut s) = spare {
            if tv.spare.has_vm() || !tv.spare.claim_build() {
                self.forget(s);
            } else {
                s.set_queue_notifier(self.queue_notifier());
                tv.spare.put(Ok(s));
            }
        }
        tracing::debug!(plugin = %self.info.name, incarnation = inc, "VM in service (prepared)");
        self.after_start(inc);
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

    /// Waits until this thread has a VM for the plugin, without holding the thread:
    /// the VM is built on the blocking pool meanwhile. Call it before a request's first
    /// callback; [`Plugin::with_vm`] then finds the VM ready.
    pub async fn ready(self: &Arc<Self>) -> Result<(), HostError> {
        loop {
            let spare = {
                // No reference to the thread's state lives across the await below.
                let tv = self.vms.get_or_default();
                let serving = tv
                    .current
                    .try_borrow()
                    .is_ok_and(|c| c.as_ref().is_some_and(|(vm, _)| !vm.failed()));
                if serving {
                    return Ok(());
                }
                tv.spare.clone()
            };
            let notified = spare.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.with_vm(|_, _| ()) {
                Ok(()) => return Ok(()),
                Err(HostError::VmStarting) => {
                    // Woken when the build ends; the timer only guards against a
                    // request that moved threads while it waited.
                    let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `f` with this thread's VM. A failed VM is dropped and replaced by the spare
    /// when one is ready; otherwise a new VM is built off the thread and this call
    /// answers [`HostError::VmStarting`] (outside a Tokio runtime the VM is started
    /// here). `f` also gets the VM's incarnation: a stream context created in one
    /// incarnation does not exist in the next.
    pub fn with_vm<R>(self: &Arc<Self>, f: impl FnOnce(&mut Vm, u64) -> R) -> Result<R, HostError> {
        let tv = self.vms.get_or_default();
        let (r, started) = {
            let mut slot = tv
                .current
                .try_borrow_mut()
                .map_err(|_| HostError::VmFailed)?;
            let mut started = None;
            if slot.as_ref().is_some_and(|(vm, _)| vm.failed()) {
                tv.lost.set(true);
                if let Some((old, _)) = slot.take() {
                    self.replace_failed(old);
                }
                self.failures.replaced.fetch_add(1, Ordering::Relaxed);
                if self.guard.failed() {
                    self.tripped();
                }
            }
            if slot.is_none() {
                let build = if tv.lost.get() {
                    Build::AfterFailure
                } else {
                    Build::Fresh
                };
                let vm = self.next_vm(tv, build)?;
                tv.lost.set(false);
                let inc = self.incarnations.fetch_add(1, Ordering::Relaxed);
                *slot = Some((vm, inc));
                started = Some(inc);
                if self.limits.spare_vm {
                    // Best effort: a refused or failed spare build is retried later.
                    let _ = self.build_spare(tv, build);
                }
            }
            let (vm, inc) = slot.as_mut().expect("VM present");
            let before = vm.memory_bytes();
            let r = f(vm, *inc);
            let after = vm.memory_bytes();
            if after != before {
                self.vm_memory
                    .fetch_add(after as i64 - before as i64, Ordering::Relaxed);
            }
            for ctx in vm.take_resumed() {
                if let Some(tx) = tv.waiters.borrow_mut().remove(&ctx) {
                    let _ = tx.send(());
                }
            }
            (r, started)
        };
        if let Some(inc) = started {
            tracing::debug!(plugin = %self.info.name, incarnation = inc, "VM in service");
            self.after_start(inc);
        }
        Ok(r)
    }

    /// Holds stream context `ctx` of VM incarnation `incarnation` paused: the answer
    /// resolves when any callback of this thread's VM resumes it (a tick, a queue, a
    /// call response, after `proxy_set_effective_context`). Dropping the answer does
    /// not unpause: call [`Plugin::unpause`].
    pub fn pause(
        self: &Arc<Self>,
        ctx: u32,
        incarnation: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<()>, HostError> {
        self.with_vm(|vm, inc| {
            if inc != incarnation {
                return Err(HostError::ContextLost);
            }
            vm.set_paused(ctx, true);
            Ok(())
        })??;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.vms
            .get_or_default()
            .waiters
            .borrow_mut()
            .insert(ctx, tx);
        Ok(rx)
    }

    /// Ends a pause of stream context `ctx` (resumed, or given up).
    pub fn unpause(self: &Arc<Self>, ctx: u32) {
        self.vms.get_or_default().waiters.borrow_mut().remove(&ctx);
        let _ = self.with_vm(|vm, _| vm.set_paused(ctx, false));
    }

    /// The VM that takes over this thread: the spare, the canary, or a new one.
    fn next_vm(self: &Arc<Self>, tv: &ThreadVms, build: Build) -> Result<Vm, HostError> {
        match tv.spare.take() {
            Some(Ok(vm)) => return Ok(vm),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let canary = self.canary.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut vm) = canary {
            vm.set_queue_notifier(self.queue_notifier());
            return Ok(vm);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime to build on (tools, tests): start it here.
            self.admit(build)?;
            let started = Instant::now();
            let vm = Vm::start(
                &self.engine,
                &self.module,
                self.info.clone(),
                self.limits,
                self.callouts.clone(),
                None,
            );
            self.built(build, started.elapsed(), &vm);
            return vm;
        }
        self.build_spare(tv, build)?;
        Err(HostError::VmStarting)
    }

    /// Starts building a VM for this thread's spare slot on the blocking pool, unless
    /// one is on its way already or the crash-loop guard refuses.
    fn build_spare(self: &Arc<Self>, tv: &ThreadVms, build: Build) -> Result<(), HostError> {
        if tv.spare.building() || tv.spare.has_vm() || self.retired() {
            return Ok(());
        }
        self.admit(build)?;
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        if !tv.spare.claim_build() {
            return Ok(());
        }
        let spare = tv.spare.clone();
        let plugin = Arc::downgrade(self);
        let notifier = self.queue_notifier();
        let (engine, module, info, limits, callouts) = (
            self.engine.clone(),
            self.module.clone(),
            self.info.clone(),
            self.limits,
            self.callouts.clone(),
        );
        handle.spawn_blocking(move || {
            let started = Instant::now();
            let vm = Vm::start(&engine, &module, info, limits, callouts, notifier);
            match plugin.upgrade() {
                Some(p) => {
                    p.built(build, started.elapsed(), &vm);
                    spare.put(vm);
                }
                // The policy was swapped out meanwhile: nobody will take it.
                None => spare.release(),
            }
        });
        Ok(())
    }

    /// May a VM be built now? Rebuilds after failures ask the crash-loop guard.
    fn admit(&self, build: Build) -> Result<(), HostError> {
        if build == Build::Fresh {
            return Ok(());
        }
        self.guard.check().map_err(|t| HostError::CrashLoop {
            plugin: self.info.name.clone(),
            cooldown_s: t.remaining.as_secs().max(1),
        })
    }

    /// Accounts for a VM that was built (or failed to start).
    fn built(&self, build: Build, took: Duration, vm: &Result<Vm, HostError>) {
        if let Ok(vm) = vm {
            self.count_vms(1);
            self.vm_memory
                .fetch_add(vm.memory_bytes() as i64, Ordering::Relaxed);
        }
        if build == Build::AfterFailure {
            if let Some(hook) = GUARD_HOOK.get() {
                hook(&self.info.name, GuardEvent::Rebuilt(took));
            }
            self.failures.rebuilds.fetch_add(1, Ordering::Relaxed);
            self.failures
                .rebuild_us
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            if self.guard.rebuilt(took) {
                self.tripped();
            }
        }
    }

    fn tripped(&self) {
        self.failures.guard_trips.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = GUARD_HOOK.get() {
            hook(&self.info.name, GuardEvent::Tripped);
        }
        tracing::error!(
            plugin = %self.info.name,
            "filter is crash-looping: no VM is rebuilt for {} s",
            self.guard.limits().cooldown.as_secs()
        );
    }

    fn replace_failed(&self, vm: Vm) {
        self.count_vms(-1);
        self.vm_memory
            .fetch_sub(vm.memory_bytes() as i64, Ordering::Relaxed);
        tracing::warn!(plugin = %self.info.name, "replacing failed VM");
    }

    /// VMs of this plugin alive now, on all threads (spares included).
    pub fn vm_count(&self) -> i64 {
        self.vm_alive.load(Ordering::Relaxed)
    }

    /// Linear memory of this plugin's VMs, bytes.
    pub fn vm_memory_bytes(&self) -> i64 {
        self.vm_memory.load(Ordering::Relaxed)
    }

    /// Counts a failure of one of this plugin's VMs (and tells the failure hook).
    pub fn record_failure(&self, e: &HostError) {
        let (c, kind) = match e {
            HostError::Deadline { .. } => (&self.failures.deadlines, "deadline"),
            HostError::MemoryLimit { .. } => (&self.failures.memory, "memory"),
            HostError::CrashLoop { .. } => (&self.failures.crash_loop, "crash_loop"),
            _ => (&self.failures.traps, "trap"),
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = FAILURE_HOOK.get() {
            hook(&self.info.name, kind);
        }
    }

    /// Wakes this thread's VM when a queue it registered gets an item.
    fn queue_notifier(self: &Arc<Self>) -> Option<QueueNotifier> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        self.queue_notifier_on(&handle)
    }

    /// Wakes the VM of the worker thread that runs `handle` for its queues.
    fn queue_notifier_on(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
    ) -> Option<QueueNotifier> {
        let handle = handle.clone();
        let weak = Arc::downgrade(self);
        Some(Arc::new(move |queue_id| {
            let weak = weak.clone();
            handle.spawn(async move {
                if let Some(p) = weak.upgrade().filter(|p| !p.retired()) {
                    p.root_callback(Box::new(move |vm| vm.on_queue_ready(queue_id)));
                }
            });
        }))
    }

    /// After a VM starts on a worker thread: send the calls its start-up dispatched
    /// and run its tick loop on this thread.
    fn after_start(self: &Arc<Self>, incarnation: u64) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.root_callback(Box::new(|_| Ok(())));
        tokio::spawn(tick_loop(Arc::downgrade(self), incarnation));
    }

    /// Runs a root-context callback on this thread's VM, then sends the HTTP calls it
    /// dispatched; their responses come back to the root context the same way.
    pub fn root_callback(self: &Arc<Self>, f: RootCallback) {
        let r = self.with_vm(|vm, _| {
            let r = f(vm);
            (r, vm.take_pending_calls())
        });
        let calls = match r {
            Ok((Ok(()), calls)) => calls,
            // No VM on this thread yet: the callback is moot (a new VM runs its own start).
            Err(HostError::VmStarting) => return,
            Ok((Err(e), _)) | Err(e) => {
                self.record_failure(&e);
                tracing::error!(plugin = %self.info.name, error = %e, "root context callback failed");
                return;
            }
        };
        let Some(callouts) = self.callouts.clone() else {
            return;
        };
        for call in calls {
            let weak = Arc::downgrade(self);
            let (ctx, token) = (call.context_id, call.token);
            let fut = callouts.call(call);
            tokio::spawn(async move {
                let result = fut.await;
                if let Some(p) = weak.upgrade() {
                    p.root_callback(Box::new(move |vm| {
                        vm.on_http_call_response(None, ctx, token, result)
                    }));
                }
            });
        }
    }
}

/// Fires `proxy_on_tick` at the period the root context asks for, on the thread of
/// the VM, until the VM is replaced or the plugin is dropped.
async fn tick_loop(plugin: Weak<Plugin>, incarnation: u64) {
    loop {
        let period = {
            let Some(p) = plugin.upgrade().filter(|p| !p.retired()) else {
                return;
            };
            match p.with_vm(|vm, inc| (inc, vm.tick_period_ms())) {
                Ok((inc, period)) if inc == incarnation => period,
                _ => return,
            }
        };
        if period == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(period as u64)).await;
        let Some(p) = plugin.upgrade().filter(|p| !p.retired()) else {
            return;
        };
        p.root_callback(Box::new(|vm| vm.on_tick()));
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // The VMs go with the plugin (its thread slots drop after this).
        *lock_generations().entry(self.info.generation).or_default() -=
            self.vm_alive.load(Ordering::Relaxed);
    }
}

/// VMs alive by policy generation.
static GENERATION_VMS: Mutex<BTreeMap<u64, i64>> = Mutex::new(BTreeMap::new());

fn lock_generations() -> std::sync::MutexGuard<'static, BTreeMap<u64, i64>> {
    GENERATION_VMS.lock().unwrap_or_else(|e| e.into_inner())
}

/// VMs alive now by policy generation (served, retired and still finishing requests);
/// generations whose VMs are all gone are listed once more with 0, then forgotten.
pub fn vms_by_generation() -> Vec<(u64, i64)> {
    let mut g = lock_generations();
    let out = g.iter().map(|(k, v)| (*k, *v)).collect();
    g.retain(|_, v| *v != 0);
    out
}
