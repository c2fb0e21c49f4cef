//! Spreading client connections over the worker threads (`[server]
//! balance_connections = true`): each new connection is served by a worker with the
//! fewest connections open.
//!
//! Pingora 0.9 hands each accepted connection to a worker picked at random
//! (`pingora_runtime::current_handle()`), and a keep-alive connection stays on its
//! worker for its whole life. The draw is often uneven (8 connections on 2 workers
//! split 6/2 or worse 29% of the time, 32 split 20/12 or worse 22%), and the fuller
//! worker's clients wait behind each other while the other has room: with 8
//! connections, the empty chain served 0.87x nginx's requests a second with the random
//! draw and 0.93x spread, its p99 2.53x nginx's and 2.07x (`bench/README.md`,
//! nineteenth round). With 32 connections saturating the machine the spread cost 6%
//! more CPU a request (a busier worker handles more requests per wake-up), so it is a
//! choice, off by default, as Envoy's `exact_balance`: for a few long-lived
//! connections. The connections open on each worker are counted either way
//! (`sluice_worker_connections`).
//!
//! [`place`] runs on the worker Pingora chose, before anything else touches the
//! connection: it counts the connection on the least loaded worker when that one serves
//! fewer than this one, and the connection is then served there, by a task spawned on
//! that worker's runtime (its socket registered with that worker's reactor,
//! [`super::rehome`]); nothing waits for it on this thread. Moving costs one task
//! spawned on another thread, once per connection. [`Served`] keeps a connection
//! counted on its worker while it is open.

use std::sync::atomic::Ordering;

use tokio::runtime::Handle;

use crate::workers;

/// Where a new connection is served, counted there from now on: on the calling worker
/// (`None`), or, when `spread`, on the least loaded one if it has fewer connections
/// open than this one (its runtime). Counted at once, so that connections accepted
/// together do not all pick the same worker. Not counted when the caller is not a
/// worker (tools and tests that serve no traffic).
pub fn place(spread: bool) -> (Served, Option<&'static Handle>) {
    let Some(here) = workers::current() else {
        return (Served { worker: None }, None);
    };
    let open = workers::open_connections();
    let mine = open.get(here).map_or(0, |n| n.load(Ordering::Relaxed));
    let least = open
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.load(Ordering::Relaxed)))
        .min_by_key(|&(_, n)| n)
        .filter(|&(_, n)| spread && n < mine)
        .map(|(i, _)| i);
    let worker = least.unwrap_or(here);
    if let Some(n) = open.get(worker) {
        n.fetch_add(1, Ordering::Relaxed);
    }
    let elsewhere = least.map(|i| &workers::handles()[i]);
    (
        Served {
            worker: Some(worker),
        },
        elsewhere,
    )
}

/// A connection counted on the worker serving it, until dropped.
pub struct Served {
    worker: Option<usize>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(n) = self.worker.and_then(|w| workers::open_connections().get(w)) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Connections open on each worker now, in the order of [`workers::handles`] (for the
/// metrics).
pub fn snapshot() -> Vec<usize> {
    workers::open_connections()
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect()
}
