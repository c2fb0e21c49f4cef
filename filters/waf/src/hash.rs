//! FxHash-style hasher and map for the engine's small integer and byte-string keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher for small integer keys.
#[derive(Default)]
pub struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The last 1 to 7 bytes of a value as one word, read in place: no copy into a buffer (in
/// wasm a copy of a variable length is a `memory.copy`, a call out of the guest). Four to
/// seven bytes are two overlapping 4-byte reads, one to three bytes the first, middle and
/// last byte: either way every byte counts, so values of one length hash apart.
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    if n >= 4 {
        let lo = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let hi = u32::from_le_bytes([rest[n - 4], rest[n - 3], rest[n - 2], rest[n - 1]]);
        u64::from(lo) | (u64::from(hi) << 32)
    } else {
        u64::from(rest[0]) | (u64::from(rest[n / 2]) << 8) | (u64::from(rest[n - 1]) << 16)
    }
}

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(tail_word(rest));
        }
    }
    // (the integer writes directly: the default ones go through `write` and its tail)
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// A `HashMap` with the [`Fx`] hasher.
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(b: &[u8]) -> u64 {
        let mut h = Fx::default();
        h.write(b);
        h.finish()
    }

    /// Every byte of a value's tail counts: values of one length that differ in any one
    /// byte hash apart, for every tail length.
    #[test]
    fn every_byte_of_the_tail_counts() {
        for n in 1..=24usize {
            let base: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            for i in 0..n {
                let mut v = base.clone();
                v[i] ^= 0x01;
                assert_ne!(fx(&base), fx(&v), "length {n}, byte {i}");
            }
        }
    }
}
