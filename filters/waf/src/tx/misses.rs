//! Known misses: which rules of a shared target list every value of the list is a known
//! miss for, told without building the list.
//!
//! Most rules a request meets are answered by the memo alone: every value of their target
//! list missed their operator before. Telling that needs only the memo rows of the list's
//! values, not the values. So a list is read here as its segments (one target each, with
//! the exclusions of its variable: [`crate::load::Segment`]): each segment's memo rows are
//! collected once a phase, however many lists share it (CRS's lists repeat `ARGS`,
//! `ARGS_NAMES`, `REQUEST_COOKIES`... across some 50 lists), and a list's "every value
//! misses" bits are the AND of its segments' rows, in the words its rules read. The values
//! themselves are collected ([`Transaction::list`]) only for a rule that must be evaluated.
//! The evaluation loop steps over a run of known misses in one call
//! ([`Transaction::skip_known_misses`]), doing for each what evaluating it would. A list
//! whose values keep including one never seen before is checked only now and then
//! ([`Hint`]).

use super::*;
use crate::load::MissEntry;

/// A segment's or a list's entry not valid in this epoch, or a list with a value that has
/// no memo row (no rule of it is a known miss).
const NONE: u32 = u32::MAX;

/// What [`Transaction::skip_known_misses`] reads of the running phase.
#[derive(Clone, Copy)]
pub(super) struct Phase<'a> {
    /// `Engine::miss_entries` of the phase.
    pub(super) entries: &'a [MissEntry],
    /// The transaction's folds of the phase.
    pub(super) folds: &'a [Fold],
    /// The next entry to evaluate from each (`snapshot::next_evals`; empty: each entry).
    pub(super) next: &'a [u32],
    /// An entry the loop must reach itself (phase 1's snapshot start), else `usize::MAX`.
    pub(super) stop: usize,
}

/// A list's hint (`Engine::list_hints`, one byte a list): how many times in a row its values
/// were not all known to the memo (a value never seen before: its rules are evaluated value by
/// value anyway), and a countdown. From [`Hint::AFTER`] such times on, the list is not
/// checked, but once every [`Hint::EVERY`] times, to learn when its values come back. Only
/// work is skipped: a list not checked is evaluated rule by rule, as a list with an unknown
/// value is.
pub(super) struct Hint;

impl Hint {
    /// Lists not known this many times in a row are checked only once in [`Hint::EVERY`].
    const AFTER: u8 = 4;
    /// See [`Hint::AFTER`].
    const EVERY: u8 = 16;

    /// Whether to skip the check now, and the hint after this use.
    fn take(h: u8) -> (bool, u8) {
        let (none, wait) = (h & 0x0f, h >> 4);
        if none < Self::AFTER {
            return (false, h);
        }
        match wait {
            0 => (false, h),
            w => (true, none | ((w - 1) << 4)),
        }
    }

    /// The hint after a check whose list was (`none`) or was not known.
    fn learn(h: u8, none: bool) -> u8 {
        if !none {
            return 0;
        }
        let n = ((h & 0x0f) + 1).min(Self::AFTER);
        match n >= Self::AFTER {
            true => n | ((Self::EVERY - 1) << 4),
            false => n,
        }
    }
}

/// Where an entry's data starts in its table, and its number of values, valid in `epoch`.
#[derive(Clone, Copy, Default)]
struct At {
    epoch: u32,
    start: u32,
    len: u32,
}

/// A transaction's segments and lists of the running phase (kept in [`spare::Spare`]
/// between transactions).
pub(super) struct Misses {
    /// Entries of another epoch are stale; 0 is never current.
    epoch: u32,
    /// Per segment: its rows in `rows` (`start` is [`NONE`] when a value has no row).
    segs: Vec<At>,
    rows: Vec<u32>,
    /// Per list: its "every value misses" words in `words` (`start` [`NONE`]: not known),
    /// in the list's `Engine::tlist_words`, and its number of values.
    lists: Vec<At>,
    words: Vec<u64>,
}

impl Default for Misses {
    fn default() -> Self {
        Misses {
            epoch: 1,
            segs: Vec::new(),
            rows: Vec::new(),
            lists: Vec::new(),
            words: Vec::new(),
        }
    }
}

impl Misses {
    /// Is `bit` set in word `word` (a `Rule::memo_word`) of list entry `e`'s "every value
    /// misses" words (never for an entry that is not known)?
    #[inline]
    fn all_miss(&self, e: At, word: u32, bit: u64) -> bool {
        // (`NONE` tested first: `NONE` plus a word would overflow a 32-bit index)
        e.start != NONE
            && self
                .words
                .get(e.start as usize + word as usize)
                .is_some_and(|w| w & bit != 0)
    }

    /// Forgets every segment and list (the values of the phase or the memo's rows changed).
    pub(super) fn reset(&mut self) {
        if self.epoch == u32::MAX {
            // (an entry left from 2^32 epochs ago must not look current)
            self.segs.clear();
            self.lists.clear();
            self.epoch = 0;
        }
        self.epoch += 1;
        self.rows.clear();
        self.words.clear();
    }
}

impl Transaction {
    /// Is `rule` known not to match in this phase: every value of its shared target list is
    /// a known miss of its memo slot (or the list has none)? Then evaluating it would only
    /// skip each value on its memo bit: it is skipped whole. Not with a runtime target
    /// exclusion (the rule's values are then collected for it alone).
    pub(super) fn known_miss(&mut self, rule: &Rule) -> bool {
        let (Some(li), Some(slot)) = (rule.tlist, rule.memo) else {
            return false;
        };
        if !self.excl_by_id.is_empty() || !self.excl_by_tag.is_empty() {
            return false;
        }
        let e = self.list_entry(li);
        let miss = self.misses.all_miss(e, rule.memo_word, 1 << (slot % 64));
        if miss {
            self.eng.memo.borrow_mut().hits += u64::from(e.len);
        }
        miss
    }

    /// From entry `i` (the loop's next entry), steps over the rules that are known misses
    /// ([`Transaction::known_miss`]) and the entries `next` steps over between them, doing
    /// what evaluating each would: it counts as evaluated, clears `MATCHED_VARS` and skips
    /// its values on their memo bits. Returns the entry to go on with, and whether its rule
    /// was found not to be a known miss (then [`Transaction::known_miss`] would only say so
    /// again). What the evaluation loop does one entry at a time, for a loop without removals
    /// or runtime exclusions (`quiet`), with the phase's `entries` (`Engine::miss_entries`),
    /// `folds` and `next`; folded entries and entry `stop` (phase 1's snapshot) are left to it.
    pub(super) fn skip_known_misses(&mut self, mut i: usize, phase: Phase<'_>) -> (usize, bool) {
        let (mut count, mut hits, mut checked) = (0u32, 0u64, false);
        while let Some(m) = phase.entries.get(i) {
            if m.list == MissEntry::NONE
                || i == phase.stop
                || matches!(
                    phase.folds.get(i),
                    Some(Fold::Pass | Fold::Jump(_) | Fold::Counted { .. })
                )
            {
                break;
            }
            let e = self.list_entry(m.list);
            if !self.misses.all_miss(e, m.word, m.bit) {
                checked = true;
                break;
            }
            count += 1;
            hits += u64::from(e.len);
            i = phase.next.get(i + 1).map_or(i + 1, |&n| n as usize);
        }
        if count > 0 {
            self.counters.0 += count;
            self.matched_vars.clear();
            self.eng.memo.borrow_mut().hits += hits;
        }
        (i, checked)
    }

    /// List `li`'s entry in this epoch (computed on first use, unless its hint says it would
    /// not be known: then it is not, and its rules are evaluated value by value).
    #[inline]
    fn list_entry(&mut self, li: u32) -> At {
        match self.misses.lists.get(li as usize) {
            Some(e) if e.epoch == self.misses.epoch => *e,
            _ => self.list_first_use(li),
        }
    }

    /// [`Transaction::list_entry`] of a list not looked at yet in this epoch.
    #[inline(never)]
    fn list_first_use(&mut self, li: u32) -> At {
        let skip = {
            let mut hints = self.eng.list_hints.borrow_mut();
            if hints.len() <= li as usize {
                hints.resize(self.eng.n_tlists as usize, 0);
            }
            let (skip, h) = Hint::take(hints[li as usize]);
            hints[li as usize] = h;
            skip
        };
        let e = match skip {
            true => self.set_list(
                li,
                At {
                    epoch: self.misses.epoch,
                    start: NONE,
                    len: 0,
                },
            ),
            false => self.list_misses(li),
        };
        if !skip {
            let mut hints = self.eng.list_hints.borrow_mut();
            hints[li as usize] = Hint::learn(hints[li as usize], e.start == NONE);
        }
        e
    }

    /// Records list `li`'s entry for this epoch.
    fn set_list(&mut self, li: u32, e: At) -> At {
        let li = li as usize;
        if self.misses.lists.len() <= li {
            self.misses
                .lists
                .resize(self.eng.n_tlists as usize, At::default());
        }
        self.misses.lists[li] = e;
        e
    }

    /// Computes list `li`'s entry: the AND of its segments' rows in its words.
    #[inline(never)]
    fn list_misses(&mut self, li: u32) -> At {
        let li = li as usize;
        let eng = self.eng.clone();
        let words = eng.tlist_words.get(li).map_or(&[][..], |w| &w[..]);
        let segs = eng.tlist_segs.get(li).map_or(&[][..], |s| &s[..]);
        let mut e = At {
            epoch: self.misses.epoch,
            start: self.misses.words.len() as u32,
            len: 0,
        };
        // its segments' rows first (collected now if not yet in this phase), then the AND
        // of them all, word by word (each word pushed: no fill of the words to start)
        for &s in segs {
            let seg = match self.misses.segs.get(s as usize) {
                Some(x) if x.epoch == self.misses.epoch => *x,
                _ => self.segment_rows(&eng, s),
            };
            if seg.start == NONE {
                e.start = NONE;
                break;
            }
            e.len += seg.len;
        }
        match (e.start, e.len) {
            // a value without a memo row: no rule of the list is a known miss
            (NONE, _) => {}
            // no value (no query, no cookie...): every rule misses, nothing to AND
            (_, 0) => {
                for _ in words {
                    self.misses.words.push(!0);
                }
            }
            _ => {
                let memo = eng.memo.borrow();
                for &w in words {
                    let mut acc = !0u64;
                    for &s in segs {
                        let seg = self.misses.segs[s as usize];
                        if seg.len == 0 {
                            continue;
                        }
                        let rows = &self.misses.rows[seg.start as usize..][..seg.len as usize];
                        acc = memo.and_word(rows, w, acc);
                    }
                    self.misses.words.push(acc);
                }
            }
        }
        self.set_list(li as u32, e)
    }

    /// Collects segment `s`'s memo rows (each value looked up, as building a list does).
    fn segment_rows(&mut self, eng: &Engine, s: u32) -> At {
        let seg = &eng.segments[s as usize];
        let start = self.misses.rows.len();
        let (all, len) = match seg.excl.is_empty() {
            true => self.rows_direct(&seg.target),
            false => None,
        }
        .unwrap_or_else(|| self.rows_collected(seg));
        let e = At {
            epoch: self.misses.epoch,
            start: if all { start as u32 } else { NONE },
            len,
        };
        if !all {
            self.misses.rows.truncate(start);
        }
        if self.misses.segs.len() <= s as usize {
            self.misses.segs.resize(eng.segments.len(), At::default());
        }
        self.misses.segs[s as usize] = e;
        e
    }

    /// The rows of a target without exclusions, read from the collections in place (what
    /// `collect` would select, without making its values): whether every value has a row,
    /// and how many values. `None` for a target this does not read (a count, TX, XML...).
    fn rows_direct(&mut self, t: &Target) -> Option<(bool, u32)> {
        if t.count {
            return None;
        }
        let mut memo_rows = std::mem::take(&mut self.memo_rows);
        let mut out = std::mem::take(&mut self.misses.rows);
        let (mut all, mut n) = (true, 0u32);
        let mut push = |id: u32, val: &Rc<[u8]>| {
            n += 1;
            let row = match id {
                NOCACHE => None,
                _ => lists::memo_row_in(&mut memo_rows, self.next_id, &self.eng, id, val),
            };
            match row {
                Some(r) => out.push(r),
                None => all = false,
            }
        };
        let read = match t.var {
            V::Scalar(i) => {
                if let Some(kv) = &self.scalars[i as usize] {
                    push(kv.id, &kv.val);
                }
                true
            }
            V::Values(c) | V::Names(c) if !matches!(c, Coll::Tx | Coll::Persist(_)) => {
                let names = matches!(t.var, V::Names(_));
                let (a, b) = self.coll(c);
                for kv in a.iter().chain(b.iter()) {
                    if !collections::selects(&t.sel, &kv.key) {
                        continue;
                    }
                    match names {
                        true => push(kv.id | 1, &kv.key),
                        false => push(kv.id, &kv.val),
                    }
                }
                true
            }
            _ => false,
        };
        self.memo_rows = memo_rows;
        self.misses.rows = out;
        read.then_some((all, n))
    }

    /// The rows of segment `seg` from its values collected (`collect`, with its exclusions).
    fn rows_collected(&mut self, seg: &crate::load::Segment) -> (bool, u32) {
        let mut vals = std::mem::take(&mut self.scratch);
        vals.clear();
        self.collect(&seg.target, &seg.excl, &[], &mut vals);
        let mut all = true;
        for v in &vals {
            let row = match v.id {
                NOCACHE => None,
                _ => self.memo_row(v),
            };
            match row {
                Some(r) => self.misses.rows.push(r),
                None => all = false,
            }
        }
        let n = vals.len() as u32;
        vals.clear();
        self.scratch = vals;
        (all, n)
    }
}

#[cfg(test)]
mod tests {
    use super::Hint;

    /// A list is checked every time until its values were not known [`Hint::AFTER`] times
    /// in a row; then once every [`Hint::EVERY`] times; a check that finds them known makes
    /// it checked every time again.
    #[test]
    fn hints_skip_lists_that_keep_values_never_seen() {
        // (whether each use checks the list, given what every check finds)
        let run = |found: &dyn Fn(usize) -> bool, uses: usize| {
            let mut h = 0u8;
            let mut checked = Vec::new();
            for n in 0..uses {
                let (skip, next) = Hint::take(h);
                h = next;
                if !skip {
                    h = Hint::learn(h, !found(n));
                }
                checked.push(!skip);
            }
            checked
        };
        let every = Hint::EVERY as usize;
        let after = Hint::AFTER as usize;
        let never_known = run(&|_| false, after + 3 * every);
        assert!(never_known[..after].iter().all(|&c| c), "{never_known:?}");
        let later = &never_known[after..];
        assert_eq!(later.iter().filter(|&&c| c).count(), 3, "{later:?}");
        assert!(later[every - 1] && later[2 * every - 1], "{later:?}");
        // known from use 30 on: checked every time once a check finds it known
        let back = run(&|n| n >= 30, 80);
        let first = (30..80).find(|&n| back[n]).unwrap();
        assert!(first < 30 + every, "{back:?}");
        assert!(back[first..].iter().all(|&c| c), "{back:?}");
        assert!(run(&|_| true, 50).iter().all(|&c| c));
    }
}
