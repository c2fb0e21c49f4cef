//! Idle upstream connections, one pool per worker thread (as nginx's `keepalive` and
//! Envoy's per-worker connection pools): a connection is opened, used, parked and
//! reused by the same thread, so its socket is always driven by the reactor that owns
//! it and a reuse costs no lock, no cross-thread wake-up and no system call.
//!
//! Pingora's shared pool (pingora-core `connectors`) hands a parked connection to any
//! thread and spawns an idle watcher on a random worker runtime per release; measured
//! here at ~2.3 eventfd wake-ups per request (docs/ARCHITECTURE.md, bench/README.md).
//!
//! A parked connection the peer closed is noticed when it is taken: a read attempt
//! that must not block (`now_or_never`) sees the end of stream or stray bytes, and the
//! connection is dropped. Tokio answers it from the reactor's readiness, without a
//! system call, while the socket is idle and healthy.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use futures::FutureExt;
use pingora::protocols::Stream;
use rustc_hash::FxHasher;
use tokio::io::AsyncReadExt;

use super::h1::Idle;

/// Idle connections kept per peer and thread; more are closed when released.
pub const MAX_IDLE_PER_PEER: usize = 128;

/// An idle connection (with what its client keeps: [`Idle`]) and when it was parked.
struct Parked {
    idle: Idle,
    since: Instant,
}

/// The idle lists by peer, oldest first (parking times never decrease along a list:
/// [`put`]). Keys are already hashes (`reuse_hash`), and only this thread's connections
/// are in the map: a multiply (FxHash) spreads them, SipHash's resistance to chosen
/// keys buys nothing here.
type IdleMap = HashMap<u64, VecDeque<Parked>, BuildHasherDefault<FxHasher>>;

thread_local! {
    static IDLE: RefCell<IdleMap> = RefCell::new(IdleMap::default());
}

/// Takes the most recently parked connection to the peer `key` (a peer's
/// `reuse_hash`) that is still usable at `now` (the caller's last reading of the clock:
/// the request's upstream start): younger than `idle_timeout`, not closed by the peer,
/// with no unread bytes.
pub fn take(key: u64, idle_timeout: Duration, now: Instant) -> Option<Idle> {
    loop {
        let parked =
            IDLE.with(|idle| idle.borrow_mut().get_mut(&key).and_then(VecDeque::pop_back))?;
        if now.saturating_duration_since(parked.since) >= idle_timeout {
            // Older ones sit below it: all expired.
            IDLE.with(|idle| idle.borrow_mut().remove(&key));
            return None;
        }
        let mut idle = parked.idle;
        if still_idle(&mut idle.stream) {
            return Some(idle);
        }
    }
}

/// Parks `idle` at `now` (the caller's reading of the clock as the exchange ended) for
/// reuse by this thread; past [`MAX_IDLE_PER_PEER`] the oldest connection to that peer
/// is closed, as are those idle longer than `idle_timeout`.
///
/// A constant cost whatever the number parked: the list is oldest first, so the expired
/// connections are at its front (usually none: one comparison) and so is the one a
/// full list drops. (It looked at every parked connection on every release: up to
/// [`MAX_IDLE_PER_PEER`] clock comparisons a request, ~600 instructions at 16, issue
/// #18.)
pub fn put(key: u64, idle: Idle, idle_timeout: Duration, now: Instant) {
    IDLE.with(|map| {
        let mut map = map.borrow_mut();
        let list = map.entry(key).or_default();
        let expired = |p: &Parked| now.saturating_duration_since(p.since) >= idle_timeout;
        while list.front().is_some_and(expired) {
            list.pop_front();
        }
        if list.len() >= MAX_IDLE_PER_PEER {
            list.pop_front();
        }
        // Never older than the last one parked, so that the list stays in order even if
        // a caller read the clock before another one that parked first.
        let since = list.back().map_or(now, |last| last.since.max(now));
        list.push_back(Parked { idle, since });
    });
}

/// Whether a parked connection is still open and silent: a read that would block.
fn still_idle(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // `unconstrained`: the task's cooperative budget must not make a ready read look
    // pending.
    tokio::task::unconstrained(stream.read(&mut byte))
        .now_or_never()
        .is_none()
}
