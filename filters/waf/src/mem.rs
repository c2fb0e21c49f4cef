//! Byte-string comparison a word at a time, and (on wasm) the `memcmp`/`bcmp` symbols that
//! slice equality and ordering call.
//!
//! On wasm32 the only `memcmp` is compiler-builtins' weak one, which compares a byte per
//! iteration (about 7 wasm instructions a byte). The engine compares byte strings all the
//! time (hash-map keys, selector names, memo rows): under callgrind on `bench/waf-mix.lua`
//! that loop was 8% of a request's instructions. The strong definitions below replace it at
//! link time; native builds keep the platform's `memcmp`.

/// Compares `n` bytes at `a` and `b` as C's `memcmp`: 0 when equal, else the difference of
/// the first differing bytes (as unsigned), negative when `a`'s is smaller.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[inline(always)]
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n and both regions hold n readable bytes.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // The first differing byte in memory order is the lowest set byte of x ^ y
            // when the words are read little-endian.
            let x = u64::from_le(x);
            let y = u64::from_le(y);
            let shift = (x ^ y).trailing_zeros() & !7;
            return i32::from((x >> shift) as u8) - i32::from((y >> shift) as u8);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// `memcmp` for the wasm build (replaces compiler-builtins' weak byte loop).
///
/// # Safety
/// As [`compare`].
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract is compare's.
    unsafe { compare(a, b, n) }
}

/// `bcmp` for the wasm build: zero when equal (what `==` on slices asks).
///
/// # Safety
/// As [`compare`].
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract is compare's.
    unsafe { compare(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering;

    fn sign(v: i32) -> Ordering {
        v.cmp(&0)
    }

    /// Every length 0..40, every position of a single differing byte (both directions, and
    /// bytes above 0x7f), and unaligned starts: the sign and value match a byte loop's.
    #[test]
    fn compare_matches_a_byte_loop() {
        let base: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(37)).collect();
        for off in 0..3 {
            for n in 0..40 {
                let a = &base[off..off + n];
                assert_eq!(unsafe { compare(a.as_ptr(), a.as_ptr(), n) }, 0);
                for at in 0..n {
                    for (p, q) in [(0x10u8, 0x11u8), (0x11, 0x10), (0x7f, 0x80), (0xff, 0x00)] {
                        let mut x = a.to_vec();
                        let mut y = a.to_vec();
                        x[at] = p;
                        y[at] = q;
                        // bytes after the first difference must not matter
                        if at + 1 < n {
                            x[at + 1] = 0;
                            y[at + 1] = 0xff;
                        }
                        let got = unsafe { compare(x.as_ptr(), y.as_ptr(), n) };
                        assert_eq!(got, i32::from(p) - i32::from(q), "n={n} at={at}");
                        assert_eq!(sign(got), x.cmp(&y));
                    }
                }
            }
        }
    }
}
