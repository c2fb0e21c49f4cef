//! Target lists: the values of a rule's targets, collected once per phase and shared by the
//! rules with the same targets, with their rows in the cross-request memo.

use super::*;

/// The values of a shared target list and their memo rows ([`ROW_NONE`] when not memoised).
#[derive(Default)]
pub(super) struct List {
    pub(super) vals: Vec<Val>,
    pub(super) rows: Vec<u32>,
    /// The memo slots every value of the list is a known miss for (the AND of the rows' miss
    /// bits when the list was collected), one bit per slot, in the words of the list's
    /// `Engine::tlist_words` only (`Rule::memo_word` indexes them); empty when a value has
    /// no row. Bits are only ever added to a row within a transaction, so a set bit stays
    /// true.
    pub(super) all_miss: Vec<u64>,
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
                    list.all_miss.clear();
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
        // (the common case inline: a value already looked up in this transaction)
        match self.memo_rows.get(id as usize) {
            Some(&ROW_UNKNOWN) | None => self.memo_row_lookup(id, val),
            Some(&ROW_NONE) => None,
            Some(&r) => Some(r),
        }
    }

    /// [`Transaction::memo_row_of`] of a value not looked up yet.
    #[inline(never)]
    fn memo_row_lookup(&mut self, id: u32, val: &Rc<[u8]>) -> Option<u32> {
        if id >= MAX_MEMO_ID {
            return None;
        }
        let i = id as usize;
        if i >= self.memo_rows.len() {
            // every id given out so far at once (values 2n, keys 2n+1, n <= next_id), not
            // one value at a time: in wasm each resize is a `memory.fill`, a call out of the
            // guest
            let ids = (self.next_id as usize * 2 + 2).min(MAX_MEMO_ID as usize);
            self.memo_rows.resize(ids.max(i + 1), ROW_UNKNOWN);
        }
        let r = self.eng.memo.borrow_mut().row(val);
        self.memo_rows[i] = r.unwrap_or(ROW_NONE);
        r
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
        let mut all_rows = true;
        for v in &list.vals {
            let row = match v.id {
                NOCACHE => ROW_NONE,
                _ => self.memo_row(v).unwrap_or(ROW_NONE),
            };
            all_rows &= row != ROW_NONE;
            list.rows.push(row);
        }
        if all_rows {
            // (only the words of the slots of the rules using this list: see
            // `Engine::tlist_words`; `known_miss` reads no other)
            let words = self.eng.tlist_words.get(li).map_or(&[][..], |w| &w[..]);
            self.eng
                .memo
                .borrow()
                .and_rows_in(&list.rows, words, &mut list.all_miss);
        }
        self.lists[li] = Some(l.clone());
        self.lists_used.push(li as u32);
        l
    }

    /// Is `rule` known not to match in this phase: its shared target list's values are all
    /// known misses of its memo slot (or it has none)? Then evaluating it would only skip each
    /// value on its memo bit: it is skipped whole. Not with a runtime target exclusion (the
    /// rule's values are then collected for it alone).
    pub(super) fn known_miss(&mut self, rule: &Rule) -> bool {
        let (Some(li), Some(slot)) = (rule.tlist, rule.memo) else {
            return false;
        };
        if !self.excl_by_id.is_empty() || !self.excl_by_tag.is_empty() {
            return false;
        }
        // (a list already collected in this phase is read in place: no call, no `Rc` clone)
        let l = match self.lists.get(li as usize) {
            Some(Some(l)) => l,
            _ => {
                self.list(li, rule);
                match self.lists.get(li as usize) {
                    Some(Some(l)) => l,
                    _ => return false,
                }
            }
        };
        let miss = l
            .all_miss
            .get(rule.memo_word as usize)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0);
        if miss {
            self.eng.memo.borrow_mut().hits += l.vals.len() as u64;
        }
        miss
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
