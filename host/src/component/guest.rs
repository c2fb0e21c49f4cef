//! [`Guest`]: one component at one place in one route, with its next handler, limits and
//! instance reuse; [`Guest::handle`] is the whole per-request API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi_http::handler::{
    ExpirationError, InstantiationError, ProxyHandler, TrapOrPanicError,
};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::WasiBody;

use super::edge::RequestData;
use super::engine::{CompiledComponent, Role, MAX_MEMORY_BYTES};
use super::failures::Failures;
use super::fleet::GuestFleet;
use super::state::Next;
use super::worker::Factory;
use crate::fleet::FleetBackend;
use crate::HostError;

/// Component instances created since start (all guests).
pub static INSTANCES_CREATED: AtomicU64 = AtomicU64::new(0);

/// Limits of one guest's instances (the same ones Proxy-Wasm filters have).
#[derive(Debug, Clone, Copy)]
pub struct GuestLimits {
    /// Linear-memory cap of one instance, bytes (at most 256 MiB).
    pub memory_bytes: usize,
    /// CPU deadline of one entry into the guest (a call or an async event), ms.
    pub deadline_ms: u64,
    /// Time the guest has to produce response headers.
    pub response_timeout: Duration,
    /// Time rebuilding instances after failures may take per window before the
    /// crash-loop guard trips (the Proxy-Wasm `rebuild_budget_ms`).
    pub rebuild_budget: Duration,
}

/// Instance reuse: `max_requests = 1` (the default) is a fresh instance per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Requests one instance serves before it is dropped (at least 1).
    pub max_requests: usize,
    /// Requests one instance serves at a time (at least 1).
    pub max_concurrent: usize,
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            max_requests: 1,
            max_concurrent: 1,
        }
    }
}

/// Where a guest's calls go: the handler after it, its `wasi:http/client`, and the fleet
/// store of its `sluice:edge/fleet` calls (none: they answer `not-configured`).
pub struct Ways {
    /// `wasi:http/handler` (middleware): the next handler.
    pub next: Next,
    /// `wasi:http/client`: the host's pools.
    pub client: Next,
    /// The policy's fleet store, if it has one.
    pub fleet: Option<Arc<dyn FleetBackend>>,
}

/// Counters of one guest, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Instances created.
    pub instances: AtomicU64,
    /// Instances that ended in a trap, a deadline or a timeout.
    pub failures: AtomicU64,
    /// Nanoseconds spent instantiating, summed.
    pub instantiate_ns: AtomicU64,
}

/// Why a guest produced no response.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The instance trapped, hit its CPU deadline or its memory cap, or panicked; the
    /// instance's end counts it, with its kind ([`super::FailureKind`]).
    #[error("component instance failed")]
    Crashed,
    /// The guest failed otherwise.
    #[error("component failed: {0}")]
    Failed(String),
    /// The guest's crash-loop guard is tripped: no instance was created.
    #[error("component is crash-looping: no instance for {cooldown_s} s")]
    CrashLoop {
        /// Seconds left before instances are created again.
        cooldown_s: u64,
    },
    /// The guest produced no response in time.
    #[error("component produced no response in time")]
    Timeout,
    /// No instance could be created (pool exhausted, memory).
    #[error("component could not be instantiated: {0}")]
    Instantiate(String),
    /// The guest (or the handler after it) answered with a `wasi:http` error code.
    #[error("component answered an error: {0:?}")]
    Code(ErrorCode),
}

/// A component at one place in one route.
pub struct Guest {
    handler: ProxyHandler<Factory>,
    counters: Arc<Counters>,
    failures: Arc<Failures>,
    /// The role it was prepared for.
    pub role: Role,
}

impl Guest {
    /// Prepares `component` for `role` as the filter `name`; requests it passes on go to
    /// `next` (middleware) and its `client.send` calls go to `client`. Its
    /// `sluice:edge/fleet` calls answer `not-configured` ([`Guest::with_fleet`] gives it a
    /// store).
    pub fn new(
        name: &str,
        component: &CompiledComponent,
        role: Role,
        next: Next,
        client: Next,
        limits: GuestLimits,
        reuse: Reuse,
    ) -> Result<Guest, HostError> {
        let ways = Ways {
            next,
            client,
            fleet: None,
        };
        Guest::with_fleet(name, component, role, ways, limits, reuse)
    }

    /// [`Guest::new`] with the fleet store its `sluice:edge/fleet` calls run on
    /// (`ways.fleet`; its keys are the filter `name`'s).
    pub fn with_fleet(
        name: &str,
        component: &CompiledComponent,
        role: Role,
        ways: Ways,
        limits: GuestLimits,
        reuse: Reuse,
    ) -> Result<Guest, HostError> {
        let Ways {
            next,
            client,
            fleet,
        } = ways;
        let pre = component.prepare(role)?;
        let counters = Arc::new(Counters::default());
        let failures = Arc::new(Failures::new(name, limits.rebuild_budget));
        let limits = GuestLimits {
            memory_bytes: limits.memory_bytes.min(MAX_MEMORY_BYTES),
            ..limits
        };
        let reuse = Reuse {
            max_requests: reuse.max_requests.max(1),
            max_concurrent: reuse.max_concurrent.max(1),
        };
        Ok(Guest {
            handler: ProxyHandler::new(Factory {
                engine: pre.instance_pre().engine().clone(),
                pre,
                next,
                client,
                limits,
                reuse,
                counters: counters.clone(),
                failures: failures.clone(),
                fleet: GuestFleet::new(name, fleet),
            }),
            counters,
            failures,
            role,
        })
    }

    /// Runs the guest's `handler.handle` on `request`; its `sluice:edge` facts are the
    /// request's `Arc<EdgeInfo>` extension, if any, and its upstream choice starts as its
    /// `Arc<Upstream>` extension (what the middleware before chose), if any. Must be called inside a tokio
    /// runtime: the instance runs on a task of its own until the response body is done.
    /// While the guest's crash-loop guard is tripped, no instance is created:
    /// [`GuestError::CrashLoop`] at once.
    pub async fn handle(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, GuestError> {
        if let Err(t) = self.failures.admit() {
            self.failures.refused();
            return Err(GuestError::CrashLoop {
                cooldown_s: t.remaining.as_secs().max(1),
            });
        }
        let data = RequestData::of(&request);
        self.handler.handle(data, request).await.map_err(classify)
    }

    /// This guest's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Instances created for this guest.
    pub fn instances(&self) -> u64 {
        self.counters.instances.load(Ordering::Relaxed)
    }
}

/// Sorts a `ProxyHandler` error into a [`GuestError`].
fn classify(e: wasmtime::Error) -> GuestError {
    if e.downcast_ref::<ExpirationError>().is_some() {
        return GuestError::Timeout;
    }
    if let Some(i) = e.downcast_ref::<InstantiationError<RequestData>>() {
        return GuestError::Instantiate(format!("{:#}", i.error));
    }
    if e.downcast_ref::<TrapOrPanicError>().is_some() {
        return GuestError::Crashed;
    }
    match e.downcast::<ErrorCode>() {
        Ok(code) => GuestError::Code(code),
        Err(e) => GuestError::Failed(format!("{e:#}")),
    }
}
