//! Target lists: the values of a rule's targets, collected once per phase and shared by the
//! rules with the same targets, with their rows in the cross-request memo.

use super::*;

/// The values of a shared target list and their memo rows ([`ROW_NONE`] when not memoised).
#[derive(Default)]
pub(super) struct List {
    pub(super) vals: Vec<Val>,
    pub(super) rows: Vec<u32>,
    /// The memo slots every value of the list is a known miss for (the AND of the rows' miss
    /// bits when the list was collected), one bit per slot; empty when a value has no row.
    /// Bits are only ever added to a row within a transaction, so a set bit stays true.
    pub(super) all_miss: Vec<u64>,
    /// How many values the list has (`vals.len()`, also when they were not collected).
    pub(super) len: usize,
    /// Only `all_miss` and `len` hold: taken from the [`ListMemo`] without collecting the
    /// values (`vals` and `rows` are empty); [`Transaction::list`] collects them when asked.
    pub(super) partial: bool,
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
        LIST_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            for slot in self.lists.drain(..) {
                let Some(mut l) = slot else { continue };
                if let Some(list) = Rc::get_mut(&mut l) {
                    list.vals.clear();
                    list.rows.clear();
                    list.all_miss.clear();
                    list.partial = false;
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
            if !l.partial {
                return l.clone();
            }
        }
        let mut l = pooled_list();
        let list = Rc::get_mut(&mut l).expect("pooled lists are unshared");
        for t in &rule.targets {
            self.collect(t, &rule.excl, &[], &mut list.vals);
        }
        list.len = list.vals.len();
        let mut all_rows = true;
        let mut nocache = false;
        for v in &list.vals {
            let row = match v.id {
                NOCACHE => ROW_NONE,
                _ => self.memo_row(v).unwrap_or(ROW_NONE),
            };
            nocache |= v.id == NOCACHE;
            all_rows &= row != ROW_NONE;
            list.rows.push(row);
        }
        if nocache {
            // (a count value: never the same answer from the list memo)
            self.eng.list_memo.borrow_mut().never(li);
        } else if all_rows {
            self.remember_rows(li, rule, &list.rows);
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
        if let Some(old) = self.lists[li].replace(l.clone()) {
            give_back(old);
        }
        l
    }

    /// The [`List`] of `li` for the known-miss test: its `all_miss` bits from the
    /// [`ListMemo`] when the inputs it reads are ones seen before and its rows are known
    /// (a partial list: nothing collected), else collected by [`Transaction::list`].
    #[inline(never)]
    fn list_for_test(&mut self, li: u32, rule: &Rule) {
        let eng = self.eng.clone();
        let mut lm = eng.list_memo.borrow_mut();
        let gen = eng.memo.borrow().generation();
        if let Some(rows) = self.list_memo_rows(&mut lm, li, rule, gen) {
            let mut l = pooled_list();
            let list = Rc::get_mut(&mut l).expect("pooled lists are unshared");
            list.partial = true;
            list.len = rows.len();
            let words = eng.tlist_words.get(li as usize).map_or(&[][..], |w| &w[..]);
            eng.memo
                .borrow()
                .and_rows_in(rows, words, &mut list.all_miss);
            if let Some(old) = self.lists[li as usize].replace(l) {
                give_back(old);
            }
            return;
        }
        drop(lm);
        self.list(li, rule);
    }

    /// The memo rows of `li`'s values kept in `lm` for the inputs this transaction has now,
    /// if any (the key is left in `lm.key`).
    fn list_memo_rows<'a>(
        &mut self,
        lm: &'a mut ListMemo,
        li: u32,
        rule: &Rule,
        gen: u32,
    ) -> Option<&'a [u32]> {
        if lm.gen != gen {
            lm.entries.clear();
            lm.gen = gen;
        }
        if !self.list_key(lm, li, rule) {
            return None;
        }
        lm.entries.get(&lm.key[..]).map(|r| &r[..])
    }

    /// Builds `lm.key` for list `li` from the versions of the inputs it reads; false when
    /// the list is never kept or one of its inputs is seen for the first time.
    #[inline(never)]
    fn list_key(&mut self, lm: &mut ListMemo, li: u32, rule: &Rule) -> bool {
        let li_ = li as usize;
        if lm.plans.len() <= li_ {
            lm.plans.resize(li_ + 1, Plan::Unknown);
        }
        if matches!(lm.plans[li_], Plan::Unknown) {
            lm.plans[li_] = Plan::of(rule);
        }
        let Plan::Sources(srcs) = &lm.plans[li_] else {
            return false;
        };
        let srcs = srcs.clone();
        lm.key.clear();
        lm.key.push(li);
        for &s in srcs.iter() {
            let v = self.source_ver(lm, s);
            if v & FRESH != 0 {
                return false;
            }
            lm.key.push(v);
        }
        true
    }

    /// Keeps the rows of list `li` (all values memoised) for the next transactions with the
    /// same inputs.
    #[inline(never)]
    fn remember_rows(&mut self, li: usize, rule: &Rule, rows: &[u32]) {
        let eng = self.eng.clone();
        let mut lm = eng.list_memo.borrow_mut();
        let gen = eng.memo.borrow().generation();
        if lm.gen != gen {
            lm.entries.clear();
            lm.gen = gen;
        }
        if !self.list_key(&mut lm, li as u32, rule) || lm.entries.contains_key(&lm.key[..]) {
            return;
        }
        if lm.entries.len() >= LIST_MEMO_MAX {
            lm.entries.clear();
        }
        let key: Box<[u32]> = lm.key[..].into();
        lm.entries.insert(key, rows.into());
    }

    /// The version of input source `s` (see [`Plan`]) in this transaction: equal versions,
    /// equal contents (compared byte for byte). [`FRESH`] set: first seen now.
    fn source_ver(&mut self, lm: &mut ListMemo, s: u16) -> u32 {
        let s = s as usize;
        if self.src_ver.len() <= s {
            self.src_ver.resize(s + 1, VER_UNKNOWN);
        }
        let v = self.src_ver[s];
        if v != VER_UNKNOWN {
            return v;
        }
        let kvs: &[Kv] = match s {
            0 => &self.args_get,
            1 => &self.args_post,
            2 => &self.headers,
            3 => &self.cookies,
            4 => &self.files,
            5 => &self.files_sizes,
            6 => &self.part_headers,
            7 => &self.resp_headers,
            8 => &self.xml_text,
            9 => &self.xml_attrs,
            s => self.scalars[s - SRC_SCALARS].as_slice(),
        };
        let v = lm.version(s, kvs);
        self.src_ver[s] = v;
        v
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
                self.list_for_test(li, rule);
                match self.lists.get(li as usize) {
                    Some(Some(l)) => l,
                    _ => return false,
                }
            }
        };
        let miss = l
            .all_miss
            .get((slot / 64) as usize)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0);
        if miss {
            self.eng.memo.borrow_mut().hits += l.len as u64;
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

/// A list from [`LIST_POOL`] (a new one when it is empty).
fn pooled_list() -> Rc<List> {
    LIST_POOL
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Rc::new(List::default()))
}

/// Empties `l` back into [`LIST_POOL`] (when unshared).
fn give_back(mut l: Rc<List>) {
    if let Some(list) = Rc::get_mut(&mut l) {
        list.vals.clear();
        list.rows.clear();
        list.all_miss.clear();
        list.partial = false;
        LIST_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < LIST_POOL_MAX {
                pool.push(l);
            }
        });
    }
}

/// `src_ver`: not computed in this transaction (since its inputs last changed).
pub(super) const VER_UNKNOWN: u32 = u32::MAX;
/// A source version's flag: the content is seen for the first time.
const FRESH: u32 = 1 << 31;
/// Input sources before the scalars (see [`Plan`]).
const SRC_SCALARS: usize = 10;
/// Contents kept per input source.
const SRC_KEEP: usize = 32;
/// Most lists' rows kept before starting over.
const LIST_MEMO_MAX: usize = 4096;

/// The inputs a shared list reads, or that it is never kept.
#[derive(Clone)]
pub(super) enum Plan {
    /// Not worked out yet.
    Unknown,
    /// The list holds a count (or reads what may change within a phase): never kept.
    Never,
    /// The input sources it reads: 0 `ARGS_GET`, 1 `ARGS_POST`, 2 request headers,
    /// 3 cookies, 4 `FILES`, 5 `FILES_SIZES`, 6 multipart part headers, 7 response headers,
    /// 8 `XML` text, 9 `XML` attributes, 10 + i scalar i.
    Sources(Rc<[u16]>),
}

impl Plan {
    fn of(rule: &Rule) -> Plan {
        let mut srcs: Vec<u16> = Vec::new();
        for t in &rule.targets {
            if t.count {
                return Plan::Never;
            }
            match t.var {
                V::Values(c) | V::Names(c) => match c {
                    Coll::Args => srcs.extend([0, 1]),
                    Coll::ArgsGet => srcs.push(0),
                    Coll::ArgsPost => srcs.push(1),
                    Coll::Headers => srcs.push(2),
                    Coll::Cookies => srcs.push(3),
                    Coll::Files => srcs.push(4),
                    Coll::FilesSizes => srcs.push(5),
                    Coll::PartHeaders => srcs.push(6),
                    Coll::RespHeaders => srcs.push(7),
                    Coll::Empty => {}
                    Coll::Tx | Coll::Persist(_) => return Plan::Never,
                },
                V::XmlText => srcs.push(8),
                V::XmlAttrs => srcs.push(9),
                V::Scalar(i) => srcs.push(SRC_SCALARS as u16 + u16::from(i)),
                _ => return Plan::Never,
            }
        }
        srcs.sort_unstable();
        srcs.dedup();
        Plan::Sources(srcs.into())
    }
}

/// One content of an input source kept by [`ListMemo`].
struct SrcSeen {
    hash: u64,
    kvs: Vec<(Rc<[u8]>, Rc<[u8]>)>,
    ver: u32,
}

/// Shared lists' memo rows kept across transactions (one per engine).
///
/// A shared list's values are a function of the request inputs it reads (its targets are
/// request collections and scalars, never TX or `MATCHED_VAR`; `Engine`'s planning), and a
/// value's memo row a function of its bytes within a memo generation. So when every input a
/// list reads is byte for byte one a past transaction had, its values are that
/// transaction's and their rows too: the known-miss test ANDs those rows' bits without
/// collecting the values. Each input source keeps its last [`SRC_KEEP`] contents with a
/// version number (contents are compared in full, the hash only picks candidates); a list's
/// rows are kept under its number and its sources' versions once every value has a row,
/// and only for contents seen before (a one-off cookie or argument adds no entry). Rows
/// are dropped with the memo's generation; versions are never reused.
#[derive(Default)]
pub struct ListMemo {
    gen: u32,
    next_ver: u32,
    srcs: Vec<Vec<SrcSeen>>,
    /// Per source, where the next new content goes once it is full.
    evict: Vec<usize>,
    plans: Vec<Plan>,
    entries: crate::hash::FxMap<Box<[u32]>, Box<[u32]>>,
    key: Vec<u32>,
}

impl ListMemo {
    /// Marks list `li` as never kept (it holds a count value).
    fn never(&mut self, li: usize) {
        if self.plans.len() <= li {
            self.plans.resize(li + 1, Plan::Unknown);
        }
        self.plans[li] = Plan::Never;
    }

    /// The version of `kvs` as the content of source `s` (0: empty).
    #[inline(never)]
    fn version(&mut self, s: usize, kvs: &[Kv]) -> u32 {
        if kvs.is_empty() {
            return 0;
        }
        let hash = content_hash(kvs);
        if self.srcs.len() <= s {
            self.srcs.resize_with(s + 1, Vec::new);
            self.evict.resize(s + 1, 0);
        }
        let seen = &mut self.srcs[s];
        for e in seen.iter() {
            if e.hash == hash
                && e.kvs.len() == kvs.len()
                && e.kvs.iter().zip(kvs).all(|((k, v), kv)| {
                    (Rc::ptr_eq(k, &kv.key) || **k == *kv.key)
                        && (Rc::ptr_eq(v, &kv.val) || **v == *kv.val)
                })
            {
                return e.ver;
            }
        }
        if self.next_ver >= FRESH - 1 {
            // (versions are never reused: start over)
            self.srcs.iter_mut().for_each(Vec::clear);
            self.entries.clear();
            self.next_ver = 0;
            return self.version(s, kvs);
        }
        self.next_ver += 1;
        let ver = self.next_ver;
        let new = |kvs: &[Kv], mut into: Vec<(Rc<[u8]>, Rc<[u8]>)>| {
            into.clear();
            into.extend(kvs.iter().map(|kv| (kv.key.clone(), kv.val.clone())));
            into
        };
        let seen = &mut self.srcs[s];
        if seen.len() < SRC_KEEP {
            seen.push(SrcSeen {
                hash,
                kvs: new(kvs, Vec::new()),
                ver,
            });
        } else {
            let at = self.evict[s];
            self.evict[s] = (at + 1) % SRC_KEEP;
            let e = &mut seen[at];
            e.kvs = new(kvs, std::mem::take(&mut e.kvs));
            e.hash = hash;
            e.ver = ver;
        }
        ver | FRESH
    }
}

/// A hash of a source's keys and values (picks the contents to compare in full).
fn content_hash(kvs: &[Kv]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = kvs.len() as u64;
    let mut mix = |w: u64| h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    for kv in kvs {
        for b in [&kv.key, &kv.val] {
            mix(b.len() as u64);
            let mut chunks = b.chunks_exact(8);
            for c in &mut chunks {
                mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
            }
            let mut w = 0u64;
            for (i, &x) in chunks.remainder().iter().enumerate() {
                w |= u64::from(x) << (8 * i);
            }
            mix(w);
        }
    }
    h
}
