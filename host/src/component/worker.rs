//! Instances: how `wasmtime-wasi-http`'s `ProxyHandler` gets a store and instance
//! ([`Factory`]), when an instance takes another request ([`Bounds`]), and when an idle
//! reused instance is dropped ([`IdleExpiry`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{GuestTaskId, ResourceTable};
use wasmtime::{CallHook, Store, StoreContextMut, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpCtx;

use super::edge::{RequestData, Requests};
use super::failures::{FailureKind, Failures};
use super::fleet::GuestFleet;
use super::guest::{Counters, GuestLimits, Reuse};
use super::state::{GuestState, Next, Outbound};
use crate::state::Limiter;

/// How long a reused instance may sit idle before it is dropped.
const IDLE: Duration = Duration::from_secs(10);

/// Builds one store and instance per worker (a fresh one per request unless reused).
pub(super) struct Factory {
    pub(super) engine: wasmtime::Engine,
    pub(super) pre: ServicePre<GuestState>,
    pub(super) next: Next,
    pub(super) client: Next,
    pub(super) limits: GuestLimits,
    pub(super) reuse: Reuse,
    pub(super) counters: Arc<Counters>,
    pub(super) failures: Arc<Failures>,
    pub(super) fleet: GuestFleet,
}

impl HandlerState for Factory {
    type StoreData = GuestState;
    type WorkerExpiration = IdleExpiry;
    type WorkerState = Bounds;

    async fn instantiate(&self) -> wasmtime::Result<Instance<GuestState, IdleExpiry, Bounds>> {
        let started = Instant::now();
        let state = GuestState {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            next: Outbound {
                next: self.next.clone(),
                passing: None,
            },
            client: Outbound {
                next: self.client.clone(),
                passing: None,
            },
            requests: Requests::default(),
            fleet: self.fleet.clone(),
            limits: Limiter::new(
                StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory_bytes)
                    .instances(64)
                    .tables(16)
                    .memories(4)
                    .trap_on_grow_failure(true)
                    .build(),
            ),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // A CPU deadline per entry into the guest (each call, each async event it is
        // woken for), as each Proxy-Wasm callback has: a loop traps, a long body does not.
        let ticks = deadline_ticks(self.limits.deadline_ms);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks);
        // The hook also tells the epoch ticker when guest code runs on this thread
        // (`crate::ticker`): in from the host, out to it.
        store.call_hook(move |mut ctx: StoreContextMut<'_, GuestState>, hook| {
            match hook {
                CallHook::CallingWasm => {
                    ctx.set_epoch_deadline(ticks);
                    crate::ticker::step_in();
                }
                CallHook::ReturningFromHost => crate::ticker::step_in(),
                CallHook::ReturningFromWasm | CallHook::CallingHost => crate::ticker::step_out(),
            }
            Ok(())
        });
        let service = self.pre.instantiate_async(&mut store).await?;
        self.counters.instances.fetch_add(1, Ordering::Relaxed);
        super::guest::INSTANCES_CREATED.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        self.counters
            .instantiate_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.failures.instantiated(took);
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: GuestState::client_view,
            expiration: IdleExpiry::default(),
            state: Bounds {
                reuse: self.reuse,
                response_timeout: self.limits.response_timeout,
                counters: self.counters.clone(),
                failures: self.failures.clone(),
            },
        })
    }
}

/// Epoch ticks (1 ms each) for a deadline in milliseconds (at least one).
fn deadline_ticks(ms: u64) -> u64 {
    let tick = crate::engine::EPOCH_TICK.as_millis().max(1) as u64;
    ms.div_ceil(tick).max(1)
}

/// Per-instance bounds: requests in all, requests at a time, time to a response.
pub(super) struct Bounds {
    reuse: Reuse,
    response_timeout: Duration,
    counters: Arc<Counters>,
    failures: Arc<Failures>,
}

impl WorkerState for Bounds {
    type StoreData = GuestState;
    /// The request's `sluice:edge` facts and upstream choice.
    type RequestData = RequestData;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.reuse.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, GuestState>,
        data: RequestData,
        task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        store.data_mut().requests.start(task, data);
        Box::pin(tokio::time::sleep(self.response_timeout))
    }

    fn drop(&self, store: Store<GuestState>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            let kind = FailureKind::of(&e, store.data().limits.memory_hit);
            self.failures.failed(kind, &e);
        }
    }
}

/// Drops an instance that has been idle for [`IDLE`]; a busy one is bounded by the
/// epoch deadline and the response timeout instead.
#[derive(Default)]
pub(super) struct IdleExpiry {
    armed_for: Option<Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WorkerExpiration for IdleExpiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        if status != WorkerStatus::Idle {
            this.sleep = None;
            this.armed_for = None;
            return Poll::Pending;
        }
        if this.armed_for != Some(start) {
            this.armed_for = Some(start);
            this.sleep = Some(Box::pin(tokio::time::sleep_until((start + IDLE).into())));
        }
        match this.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
