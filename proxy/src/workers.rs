//! The worker threads of the proxy service, so that a policy's VMs can be started on
//! every one of them before the policy serves (see [`crate::host::Plugin::prepare`]).
//!
//! Pingora runs the proxy service on a `NoStealRuntime`: one current-thread Tokio
//! runtime per worker thread, created inside `Server::run` and never handed out. The
//! only way in is `pingora_runtime::current_handle()`, which, called on a worker
//! thread, answers the handle of a worker picked at random. [`Warmed`] wraps the proxy
//! service: its `start_service` (which runs on one of the workers) probes with tasks
//! spawned through `current_handle()` until every worker thread has answered with its
//! own handle, registers them once (the set of threads is fixed for the life of the
//! process: `[server] threads` needs a restart), starts the live policy's VMs on all of
//! them, and only then opens the listeners. Every swap uses the registry.
//!
//! Why probing and not something else: Pingora offers no list of a service's runtimes,
//! and a task spawned on a handle runs on that handle's thread, so a handful of probe
//! rounds (each `4 × threads` tasks) finds every thread with near certainty (the chance
//! to miss one after a round is below `threads × e⁻⁴`); the cost is paid once at start.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::thread::ThreadId;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::Service;
use tokio::runtime::Handle;

use crate::swap::Control;

/// The worker threads, registered once when the proxy service starts. One entry per
/// worker, at the same index in each list.
struct Registry {
    threads: Vec<ThreadId>,
    handles: Vec<Handle>,
    /// Client connections open on each worker ([`crate::listener::balance`]).
    open: Vec<AtomicUsize>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Probe rounds before giving up on the threads not found (they start VMs lazily).
const ROUNDS: usize = 64;

/// The worker threads' runtimes, once the proxy service started (empty before, and in
/// tools and tests that serve no traffic).
pub fn handles() -> &'static [Handle] {
    REGISTRY.get().map_or(&[], |r| r.handles.as_slice())
}

/// Client connections open on each worker, in the order of [`handles`] (counted by
/// [`crate::listener::balance`]; empty before the service started).
pub fn open_connections() -> &'static [AtomicUsize] {
    REGISTRY.get().map_or(&[], |r| r.open.as_slice())
}

/// The index in [`handles`] of the worker running the caller, if it is one. Looked up
/// once per thread, after the registry is set.
pub fn current() -> Option<usize> {
    thread_local! {
        static INDEX: Cell<Option<Option<usize>>> = const { Cell::new(None) };
    }
    let registry = REGISTRY.get()?;
    INDEX
        .try_with(|index| {
            if let Some(known) = index.get() {
                return known;
            }
            let me = std::thread::current().id();
            let found = registry.threads.iter().position(|t| *t == me);
            index.set(Some(found));
            found
        })
        .ok()
        .flatten()
}

/// Finds the runtime of each of the `threads` worker threads of the service running
/// the caller (which must be one of them).
async fn discover(threads: usize) -> Vec<(ThreadId, Handle)> {
    let mut found: HashMap<ThreadId, Handle> = HashMap::new();
    for _ in 0..ROUNDS {
        let probes: Vec<_> = (0..threads.max(1) * 4)
            .map(|_| {
                pingora_runtime::current_handle()
                    .spawn(async { (std::thread::current().id(), Handle::current()) })
            })
            .collect();
        for p in probes {
            if let Ok((id, h)) = p.await {
                found.entry(id).or_insert(h);
            }
        }
        if found.len() >= threads {
            break;
        }
    }
    if found.len() < threads {
        tracing::warn!(
            found = found.len(),
            threads,
            "not every worker thread answered: the others start their VMs at their first request"
        );
    }
    found.into_iter().collect()
}

/// A service whose worker threads get the live policy's VMs before it starts serving.
pub struct Warmed<S> {
    inner: S,
    control: Arc<Control>,
    threads: usize,
}

impl<S> Warmed<S> {
    /// Wraps `inner`, which runs on `threads` worker threads.
    pub fn new(inner: S, control: Arc<Control>, threads: usize) -> Warmed<S> {
        Warmed {
            inner,
            control,
            threads,
        }
    }
}

#[async_trait]
impl<S: Service + 'static> Service for Warmed<S> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<pingora::server::ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let handles = discover(self.threads).await;
        tracing::debug!(threads = handles.len(), "worker threads registered");
        let (threads, handles): (Vec<_>, Vec<_>) = handles.into_iter().unzip();
        let open = threads.iter().map(|_| AtomicUsize::new(0)).collect();
        let _ = REGISTRY.set(Registry {
            threads,
            handles,
            open,
        });
        let control = self.control.clone();
        // Blocking: VMs are built on other threads; this worker waits for its own
        // share of installs, so it must not be the one blocked.
        if let Err(e) = tokio::task::spawn_blocking(move || control.warm_live()).await {
            tracing::error!(error = %e, "starting the policy's VMs failed");
        }
        self.inner
            .start_service(
                #[cfg(unix)]
                fds,
                shutdown,
                listeners_per_fd,
            )
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }
}
