//! Segments: the values of one target of a shared list (with the exclusions naming its
//! variable) and their memo rows, collected once per phase for every list that reads them
//! ([`Engine::tlist_segs`]). CRS's lists differ by one target or one exclusion and share the
//! rest (`ARGS`, `ARGS_NAMES`, the cookies, `XML:/*`): 52 lists a request read 131 targets,
//! about 50 of them distinct.

use super::*;

/// One segment's values in the running phase.
#[derive(Default)]
pub(super) struct Seg {
    /// Collected in this phase.
    filled: bool,
    /// Every value has a memo row.
    pub(super) all_rows: bool,
    pub(super) vals: Vec<Val>,
    /// Memo row of each value ([`ROW_NONE`] when not memoised).
    pub(super) rows: Vec<u32>,
}

/// The segments of a transaction: one slot per [`Engine::segs`], and the slots filled.
#[derive(Default)]
pub(super) struct Segs {
    pub(super) slots: Vec<Seg>,
    used: Vec<u32>,
}

impl Segs {
    /// Empties the filled segments (their allocations stay), for the next phase or
    /// transaction.
    pub(super) fn recycle(&mut self) {
        for i in self.used.drain(..) {
            if let Some(s) = self.slots.get_mut(i as usize) {
                s.filled = false;
                s.vals.clear();
                s.rows.clear();
            }
        }
    }
}

impl Transaction {
    /// Segment `s`, collected (with its memo rows) unless it was already in this phase.
    pub(super) fn seg(&mut self, s: u32) -> &Seg {
        let i = s as usize;
        if i >= self.segs.slots.len() {
            self.segs.slots.resize_with(self.eng.segs.len().max(i + 1), Seg::default);
        }
        if !self.segs.slots[i].filled {
            let mut seg = std::mem::take(&mut self.segs.slots[i]);
            let def = &self.eng.segs[i];
            self.collect(&def.target, &def.excl, &[], &mut seg.vals);
            let mut all_rows = true;
            for v in &seg.vals {
                let row = match v.id {
                    NOCACHE => ROW_NONE,
                    _ => self.memo_row(v).unwrap_or(ROW_NONE),
                };
                all_rows &= row != ROW_NONE;
                seg.rows.push(row);
            }
            seg.all_rows = all_rows;
            seg.filled = true;
            self.segs.slots[i] = seg;
            self.segs.used.push(s);
        }
        &self.segs.slots[i]
    }
}
