//! Target lists: the values of a rule's targets, collected once per phase and shared by the
//! rules with the same targets, with their rows in the cross-request memo.

use super::*;

/// The values of a shared target list and their memo rows ([`ROW_NONE`] when not memoised).
#[derive(Default)]
pub(super) struct List {
    pub(super) vals: Vec<Val>,
    pub(super) rows: Vec<u32>,
}

thread_local! {
    /// Emptied [`List`]s kept for reuse across phases and transactions (a filter VM is one
    /// thread), so collecting a list allocates nothing in the steady state.
    pub(super) static LIST_POOL: std::cell::RefCell<Vec<Rc<List>>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// Most lists kept in [`LIST_POOL`].
pub(super) const LIST_POOL_MAX: usize = 512;

/// `memo_rows`: not looked up yet.
pub(super) const ROW_UNKNOWN: u32 = u32::MAX;
/// `memo_rows`: the value is not memoised (too long, memo full or off).
pub(super) const ROW_NONE: u32 = u32::MAX - 1;
/// Value ids beyond this are not memoised (bounds `memo_rows`).
pub(super) const MAX_MEMO_ID: u32 = 1 << 16;

impl Transaction {
    /// Empties `lists`, keeping their allocations for the next lists ([`LIST_POOL`]).
    pub(super) fn recycle_lists(&mut self) {
        // (the segments and lists of known misses go with them: `misses`)
        self.misses.reset();
        if self.lists_used.is_empty() {
            return;
        }
        LIST_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            // (only the slots filled: most of the engine's lists are not used in a phase)
            for i in self.lists_used.drain(..) {
                let Some(mut l) = self.lists.get_mut(i as usize).and_then(Option::take) else {
                    continue;
                };
                if let Some(list) = Rc::get_mut(&mut l) {
                    list.vals.clear();
                    list.rows.clear();
                    if pool.len() < LIST_POOL_MAX {
                        pool.push(l);
                    }
                }
            }
        });
    }

    /// The memo row of value `v`, looked up once per value per transaction.
    #[inline]
    pub(super) fn memo_row(&mut self, v: &Val) -> Option<u32> {
        self.memo_row_of(v.id, &v.val)
    }

    /// [`Transaction::memo_row`] of the value `val` with id `id`.
    #[inline]
    pub(super) fn memo_row_of(&mut self, id: u32, val: &Rc<[u8]>) -> Option<u32> {
        memo_row_in(&mut self.memo_rows, self.next_id, &self.eng, id, val)
    }

    /// The values of an interned target list, collected once per phase.
    pub(super) fn list(&mut self, li: u32, rule: &Rule) -> Rc<List> {
        let li = li as usize;
        if li >= self.lists.len() {
            self.lists.resize(li + 1, None);
        }
        if let Some(l) = &self.lists[li] {
            return l.clone();
        }
        let mut l = LIST_POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Rc::new(List::default()));
        let list = Rc::get_mut(&mut l).expect("pooled lists are unshared");
        for t in &rule.targets {
            self.collect(t, &rule.excl, &[], &mut list.vals);
        }
        for v in &list.vals {
            let row = match v.id {
                NOCACHE => ROW_NONE,
                _ => self.memo_row(v).unwrap_or(ROW_NONE),
            };
            list.rows.push(row);
        }
        self.lists[li] = Some(l.clone());
        self.lists_used.push(li as u32);
        l
    }

    /// [`Transaction::known_miss`] for a rule without a shared list whose targets are all
    /// literal TX keys (`TX:sql_error_match "@eq 1"`, `TX:paranoia_level`: 36 evaluations a
    /// request): is the value of each key (when set) a known miss of its memo slot? Then
    /// evaluating it would collect those values and skip each on its memo bit: it is skipped
    /// whole, without collecting. Not with a runtime target exclusion or a `!` exclusion.
    pub(super) fn tx_known_miss(&mut self, rule: &Rule) -> bool {
        let Some(slot) = rule.memo else {
            return false;
        };
        if rule.tlist.is_some()
            || !rule.excl.is_empty()
            || !self.excl_by_id.is_empty()
            || !self.excl_by_tag.is_empty()
        {
            return false;
        }
        let literal_key =
            |t: &Target| t.var == V::Values(Coll::Tx) && t.tx_slot != NO_SLOT && !t.count;
        if rule.targets.is_empty() || !rule.targets.iter().all(literal_key) {
            return false;
        }
        let mut values = 0;
        for t in &rule.targets {
            let Some(kv) = self.tx.get_slot(t.tx_slot) else {
                continue;
            };
            let (id, val) = (kv.id, kv.val.clone());
            let Some(row) = self.memo_row_of(id, &val) else {
                return false;
            };
            if !self.eng.memo.borrow().knows_miss(row, slot) {
                return false;
            }
            values += 1;
        }
        self.eng.memo.borrow_mut().hits += values;
        true
    }
}

/// [`Transaction::memo_row_of`] on the transaction's `memo_rows` (`rows`) and `next_id`,
/// for a caller that holds the transaction's collections borrowed.
#[inline]
pub(super) fn memo_row_in(
    rows: &mut Vec<u32>,
    next_id: u32,
    eng: &Engine,
    id: u32,
    val: &Rc<[u8]>,
) -> Option<u32> {
    // (the common case inline: a value already looked up in this transaction)
    match rows.get(id as usize) {
        Some(&ROW_UNKNOWN) | None => memo_row_lookup(rows, next_id, eng, id, val),
        Some(&ROW_NONE) => None,
        Some(&r) => Some(r),
    }
}

/// [`memo_row_in`] of a value not looked up yet.
#[inline(never)]
fn memo_row_lookup(
    rows: &mut Vec<u32>,
    next_id: u32,
    eng: &Engine,
    id: u32,
    val: &Rc<[u8]>,
) -> Option<u32> {
    if id >= MAX_MEMO_ID {
        return None;
    }
    let i = id as usize;
    if i >= rows.len() {
        // every id given out so far at once (values 2n, keys 2n+1, n <= next_id), not
        // one value at a time: in wasm each resize is a `memory.fill`, a call out of the
        // guest
        let ids = (next_id as usize * 2 + 2).min(MAX_MEMO_ID as usize);
        rows.resize(ids.max(i + 1), ROW_UNKNOWN);
    }
    let r = eng.memo.borrow_mut().row(val);
    rows[i] = r.unwrap_or(ROW_NONE);
    r
}
