//! Cross-request memo of operator misses.
//!
//! Most operator calls on ordinary traffic ask the same question again: the same
//! `User-Agent`, `Accept`, path or argument value, through the same transformations, into the
//! same `@rx`/`@pm`/`@detectSQLi`, answering "no". A rule whose input is a pure function of the
//! value (its transformations and an operator without macros) gets a memo slot at load; the
//! memo keeps, per distinct value (compared byte for byte, never by hash alone), one bit per
//! slot: "this rule's operator does not match this value". A set bit skips the
//! transformations, the prefilter and the operator; a match is never memoised, so captures,
//! `MATCHED_VAR` and actions always come from a real evaluation.
//!
//! Bounded: values up to [`MAX_VALUE`] bytes, at most [`MAX_ROWS`] values and [`MAX_BYTES`]
//! bytes of keys; when full it starts over (a new generation). A value gets a row only the
//! second time it is seen (a small direct-mapped sketch of hashes remembers the first time), so
//! one-off values (session ids, nonces) neither take rows nor push the common ones out. The
//! hash is SipHash keyed per VM ([`Memo::seed`]) so that chosen values cannot pile into one
//! bucket.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

/// Longest value the memo keeps.
pub const MAX_VALUE: usize = 1024;
/// Most distinct values kept before starting over.
pub const MAX_ROWS: usize = 4096;
/// Most key bytes kept before starting over.
pub const MAX_BYTES: usize = 2 << 20;
/// Entries of the first-sight sketch.
const SKETCH: usize = 1 << 14;
/// Entries of the front cache (a power of two; see [`Memo::row`]).
const FRONT: usize = 512;

/// The front-cache entry of `value`: FxHash (unkeyed, a few instructions a word) picks one
/// entry; the entry is trusted only when its bytes equal `value`'s.
fn front_slot(value: &[u8]) -> usize {
    let mut h = crate::hash::Fx::default();
    h.write(value);
    (h.finish() >> (64 - FRONT.trailing_zeros())) as usize
}

/// Keyed SipHash for the value table.
#[derive(Clone, Copy, Default)]
pub struct Keyed(u64, u64);

impl BuildHasher for Keyed {
    #[allow(deprecated)] // std's SipHasher is the keyed SipHash-2-4 we want; no extra crate
    type Hasher = std::hash::SipHasher;
    #[allow(deprecated)]
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::SipHasher::new_with_keys(self.0, self.1)
    }
}

/// The memo of one engine (one per filter VM: single-threaded).
pub struct Memo {
    rows: HashMap<Rc<[u8]>, u32, Keyed>,
    /// `rows.len() * words` words: bit `slot` of a row set = a known miss.
    bits: Vec<u64>,
    words: usize,
    bytes: usize,
    gen: u32,
    /// Direct-mapped tags of values seen once (see the module doc).
    sketch: Vec<u32>,
    /// Direct-mapped recent rows (`FRONT` entries, each a key of `rows` and its row), so
    /// that most lookups compare bytes instead of computing SipHash. Values that collide
    /// only push each other out (the SipHash table still answers), so a chosen value can
    /// cost no more than a lookup without this cache.
    front: Vec<Option<(Rc<[u8]>, u32)>>,
    /// Lookups answered by a set bit (reports and tests).
    pub hits: u64,
}

impl Memo {
    /// A memo for `slots` memoisable rules.
    pub fn new(slots: u32) -> Self {
        Memo {
            rows: HashMap::with_hasher(Keyed::default()),
            bits: Vec::new(),
            words: (slots as usize).div_ceil(64),
            bytes: 0,
            gen: 0,
            sketch: Vec::new(),
            front: Vec::new(),
            hits: 0,
        }
    }

    /// Keys the hash (the filter seeds it from the clock at configure); starts over.
    pub fn seed(&mut self, k0: u64, k1: u64) {
        self.rows = HashMap::with_hasher(Keyed(k0, k1));
        self.clear();
    }

    /// Is the memo in use at all (any memoisable rule)?
    pub fn enabled(&self) -> bool {
        self.words > 0
    }

    /// Generation: changes whenever rows are dropped, so cached row numbers expire.
    pub fn generation(&self) -> u32 {
        self.gen
    }

    fn clear(&mut self) {
        self.front.clear();
        self.rows.clear();
        self.bits.clear();
        self.bytes = 0;
        self.gen = self.gen.wrapping_add(1);
    }

    /// Starts over when full; called between transactions' phases, never inside one.
    pub fn trim(&mut self) {
        if self.rows.len() >= MAX_ROWS || self.bytes >= MAX_BYTES {
            self.clear();
        }
    }

    /// The row of `value` (added when new), or `None` when it is not memoised.
    pub fn row(&mut self, value: &Rc<[u8]>) -> Option<u32> {
        if !self.enabled() || value.len() > MAX_VALUE {
            return None;
        }
        let front = front_slot(value);
        if let Some((k, r)) = self.front.get(front).and_then(Option::as_ref) {
            if **k == **value {
                return Some(*r);
            }
        }
        if let Some((k, &r)) = self.rows.get_key_value(&value[..]) {
            let k = k.clone();
            self.put_front(front, k, r);
            return Some(r);
        }
        // Soft bound within a phase: trim() drops everything at the next transaction.
        if self.rows.len() >= 2 * MAX_ROWS || self.bytes >= 2 * MAX_BYTES {
            return None;
        }
        // First sight: remember a tag, give no row.
        let h = hash_with(*self.rows.hasher(), value);
        if self.sketch.is_empty() {
            self.sketch = vec![0; SKETCH];
        }
        let (slot, tag) = ((h as usize) % SKETCH, (h >> 32) as u32 | 1);
        if self.sketch[slot] != tag {
            self.sketch[slot] = tag;
            return None;
        }
        let r = self.rows.len() as u32;
        self.rows.insert(value.clone(), r);
        self.put_front(front, value.clone(), r);
        self.bits.resize(self.bits.len() + self.words, 0);
        self.bytes += value.len();
        Some(r)
    }

    fn put_front(&mut self, at: usize, key: Rc<[u8]>, row: u32) {
        if self.front.is_empty() {
            self.front = vec![None; FRONT];
        }
        self.front[at] = Some((key, row));
    }

    /// Is `slot` a known miss for `row`?
    #[inline]
    pub fn is_miss(&mut self, row: u32, slot: u32) -> bool {
        let miss = self.knows_miss(row, slot);
        self.hits += u64::from(miss);
        miss
    }

    /// [`Memo::is_miss`] without counting a hit.
    #[inline]
    pub fn knows_miss(&self, row: u32, slot: u32) -> bool {
        let w = self.bits[row as usize * self.words + (slot / 64) as usize];
        w & (1 << (slot % 64)) != 0
    }

    /// Records that `slot` does not match `row`.
    #[inline]
    pub fn set_miss(&mut self, row: u32, slot: u32) {
        self.bits[row as usize * self.words + (slot / 64) as usize] |= 1 << (slot % 64);
    }

    /// `out` = the slots every row of `rows` is a known miss for (the AND of their bits;
    /// every slot when `rows` is empty: no value, no match). Left empty without slots.
    pub fn and_rows(&self, rows: &[u32], out: &mut Vec<u64>) {
        out.clear();
        if self.words == 0 {
            return;
        }
        out.resize(self.words, !0);
        for &r in rows {
            let at = r as usize * self.words;
            for (o, b) in out.iter_mut().zip(&self.bits[at..at + self.words]) {
                *o &= b;
            }
        }
    }

    /// `acc` AND word `w` (an index of a 64-slot word) of every row of `rows`: called on
    /// each part of a split list of rows with the last answer (all ones to start), the word
    /// `w` of [`Memo::and_rows`] of them all. All ones without slots.
    #[inline]
    pub fn and_word(&self, rows: &[u32], w: u32, mut acc: u64) -> u64 {
        if self.words == 0 {
            return acc;
        }
        for &r in rows {
            acc &= self.bits[r as usize * self.words + w as usize];
        }
        acc
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No value held?
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Hashes `b` with key `k` (the first-sight sketch, tests).
pub fn hash_with(k: Keyed, b: &[u8]) -> u64 {
    let mut h = k.build_hasher();
    h.write(b);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Rc<[u8]> {
        Rc::from(s.as_bytes())
    }

    #[test]
    fn rows_bits_and_bounds() {
        let mut m = Memo::new(70);
        assert_eq!(m.row(&v("Mozilla/5.0")), None, "first sight: no row");
        assert_eq!(m.row(&v("curl/8")), None);
        let a = m.row(&v("Mozilla/5.0")).unwrap();
        let b = m.row(&v("curl/8")).unwrap();
        assert_ne!(a, b);
        assert_eq!(m.row(&v("Mozilla/5.0")), Some(a), "same bytes, same row");
        assert!(!m.is_miss(a, 69));
        m.set_miss(a, 69);
        assert!(m.is_miss(a, 69));
        assert!(!m.is_miss(b, 69), "bits are per value");
        assert!(!m.is_miss(a, 5));
        assert_eq!(
            m.row(&v(&"x".repeat(MAX_VALUE + 1))),
            None,
            "long values are not kept"
        );
        let g = m.generation();
        for i in 0..MAX_ROWS {
            m.row(&v(&format!("value-{i}")));
            m.row(&v(&format!("value-{i}")));
        }
        m.trim();
        assert_ne!(m.generation(), g, "full: a new generation");
        assert!(m.is_empty());
        assert_eq!(Memo::new(0).row(&v("a")), None, "no slot, no memo");
    }

    /// `and_word` over the parts of a split list of rows is `and_rows` of them all, in the
    /// word asked for.
    #[test]
    fn and_word_over_parts_is_and_rows_in_that_word() {
        let mut m = Memo::new(300);
        let mut rows = Vec::new();
        for i in 0..6 {
            let v = v(&format!("v{i}"));
            m.row(&v);
            rows.push(m.row(&v).unwrap());
        }
        for (k, &r) in rows.iter().enumerate() {
            for slot in 0..300u32 {
                if !(slot as usize * 7 + k * 13).is_multiple_of(5) || slot % 64 == 3 {
                    m.set_miss(r, slot);
                }
            }
        }
        for n in 0..=rows.len() {
            let mut full = Vec::new();
            m.and_rows(&rows[..n], &mut full);
            for cut in 0..=n {
                for w in 0..5u32 {
                    let part = m.and_word(&rows[..cut], w, !0);
                    let part = m.and_word(&rows[cut..n], w, part);
                    assert_eq!(part, full[w as usize], "{n} rows cut at {cut}, word {w}");
                }
            }
        }
    }

    /// The front cache gives the row the table gives, for values that share a front entry,
    /// differ in one byte or in length only (FxHash does not count the length: `a\0` and
    /// `a\0\0` hash alike), and across a new generation.
    #[test]
    fn front_cache_is_the_table() {
        let mut m = Memo::new(10);
        let mut vals: Vec<Rc<[u8]>> = vec![v("a"), v("a\0"), v("a\0\0"), v(""), v("\u{2019}")];
        for i in 0..3000u32 {
            vals.push(v(&format!("value-{i}")));
        }
        // values sharing a front entry with the first one
        let f0 = front_slot(&vals[0]);
        let same: Vec<Rc<[u8]>> = (0..200_000u32)
            .map(|i| v(&format!("c{i}")))
            .filter(|x| front_slot(x) == f0)
            .take(5)
            .collect();
        assert!(same.len() >= 2);
        vals.extend(same);
        // whatever path answers, the row is the table's
        let check = |m: &mut Memo, x: &Rc<[u8]>| {
            let before = m.rows.get(&x[..]).copied();
            let r = m.row(x);
            if before.is_some() {
                assert_eq!(r, before, "{x:?}");
            }
            assert_eq!(r, m.rows.get(&x[..]).copied(), "{x:?}");
            r
        };
        for _ in 0..3 {
            for x in &vals {
                check(&mut m, x);
            }
            for x in vals.iter().rev() {
                check(&mut m, x);
            }
        }
        let rows: Vec<u32> = vals
            .iter()
            .filter_map(|x| m.rows.get(&x[..]).copied())
            .collect();
        assert!(rows.len() > vals.len() / 2);
        let distinct: std::collections::HashSet<u32> = rows.iter().copied().collect();
        assert_eq!(distinct.len(), rows.len(), "one row per value");
        for i in 0..MAX_ROWS {
            m.row(&v(&format!("fill-{i}")));
            m.row(&v(&format!("fill-{i}")));
        }
        m.trim();
        assert!(m.is_empty());
        for x in &vals[..8] {
            // (no row number of the last generation comes back)
            check(&mut m, x);
        }
    }

    #[test]
    fn keyed_hash_depends_on_the_key() {
        assert_ne!(
            hash_with(Keyed(1, 2), b"abc"),
            hash_with(Keyed(3, 4), b"abc")
        );
    }
}
