//! The epoch ticker behind guest CPU deadlines: one thread for every engine of the
//! process (Proxy-Wasm and components), ticking every [`EPOCH_TICK`] while guest code
//! runs, and nearly asleep (a look every [`IDLE_WAKE`]) once none has run for
//! [`IDLE_TICKS`] ticks.
//!
//! A deadline is a number of ticks from the epoch at which a call starts, so a ticker
//! that does not tick while no guest runs changes no deadline: it only stops waking a
//! core a thousand times a second for nothing (an idle proxy's CPU, and a context
//! switch every millisecond under load).
//!
//! Every entry into guest code goes through [`enter`] (its guard leaves on drop) or,
//! for component stores, [`step_in`]/[`step_out`] from their call hook. A thread
//! entering publishes it in its own slot (no shared counter the workers would bounce
//! between cores) and wakes the ticker when it sees it parked. The entry pays no fence:
//! in the rare race where a thread enters just as the ticker parks, neither may see the
//! other, and the ticker finds the entry at its next look, [`IDLE_WAKE`] later. Until
//! then it still ticks once per look, so a loop in guest code always meets its
//! deadline, at worst [`IDLE_WAKE`] late.

use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// One epoch tick: the resolution of callback deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without any guest code running (sampled once a tick) before the ticker parks.
/// Under load it keeps ticking; an idle proxy stops within this many milliseconds.
pub const IDLE_TICKS: u32 = 100;

/// How long the parked ticker sleeps between looks (and ticks) when nobody wakes it:
/// the most a deadline can be late by.
pub const IDLE_WAKE: Duration = Duration::from_millis(100);

/// What one thread publishes: how deep it is in guest code, and how many entries it
/// made (so that calls shorter than a tick still count as activity).
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    depth: AtomicI64,
    entries: AtomicU64,
}

/// The ticker thread, the engines it ticks and the threads' slots.
struct Ticker {
    engines: Mutex<Vec<wasmtime::Engine>>,
    slots: Mutex<Vec<Arc<Slot>>>,
    parked: AtomicBool,
    thread: Thread,
}

static TICKER: OnceLock<Result<Ticker, String>> = OnceLock::new();

fn ticker() -> Option<&'static Ticker> {
    TICKER.get().and_then(|t| t.as_ref().ok())
}

/// Adds `engine` to the engines the ticker ticks, starting the ticker thread on the
/// first call.
pub fn register(engine: &wasmtime::Engine) -> Result<(), String> {
    let t = TICKER
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(run)
                .map(|h| Ticker {
                    engines: Mutex::new(Vec::new()),
                    slots: Mutex::new(Vec::new()),
                    parked: AtomicBool::new(false),
                    thread: h.thread().clone(),
                })
                .map_err(|e| format!("cannot start the epoch thread: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    t.engines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(engine.clone());
    Ok(())
}

/// The ticker's loop.
fn run() {
    // The thread starts before the `OnceLock` holds the ticker: wait for it.
    let t = loop {
        match TICKER.get() {
            Some(Ok(t)) => break t,
            Some(Err(_)) => return,
            None => std::thread::sleep(EPOCH_TICK),
        }
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut idle = 0u32;
    loop {
        std::thread::sleep(EPOCH_TICK);
        for e in t.engines.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            e.increment_epoch();
        }
        if t.active(&mut seen) {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        t.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if t.active(&mut seen) {
            t.parked.store(false, Ordering::Relaxed);
            idle = 0;
            continue;
        }
        // Woken by an entering thread (an unpark before this park returns at once),
        // else after a while: then one tick and a look, parked again if still idle.
        std::thread::park_timeout(IDLE_WAKE);
        t.parked.store(false, Ordering::Relaxed);
        if t.active(&mut seen) {
            idle = 0;
        }
    }
}

impl Ticker {
    /// Whether a thread is in guest code now or entered it since the last look.
    fn active(&self, seen: &mut Vec<u64>) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        seen.resize(slots.len(), 0);
        let mut active = false;
        for (slot, seen) in slots.iter().zip(seen.iter_mut()) {
            let entries = slot.entries.load(Ordering::Relaxed);
            if slot.depth.load(Ordering::Relaxed) != 0 || entries != *seen {
                active = true;
            }
            *seen = entries;
        }
        active
    }
}

/// A thread's slot, in the ticker's list while the thread lives.
struct Registered(Arc<Slot>);

impl Registered {
    fn new() -> Registered {
        let slot = Arc::new(Slot::default());
        if let Some(t) = ticker() {
            t.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(slot.clone());
        }
        Registered(slot)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(t) = ticker() {
            t.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|s| !Arc::ptr_eq(s, &self.0));
        }
    }
}

thread_local! {
    /// This thread's slot, registered with the ticker on first use (guest code runs
    /// only once an engine, and so the ticker, exists).
    static SLOT: Registered = Registered::new();
}

/// This thread steps into guest code: published, and the ticker woken if parked.
pub fn step_in() {
    // Only this thread writes its slot: a load and a store, no atomic read-modify-write.
    SLOT.with(|Registered(s)| {
        s.depth
            .store(s.depth.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        s.entries
            .store(s.entries.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    });
    if let Some(t) = ticker() {
        if t.parked.load(Ordering::Relaxed) {
            t.thread.unpark();
        }
    }
}

/// This thread steps out of guest code (back to the host).
pub fn step_out() {
    SLOT.with(|Registered(s)| {
        s.depth
            .store(s.depth.load(Ordering::Relaxed) - 1, Ordering::Release)
    });
}

/// Guest code running on this thread, for as long as the guard lives.
#[must_use = "the guest counts as running only while the guard lives"]
pub struct Running(());

impl Drop for Running {
    fn drop(&mut self) {
        step_out();
    }
}

/// This thread runs guest code until the guard drops (also on a panic).
pub fn enter() -> Running {
    step_in();
    Running(())
}
