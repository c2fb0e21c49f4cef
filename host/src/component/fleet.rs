//! `sluice:edge/fleet` (`wit/sluice-edge/edge.wit`): the fleet store's key-value
//! operations for component guests, the ones Proxy-Wasm filters start with
//! `sluice.fleet.*` ([`crate::fleet`]).
//!
//! Each import is a concurrent host function (`async func` in WIT): the call checks the
//! operation's limits ([`FleetOp::check`]), scopes its key to the filter
//! ([`crate::fleet::scoped_key`] with [`COMPONENT_KIND`] and the filter's name), hands it
//! to the embedder's [`FleetBackend`] and awaits the reply with no hold on the store, so
//! a slow store never blocks the thread, the instance's other tasks or other requests;
//! the backend bounds the wait (`[fleet] timeout_ms`). Nothing of the calling request is
//! kept: a reused instance may call it from any number of requests at a time.

use std::sync::Arc;

use wasmtime::component::{Accessor, ComponentType, Lift, Linker, Lower};

use super::state::GuestState;
use crate::fleet::{
    scoped_key, FleetBackend, FleetFuture, FleetOp, FleetReply, FleetStatus, COMPONENT_KIND,
};

/// The interface's name, as a component imports it.
pub const FLEET: &str = "sluice:edge/fleet@0.1.0";

/// The fleet store a guest's operations run on, and whose keys they are.
#[derive(Clone)]
pub struct GuestFleet {
    backend: Option<Arc<dyn FleetBackend>>,
    owner: Arc<str>,
}

impl GuestFleet {
    /// The keys of the filter `owner` (its name in the policy) on `backend` (none: the
    /// policy has no `[fleet]`, and every call answers `not-configured`).
    pub fn new(owner: &str, backend: Option<Arc<dyn FleetBackend>>) -> GuestFleet {
        GuestFleet {
            backend,
            owner: owner.into(),
        }
    }

    /// Checks, scopes and starts `op`; the reply comes from the returned future.
    fn start(&self, mut op: FleetOp) -> Result<FleetFuture, FleetError> {
        let backend = self.backend.clone().ok_or(FleetError::NotConfigured)?;
        op.check()
            .map_err(|e| FleetError::Invalid(format!("{}: {e}", op.name())))?;
        op.scope(|key| scoped_key(COMPONENT_KIND, self.owner.as_bytes(), key));
        Ok(backend.run(op))
    }
}

/// `fleet.error`: why an operation did not run.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq, Eq)]
#[component(variant)]
pub enum FleetError {
    /// `not-configured`: the policy has no `[fleet]`.
    #[component(name = "not-configured")]
    NotConfigured,
    /// `unavailable`: the store is down, backing off, or answered an error.
    #[component(name = "unavailable")]
    Unavailable(String),
    /// `timeout`: no answer within the store's timeout.
    #[component(name = "timeout")]
    Timeout,
    /// `invalid`: a limit broken; refused before it was sent.
    #[component(name = "invalid")]
    Invalid(String),
}

/// `fleet.counter`: a counter after one hit.
#[derive(ComponentType, Lift, Lower, Debug, Clone, Copy, PartialEq, Eq)]
#[component(record)]
pub struct Counter {
    /// Hits in the window.
    #[component(name = "count")]
    pub count: u32,
    /// Milliseconds until the window ends.
    #[component(name = "reset-ms")]
    pub reset_ms: u32,
    /// Whether this hit was counted.
    #[component(name = "counted")]
    pub counted: bool,
}

/// What an operation's reply becomes for the guest: `Ok` when `want` takes it.
fn answer<R>(
    reply: FleetReply,
    want: impl FnOnce(FleetReply) -> Option<R>,
) -> Result<R, FleetError> {
    match reply {
        FleetReply::Failed(FleetStatus::Timeout, _) => Err(FleetError::Timeout),
        FleetReply::Failed(_, message) => Err(FleetError::Unavailable(message)),
        other => {
            let kind = match &other {
                FleetReply::Counter { .. } => "counter",
                FleetReply::Value(_) => "value",
                FleetReply::Done => "done",
                FleetReply::Swapped(_) => "swapped",
                FleetReply::Failed(..) => "failure",
            };
            want(other).ok_or_else(|| {
                FleetError::Unavailable(format!("unexpected {kind} reply from the store"))
            })
        }
    }
}

/// Runs `op` for the calling guest: started now (checked and scoped), awaited with no
/// hold on the store.
async fn run<R>(
    accessor: &Accessor<GuestState>,
    op: FleetOp,
    want: impl FnOnce(FleetReply) -> Option<R>,
) -> Result<R, FleetError> {
    let started = accessor.with(|mut access| access.get().fleet.start(op));
    answer(started?.await, want)
}

/// A TTL as the store takes it (0: never); `Some(0)` is refused (none means never).
fn ttl(ttl_ms: Option<u32>) -> Result<u32, FleetError> {
    match ttl_ms {
        None => Ok(0),
        Some(0) => Err(FleetError::Invalid(
            "ttl must be 1 to 86400000 ms (none: never expires)".into(),
        )),
        Some(t) => Ok(t),
    }
}

fn counter(reply: FleetReply) -> Option<Counter> {
    match reply {
        FleetReply::Counter {
            count,
            reset_ms,
            counted,
        } => Some(Counter {
            count,
            reset_ms,
            counted,
        }),
        _ => None,
    }
}

/// Adds `sluice:edge/fleet` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(FLEET)?;
    i.func_wrap_concurrent(
        "get",
        |accessor: &Accessor<GuestState>, (key,): (String,)| {
            Box::pin(async move {
                let op = FleetOp::Get {
                    key: key.into_bytes(),
                };
                let r = run(accessor, op, |r| match r {
                    FleetReply::Value(v) => Some(v),
                    _ => None,
                })
                .await;
                Ok((r,))
            })
        },
    )?;
    i.func_wrap_concurrent(
        "set",
        |accessor: &Accessor<GuestState>, (key, value, ttl_ms): (String, Vec<u8>, Option<u32>)| {
            Box::pin(async move {
                let r = match ttl(ttl_ms) {
                    Ok(ttl_ms) => {
                        let op = FleetOp::Set {
                            key: key.into_bytes(),
                            value,
                            ttl_ms,
                        };
                        run(accessor, op, |r| {
                            matches!(r, FleetReply::Done).then_some(())
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                Ok((r,))
            })
        },
    )?;
    i.func_wrap_concurrent(
        "incr",
        |accessor: &Accessor<GuestState>, (key, window_ms, limit): (String, u32, u32)| {
            Box::pin(async move {
                let op = FleetOp::Incr {
                    key: key.into_bytes(),
                    window_ms,
                    limit,
                };
                Ok((run(accessor, op, counter).await,))
            })
        },
    )?;
    i.func_wrap_concurrent(
        "sliding",
        |accessor: &Accessor<GuestState>, (key, window_ms, limit): (String, u32, u32)| {
            Box::pin(async move {
                let op = FleetOp::Sliding {
                    key: key.into_bytes(),
                    window_ms,
                    limit,
                };
                Ok((run(accessor, op, counter).await,))
            })
        },
    )?;
    i.func_wrap_concurrent(
        "cas",
        |accessor: &Accessor<GuestState>,
         (key, expected, new, ttl_ms): (String, Option<Vec<u8>>, Vec<u8>, Option<u32>)| {
            Box::pin(async move {
                let r = match ttl(ttl_ms) {
                    Ok(ttl_ms) => {
                        let op = FleetOp::Cas {
                            key: key.into_bytes(),
                            expected,
                            new,
                            ttl_ms,
                        };
                        run(accessor, op, |r| match r {
                            FleetReply::Swapped(s) => Some(s),
                            _ => None,
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                Ok((r,))
            })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl FleetBackend for Echo {
        /// Answers a `get` with the scoped key it was given.
        fn run(self: Arc<Self>, op: FleetOp) -> FleetFuture {
            Box::pin(async move { FleetReply::Value(Some(op.key().to_vec())) })
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn keys_are_scoped_to_the_component_and_limits_hold_before_the_store() {
        let fleet = GuestFleet::new("counter", Some(Arc::new(Echo)));
        let got = block(
            fleet
                .start(FleetOp::Get { key: b"k".to_vec() })
                .ok()
                .unwrap(),
        );
        assert_eq!(got, FleetReply::Value(Some(b"c:7:counter:k".to_vec())));
        // Another kind than any Proxy-Wasm filter's (`vm_id` "counter" -> "f:7:counter:k").
        assert_ne!(
            scoped_key(crate::fleet::FILTER_KIND, b"counter", b"k"),
            b"c:7:counter:k"
        );
        let long = FleetOp::Get {
            key: vec![b'k'; crate::fleet::MAX_KEY + 1],
        };
        assert!(matches!(fleet.start(long), Err(FleetError::Invalid(m)) if m.contains("1024")));
        let big = FleetOp::Set {
            key: b"k".to_vec(),
            value: vec![0; crate::fleet::MAX_VALUE + 1],
            ttl_ms: 0,
        };
        assert!(matches!(fleet.start(big), Err(FleetError::Invalid(_))));
        let no_window = FleetOp::Incr {
            key: b"k".to_vec(),
            window_ms: 0,
            limit: 1,
        };
        assert!(matches!(
            fleet.start(no_window),
            Err(FleetError::Invalid(_))
        ));
        let none = GuestFleet::new("counter", None);
        assert!(matches!(
            none.start(FleetOp::Get { key: b"k".to_vec() }),
            Err(FleetError::NotConfigured)
        ));
        assert_eq!(
            ttl(Some(0)).unwrap_err(),
            FleetError::Invalid("ttl must be 1 to 86400000 ms (none: never expires)".into())
        );
    }

    #[test]
    fn failures_become_typed_errors() {
        let r = answer(
            FleetReply::Failed(FleetStatus::Unavailable, "fleet store down".into()),
            |_| Some(()),
        );
        assert_eq!(r, Err(FleetError::Unavailable("fleet store down".into())));
        let r = answer(FleetReply::Failed(FleetStatus::Timeout, "t".into()), |_| {
            Some(())
        });
        assert_eq!(r, Err(FleetError::Timeout));
        let r = answer(FleetReply::Done, counter);
        assert!(matches!(r, Err(FleetError::Unavailable(_))));
    }
}
