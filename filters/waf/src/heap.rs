//! The filter's heap allocator: per-size free lists in front of a general allocator.
//!
//! A request through the CRS makes about 670 heap allocations in the filter (Rc'd byte
//! strings, TX values, lists), almost all of them small and freed by the end of the
//! request. talc served each in ~145 wasm instructions and each free in ~80 (callgrind on
//! `bench/waf-mix.lua`: 14% of the filter's instructions). Blocks of up to [`MAX_SMALL`]
//! bytes (alignment up to [`ALIGN`]) are instead rounded up to a multiple of [`ALIGN`] and,
//! once freed, kept on a singly linked free list of their size class, where the next
//! allocation of the class takes them back in a few instructions. Larger or over-aligned
//! blocks go to the backing allocator as before.
//!
//! Freed small blocks are never handed back to the backing allocator: the memory a class
//! holds is the most of its blocks ever live at once (a request's peak, reused by the next).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// Size-class granularity and the largest alignment the free lists serve.
pub const ALIGN: usize = 16;
/// The largest block (bytes) the free lists serve.
pub const MAX_SMALL: usize = 512;
const CLASSES: usize = MAX_SMALL / ALIGN;

/// Free lists of small blocks in front of the allocator `A`.
///
/// Not thread-safe by itself: the heads are plain cells (see the `Sync` impl for wasm).
pub struct SizeClasses<A> {
    backing: A,
    heads: UnsafeCell<[*mut u8; CLASSES]>,
}

impl<A> SizeClasses<A> {
    /// Free lists (empty) in front of `backing`.
    pub const fn new(backing: A) -> Self {
        SizeClasses {
            backing,
            heads: UnsafeCell::new([null_mut(); CLASSES]),
        }
    }
}

// SAFETY: a Proxy-Wasm VM runs one thread (wasm32 without the threads proposal), so the
// free lists are never touched concurrently.
#[cfg(target_arch = "wasm32")]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

/// The class of a layout the free lists serve, or `None`.
#[inline(always)]
fn class(layout: Layout) -> Option<usize> {
    if layout.size() <= MAX_SMALL && layout.align() <= ALIGN {
        Some(layout.size().max(1).div_ceil(ALIGN) - 1)
    } else {
        None
    }
}

/// The layout a class's blocks have at the backing allocator.
#[inline(always)]
fn class_layout(c: usize) -> Layout {
    // SAFETY: (c + 1) * ALIGN <= MAX_SMALL, ALIGN is a power of two.
    unsafe { Layout::from_size_align_unchecked((c + 1) * ALIGN, ALIGN) }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { self.backing.alloc(layout) };
        };
        // SAFETY: one thread (see the Sync impl); c < CLASSES.
        unsafe {
            let head = &mut (*self.heads.get())[c];
            let block = *head;
            if block.is_null() {
                return self.backing.alloc(class_layout(c));
            }
            // a free block's first word is the next free block of its class
            *head = block.cast::<*mut u8>().read();
            block
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: a block of this layout came from the backing allocator.
            return unsafe { self.backing.dealloc(ptr, layout) };
        };
        // SAFETY: one thread; the block is >= ALIGN bytes and ALIGN-aligned (class_layout),
        // so it holds the next pointer.
        unsafe {
            let head = &mut (*self.heads.get())[c];
            ptr.cast::<*mut u8>().write(*head);
            *head = ptr;
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout).is_none() {
            // SAFETY: the caller's layout, passed on.
            return unsafe { self.backing.alloc_zeroed(layout) };
        }
        // SAFETY: the caller's layout; a reused block is zeroed here.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                p.write_bytes(0, layout.size());
            }
            p
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size (rounded to the alignment) fits isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // the block already has room (it is its class's size)
            (Some(a), Some(b)) if a == b => ptr,
            // SAFETY: a backing block, resized by the backing allocator.
            (None, None) => unsafe { self.backing.realloc(ptr, layout, new_size) },
            // SAFETY: a new block, the contents moved, the old block freed as it came.
            _ => unsafe {
                let p = self.alloc(new_layout);
                if !p.is_null() {
                    p.copy_from_nonoverlapping(ptr, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn fill(p: *mut u8, n: usize, seed: u8) {
        for i in 0..n {
            unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
        }
    }

    fn check(p: *const u8, n: usize, seed: u8) {
        for i in 0..n {
            assert_eq!(
                unsafe { p.add(i).read() },
                seed.wrapping_add(i as u8),
                "byte {i}"
            );
        }
    }

    /// A freed small block is the next one of its class (LIFO), other classes do not take
    /// it, and large or over-aligned blocks bypass the lists.
    #[test]
    fn small_blocks_are_reused_by_class() {
        let a = SizeClasses::new(System);
        unsafe {
            let l24 = Layout::from_size_align(24, 8).unwrap();
            let l32 = Layout::from_size_align(32, 1).unwrap();
            let l40 = Layout::from_size_align(40, 8).unwrap();
            let p = a.alloc(l24);
            assert_eq!(p as usize % ALIGN, 0);
            a.dealloc(p, l24);
            // 32 bytes is the same class as 24 (17..=32)
            let q = a.alloc(l32);
            assert_eq!(q, p);
            a.dealloc(q, l32);
            let r = a.alloc(l40);
            assert_ne!(r, p);
            // two freed blocks come back last-in first-out
            let s = a.alloc(l24);
            assert_eq!(s, p);
            let t = a.alloc(l24);
            a.dealloc(s, l24);
            a.dealloc(t, l24);
            assert_eq!(a.alloc(l24), t);
            assert_eq!(a.alloc(l24), s);
            let big = Layout::from_size_align(MAX_SMALL + 1, 8).unwrap();
            let b = a.alloc(big);
            fill(b, big.size(), 3);
            check(b, big.size(), 3);
            a.dealloc(b, big);
            let over = Layout::from_size_align(64, 64).unwrap();
            let o = a.alloc(over);
            assert_eq!(o as usize % 64, 0);
            a.dealloc(o, over);
            // zeroed allocation of a reused, dirty block
            fill(r, 40, 9);
            a.dealloc(r, l40);
            let z = a.alloc_zeroed(l40);
            assert_eq!(z, r);
            check_zero(z, 40);
        }
    }

    fn check_zero(p: *const u8, n: usize) {
        for i in 0..n {
            assert_eq!(unsafe { p.add(i).read() }, 0);
        }
    }

    /// Growing a block step by step from 1 byte across every class and past MAX_SMALL
    /// (then shrinking back) keeps its contents.
    #[test]
    fn realloc_keeps_contents_across_classes() {
        let a = SizeClasses::new(System);
        unsafe {
            let mut layout = Layout::from_size_align(1, 1).unwrap();
            let mut p = a.alloc(layout);
            fill(p, 1, 5);
            for n in (2..=MAX_SMALL * 3).chain((1..MAX_SMALL * 3).rev()) {
                p = a.realloc(p, layout, n);
                assert!(!p.is_null());
                let keep = layout.size().min(n);
                check(p, keep, 5);
                fill(p, n, 5);
                layout = Layout::from_size_align(n, 1).unwrap();
            }
            a.dealloc(p, layout);
        }
    }

    /// Many live blocks of mixed sizes, freed in an interleaved order and allocated
    /// again: no block is handed out twice while live (contents survive).
    #[test]
    fn live_blocks_never_alias() {
        let a = SizeClasses::new(System);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        unsafe {
            for round in 0..4u8 {
                for i in 0..300usize {
                    let size = 1 + (i * 37 + usize::from(round) * 11) % (MAX_SMALL + 100);
                    let l = Layout::from_size_align(size, 1 << (i % 5)).unwrap();
                    let p = a.alloc(l);
                    let seed = (i as u8) ^ round;
                    fill(p, size, seed);
                    live.push((p, l, seed));
                }
                // free every other block, oldest first
                let mut k = 0;
                live.retain(|&(p, l, seed)| {
                    k += 1;
                    check(p, l.size(), seed);
                    if k % 2 == 0 {
                        a.dealloc(p, l);
                        false
                    } else {
                        true
                    }
                });
            }
            for (p, l, seed) in live {
                check(p, l.size(), seed);
                a.dealloc(p, l);
            }
        }
    }
}
