//! Results of transformation chains kept across transactions.
//!
//! Most values a rule transforms are the same shared `Rc<[u8]>` from one request to the next
//! (header names and values, cookie names, scalars: `Transaction::intern` hands out the one
//! it made before), and so is the chain's result: CRS's 901318 hashes the `User-Agent`
//! (`t:sha1,t:hexEncode`) on every request, `t:lowercase` & co run on every header. The
//! table is direct-mapped on the input's address and the chain number; an entry holds the
//! input `Rc` itself (so its address cannot be reused while the entry lives) and is trusted
//! only for that same `Rc` and chain, so a hit returns exactly what the chain computes. One
//! table per engine (chain numbers are the engine's).

use std::rc::Rc;

/// Entries in the table (a power of two).
const ENTRIES: usize = 512;
/// Longest input kept (longer ones are transformed every time, as before).
pub const MAX_INPUT: usize = 512;

/// One kept result: the chain, its input and its output.
type Entry = (u32, Rc<[u8]>, Rc<[u8]>);

/// A direct-mapped table of chain results (see the module doc).
#[derive(Default)]
pub struct ChainCache {
    entries: Vec<Option<Entry>>,
}

impl ChainCache {
    fn slot(chain: u32, input: &Rc<[u8]>) -> usize {
        let p = Rc::as_ptr(input) as *const u8 as usize as u64;
        let h = (p ^ (u64::from(chain) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - ENTRIES.trailing_zeros())) as usize
    }

    /// The kept output of `chain` on `input` (the same `Rc`), if any.
    #[inline]
    pub fn get(&self, chain: u32, input: &Rc<[u8]>) -> Option<Rc<[u8]>> {
        if self.entries.is_empty() {
            return None;
        }
        match &self.entries[Self::slot(chain, input)] {
            Some((c, i, o)) if *c == chain && Rc::ptr_eq(i, input) => Some(o.clone()),
            _ => None,
        }
    }

    /// Keeps `output` as the result of `chain` on `input` (inputs up to [`MAX_INPUT`]
    /// bytes; it replaces what the slot held).
    #[inline]
    pub fn put(&mut self, chain: u32, input: &Rc<[u8]>, output: &Rc<[u8]>) {
        if input.len() > MAX_INPUT {
            return;
        }
        if self.entries.is_empty() {
            self.entries = vec![None; ENTRIES];
        }
        self.entries[Self::slot(chain, input)] = Some((chain, input.clone(), output.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_only_for_the_same_rc_and_chain() {
        let mut c = ChainCache::default();
        let a: Rc<[u8]> = Rc::from(&b"Mozilla"[..]);
        let out: Rc<[u8]> = Rc::from(&b"mozilla"[..]);
        assert!(c.get(1, &a).is_none());
        c.put(1, &a, &out);
        assert!(Rc::ptr_eq(&c.get(1, &a).unwrap(), &out));
        // another chain on the same input: a miss
        assert!(c.get(2, &a).is_none());
        // equal bytes in another Rc: a miss (never a wrong answer)
        let b: Rc<[u8]> = Rc::from(&b"Mozilla"[..]);
        assert!(c.get(1, &b).is_none());
        // too long to keep
        let long: Rc<[u8]> = vec![b'x'; MAX_INPUT + 1].into();
        c.put(1, &long, &out);
        assert!(c.get(1, &long).is_none());
    }

    #[test]
    fn a_colliding_entry_evicts() {
        let mut c = ChainCache::default();
        let a: Rc<[u8]> = Rc::from(&b"a"[..]);
        let out_a: Rc<[u8]> = Rc::from(&b"A"[..]);
        c.put(0, &a, &out_a);
        // find another (input, chain) that lands in the same slot
        let s = ChainCache::slot(0, &a);
        let (chain, b) = (1u32..)
            .map(|ch| (ch, a.clone()))
            .find(|(ch, x)| ChainCache::slot(*ch, x) == s)
            .unwrap();
        let out_b: Rc<[u8]> = Rc::from(&b"B"[..]);
        c.put(chain, &b, &out_b);
        assert!(c.get(0, &a).is_none());
        assert!(Rc::ptr_eq(&c.get(chain, &b).unwrap(), &out_b));
    }
}
