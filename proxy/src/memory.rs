//! Giving heap back to the kernel after a connection storm.
//!
//! Each open connection holds tens of KiB (buffers, the task, TLS state). Allocators
//! keep freed memory for reuse: after 5,000 connections close, resident memory stays
//! near its peak. Once the open connections have fallen well below their peak,
//! mimalloc (the global allocator, see `main.rs`) is asked to collect and return its
//! free pages (`mi_collect`), and glibc (what C libraries still allocate from) to trim
//! its arenas (`malloc_trim(0)`).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use libmimalloc_sys as mi;

use crate::listener::Tracker;
use crate::metrics::metrics;

/// Sluice's global allocator: mimalloc, called through its plain entry points whenever
/// they give the alignment asked for. The `mimalloc` crate's allocator calls the aligned
/// ones (`mi_malloc_aligned`) for every allocation; in mimalloc 3 they take a slower
/// path whenever the size class has no free block at hand (issue #18, bench/README.md).
/// mimalloc aligns every block to at least 16 bytes, or to its size when smaller, as
/// glibc does: the rule below is the one Rust's own `System` allocator applies.
pub struct Allocator;

/// The alignment `mi_malloc` gives every block of at least this many bytes.
const MIN_ALIGN: usize = 16;

fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes blocks of
// both the plain and the aligned entry points); the alignment asked for is honoured by
// `plain` or passed on.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// Connections that must have closed since the peak before a trim is worth it.
const STORM: usize = 256;

/// Starts a thread that trims the heap after connection storms.
pub fn trim_after_storms(tracker: Arc<Tracker>) {
    let spawned = std::thread::Builder::new()
        .name("sluice-trim".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let open = tracker.open();
            let peak = tracker.take_peak();
            if peak >= open + STORM && open <= peak / 2 {
                let before = resident_bytes();
                trim();
                let after = resident_bytes();
                let freed = before.saturating_sub(after);
                metrics().memory_trimmed.inc_by(freed);
                tracing::debug!(peak, open, freed, "heap trimmed after a connection storm");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no heap trimming thread");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: both only walk their allocator's own free lists.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {
    // SAFETY: mi_collect only walks mimalloc's own free lists.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Resident set size, bytes (0 where unknown).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
