//! The TX collection, and for each key selector that rules use on it (`TX:/^header_name_/`,
//! `TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/`, Debian's `TX:/^MSC_/`) how many of its keys match.
//!
//! A target such as `TX:/^MSC_/` walks the whole map (about a hundred CRS settings) to find
//! no key; with the count at zero it walks nothing. The map is private to this module, so
//! every insertion and removal goes through [`TxMap::insert`] and [`TxMap::remove`], which
//! keep the counts exact; values may change in place (keys do not).
//!
//! Keys that rules name literally (`TX:anomaly_score`, `setvar:tx.sql_error_match=1`) have a
//! slot, numbered at configure ([`tx_slots`]; `Target::tx_slot`, `SetVar::slot`): the entry
//! of a slotted key is found by index ([`TxMap::get_slot`]), without hashing its bytes. The
//! hash map still holds every key (it is what a target over the whole collection or a key
//! selector walks, in the same order as before slots existed); it maps a key to its entry.

use super::*;

/// "No slot": a key (or a target, a `setvar`) that is looked up by its bytes.
pub const NO_SLOT: u32 = u32::MAX;

/// Is `a` the same selector as `b` (same kind, same bytes or pattern)?
fn same_sel(a: &Sel, b: &Sel) -> bool {
    match (a, b) {
        (Sel::Prefix(x), Sel::Prefix(y)) | (Sel::Contains(x), Sel::Contains(y)) => x == y,
        (Sel::Re(x), Sel::Re(y)) => Rc::ptr_eq(x, y) || x.as_str() == y.as_str(),
        _ => false,
    }
}

/// One entry of [`TxMap`]: the value, the map's key (lowercase) and the key's slot.
#[derive(Clone)]
struct Slotted {
    key: Rc<[u8]>,
    kv: Kv,
    slot: u32,
}

/// The TX map with per-selector key counts and slots (see the module doc).
#[derive(Default)]
pub(super) struct TxMap {
    /// Key (lowercase) -> index in `entries`.
    map: FxMap<Rc<[u8]>, u32>,
    /// The entries, dense (a removal moves the last one into the hole).
    entries: Vec<Slotted>,
    /// Slot -> index in `entries`, or [`NO_SLOT`].
    by_slot: Vec<u32>,
    /// The engine's key -> slot table ([`tx_slots`]).
    slots: Rc<FxMap<Rc<[u8]>, u32>>,
    /// The watched selectors (the engine's `Engine::tx_selectors`).
    watch: Rc<[Sel]>,
    /// Per watched selector: keys of `map` it matches.
    counts: Vec<u32>,
    /// Recently counted keys and which watched selectors they match (bit `i`: `watch[i]`),
    /// direct-mapped on the key's FxHash and trusted only for equal bytes. The same TX keys
    /// are set on every request (`anomaly_score_pl1`, `sql_injection_score`, ...): their
    /// selectors (regexes among them) run once, not on every insertion. Kept across
    /// transactions with the map (`spare`) while it watches the same selectors.
    masks: Vec<Option<(Rc<[u8]>, u64)>>,
}

/// Entries of [`TxMap`]'s mask cache (a power of two).
const MASKS: usize = 256;
/// Longest key [`TxMap`]'s mask cache keeps (it holds at most `MASKS` of them).
const MASK_KEY_MAX: usize = 128;

impl Clone for TxMap {
    fn clone(&self) -> Self {
        TxMap {
            map: self.map.clone(),
            entries: self.entries.clone(),
            by_slot: self.by_slot.clone(),
            slots: self.slots.clone(),
            watch: self.watch.clone(),
            counts: self.counts.clone(),
            masks: Vec::new(),
        }
    }

    /// Reuses `self`'s allocations (the snapshot's map restored into a kept one); the mask
    /// cache stays when the selectors are the same.
    fn clone_from(&mut self, source: &Self) {
        self.map.clone_from(&source.map);
        self.entries.clone_from(&source.entries);
        self.by_slot.clone_from(&source.by_slot);
        if !Rc::ptr_eq(&self.slots, &source.slots) {
            self.slots = source.slots.clone();
        }
        if !Rc::ptr_eq(&self.watch, &source.watch) {
            self.masks.clear();
        }
        self.watch = source.watch.clone();
        self.counts.clone_from(&source.counts);
    }
}

impl TxMap {
    /// Empties the map (its capacity stays; see `spare`).
    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.entries.clear();
        self.by_slot.iter_mut().for_each(|i| *i = NO_SLOT);
        self.counts.iter_mut().for_each(|n| *n = 0);
    }

    /// Empties the map and watches `watch` with the key slots `slots` instead (a kept map
    /// for a new transaction).
    pub(super) fn rewatch(&mut self, watch: Rc<[Sel]>, slots: Rc<FxMap<Rc<[u8]>, u32>>) {
        self.map.clear();
        self.entries.clear();
        self.by_slot.clear();
        self.by_slot.resize(slots.len(), NO_SLOT);
        self.slots = slots;
        self.counts.clear();
        self.counts.resize(watch.len(), 0);
        if !Rc::ptr_eq(&self.watch, &watch) {
            self.masks.clear();
        }
        self.watch = watch;
    }

    /// An empty map watching `watch`, with the key slots `slots`.
    pub(super) fn new(watch: Rc<[Sel]>, slots: Rc<FxMap<Rc<[u8]>, u32>>) -> Self {
        let counts = vec![0; watch.len()];
        TxMap {
            map: FxMap::default(),
            entries: Vec::new(),
            by_slot: vec![NO_SLOT; slots.len()],
            slots,
            watch,
            counts,
            masks: Vec::new(),
        }
    }

    /// Every entry, in the map's order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Kv> + '_ {
        self.map.values().map(|&i| &self.entries[i as usize].kv)
    }

    pub(super) fn get(&self, k: &[u8]) -> Option<&Kv> {
        self.map.get(k).map(|&i| &self.entries[i as usize].kv)
    }

    /// The entry of the key with slot `slot` ([`NO_SLOT`]: none).
    #[inline]
    pub(super) fn get_slot(&self, slot: u32) -> Option<&Kv> {
        match self.by_slot.get(slot as usize) {
            Some(&i) if i != NO_SLOT => Some(&self.entries[i as usize].kv),
            _ => None,
        }
    }

    /// The entry of `k` (slot `slot`, or [`NO_SLOT`] to look it up by its bytes) to change
    /// its value (its key stays).
    pub(super) fn get_mut(&mut self, k: &[u8], slot: u32) -> Option<&mut Kv> {
        let i = match self.by_slot.get(slot as usize) {
            Some(&i) => i,
            None => *self.map.get(k)?,
        };
        self.entries.get_mut(i as usize).map(|e| &mut e.kv)
    }

    /// Adds or replaces `k`'s entry.
    pub(super) fn insert(&mut self, k: Rc<[u8]>, v: Kv) {
        self.insert_slot(k, NO_SLOT, v);
    }

    /// [`TxMap::insert`] of a key whose slot is known (`setvar:tx.name`); [`NO_SLOT`]: not
    /// known, looked up.
    pub(super) fn insert_slot(&mut self, k: Rc<[u8]>, slot: u32, v: Kv) {
        self.count(&v.key, true);
        if let Some(&i) = self.map.get(&k) {
            let old = std::mem::replace(&mut self.entries[i as usize].kv, v);
            self.count(&old.key, false);
            return;
        }
        let i = self.entries.len() as u32;
        let slot = match slot {
            NO_SLOT => self.slots.get(&k).copied().unwrap_or(NO_SLOT),
            s => s,
        };
        if let Some(s) = self.by_slot.get_mut(slot as usize) {
            *s = i;
        }
        self.map.insert(k.clone(), i);
        self.entries.push(Slotted {
            key: k,
            kv: v,
            slot,
        });
    }

    pub(super) fn remove(&mut self, k: &[u8]) -> Option<Kv> {
        let i = self.map.remove(k)? as usize;
        let gone = self.entries.swap_remove(i);
        if let Some(s) = self.by_slot.get_mut(gone.slot as usize) {
            *s = NO_SLOT;
        }
        if let Some(moved) = self.entries.get(i) {
            // (the last entry moved into the hole: its index changes)
            if let Some(s) = self.by_slot.get_mut(moved.slot as usize) {
                *s = i as u32;
            }
            if let Some(at) = self.map.get_mut(&moved.key) {
                *at = i as u32;
            }
        }
        self.count(&gone.kv.key, false);
        Some(gone.kv)
    }

    /// Counts an entry's key in (or out of) the selectors it matches. Targets match
    /// selectors against the entry's `Kv::key` (as set, where the map's key is lowercase),
    /// so that is the key counted.
    fn count(&mut self, key: &Rc<[u8]>, add: bool) {
        if self.watch.is_empty() {
            return;
        }
        if self.watch.len() > 64 {
            // (more selectors than mask bits: test each)
            for (s, n) in self.watch.iter().zip(self.counts.iter_mut()) {
                if s.matches(key) {
                    *n = if add { *n + 1 } else { *n - 1 };
                }
            }
            return;
        }
        let mask = self.mask(key);
        for (i, n) in self.counts.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *n = if add { *n + 1 } else { *n - 1 };
            }
        }
    }

    /// Which watched selectors (at most 64) match `key`: bit `i` for `watch[i]`.
    fn mask(&mut self, key: &Rc<[u8]>) -> u64 {
        if key.len() > MASK_KEY_MAX {
            // (not kept: keys with a request's variable names in them can be long)
            return selector_mask(&self.watch, key);
        }
        let mut h = crate::hash::Fx::default();
        std::hash::Hasher::write(&mut h, key);
        let at = (std::hash::Hasher::finish(&h) >> (64 - MASKS.trailing_zeros())) as usize;
        if let Some(Some((k, m))) = self.masks.get(at) {
            if **k == **key {
                return *m;
            }
        }
        let m = selector_mask(&self.watch, key);
        if self.masks.is_empty() {
            self.masks = vec![None; MASKS];
        }
        self.masks[at] = Some((key.clone(), m));
        m
    }

    /// Can a key of the map match `sel`? `false` only for a watched selector that matches
    /// no key now; `true` for any other selector.
    pub(super) fn may_hold(&self, sel: &Sel) -> bool {
        match self.watch.iter().position(|w| same_sel(w, sel)) {
            Some(i) => self.counts[i] > 0,
            None => true,
        }
    }
}

/// Which of `watch` (at most 64) match `key`: bit `i` for `watch[i]`.
fn selector_mask(watch: &[Sel], key: &[u8]) -> u64 {
    watch
        .iter()
        .enumerate()
        .filter(|(_, s)| s.matches(key))
        .fold(0, |m, (i, _)| m | (1 << i))
}

/// The selectors rules use on TX other than whole (`TX`) or one key (`TX:name`): the ones
/// [`TxMap`] counts keys for.
pub fn tx_selectors(rules: &[Rule]) -> Rc<[Sel]> {
    let mut out: Vec<Sel> = Vec::new();
    for rule in rules.iter().flat_map(Rule::links) {
        for t in &rule.targets {
            let on_tx = matches!(t.var, V::Values(Coll::Tx) | V::Names(Coll::Tx));
            let some_keys = !matches!(t.sel, Sel::All | Sel::Key(_));
            if on_tx && some_keys && !out.iter().any(|s| same_sel(s, &t.sel)) {
                out.push(t.sel.clone());
            }
        }
    }
    out.into()
}

/// Numbers the TX keys that rules name literally: the keys of `TX:key` targets (also
/// `&TX:key`, `TX_NAMES`-style `Names(Tx)`) and of `setvar:tx.key` with a literal name; sets
/// `Target::tx_slot` and `SetVar::slot`. Returns the key (lowercase) -> slot table.
pub fn tx_slots(rules: &mut [Rule]) -> Rc<FxMap<Rc<[u8]>, u32>> {
    let mut slots: FxMap<Rc<[u8]>, u32> = FxMap::default();
    let mut slot_of = |k: &[u8]| -> u32 {
        if let Some(&s) = slots.get(k) {
            return s;
        }
        let s = slots.len() as u32;
        slots.insert(Rc::from(k), s);
        s
    };
    for r in rules {
        let mut cur = Some(r);
        while let Some(rule) = cur {
            for t in &mut rule.targets {
                if let (V::Values(Coll::Tx) | V::Names(Coll::Tx), Sel::Key(k)) = (t.var, &t.sel) {
                    t.tx_slot = slot_of(k);
                }
            }
            for sv in &mut rule.setvars {
                if sv.coll == SetColl::Tx {
                    if let Some(l) = sv.name.literal() {
                        sv.slot = slot_of(&l.to_ascii_lowercase());
                    }
                }
            }
            // (`%{tx.key}` in operator arguments, setvar names and values, msg, logdata)
            let setvar_macros = rule.setvars.iter_mut().flat_map(|sv| {
                let op = match &mut sv.op {
                    SetOp::Del => None,
                    SetOp::Set(m)
                    | SetOp::Add(m)
                    | SetOp::Sub(m)
                    | SetOp::Init(m)
                    | SetOp::Expire(m)
                    | SetOp::Deprecate(m) => Some(m),
                };
                std::iter::once(&mut sv.name).chain(op)
            });
            let macros = rule
                .op
                .macro_arg_mut()
                .into_iter()
                .chain(setvar_macros)
                .chain(rule.msg.as_mut())
                .chain(rule.logdata.as_mut());
            for m in macros {
                for p in &mut m.parts {
                    if let Part::Var(V::Values(Coll::Tx), Some(k), slot) = p {
                        *slot = slot_of(k);
                    }
                }
            }
            cur = rule.chain.as_deref_mut();
        }
    }
    Rc::new(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str) -> Kv {
        Kv {
            key: Rc::from(k.as_bytes()),
            val: Rc::from(&b"1"[..]),
            id: 0,
        }
    }

    /// The counts with the mask cache are the counts of every selector tested on every
    /// change, for keys that share a cache entry, and after the selectors change.
    #[test]
    fn cached_masks_count_as_the_selectors_do() {
        let re = |p: &str| Sel::Re(Rc::new(regex::bytes::Regex::new(p).unwrap()));
        let a: Rc<[Sel]> = vec![
            Sel::Prefix(b"header_name_".to_vec()),
            Sel::Contains(b"score".to_vec()),
            re("(?i)^msc_"),
            re("multipart_headers_content_types_*"),
        ]
        .into();
        let b: Rc<[Sel]> = vec![Sel::Contains(b"pl1".to_vec())].into();
        let mut keys: Vec<String> = [
            "header_name_x",
            "HEADER_NAME_y",
            "anomaly_score_pl1",
            "msc_pcre",
            "MSC_x",
            "0",
            "multipart_headers_content_types",
            "a\0",
            "a",
            "",
            "score\u{2019}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        keys.extend((0..600).map(|i| format!("k{i}_score")));
        keys.push(format!("{}score", "x".repeat(MASK_KEY_MAX)));
        keys.push(format!("header_name_{}", "y".repeat(MASK_KEY_MAX)));
        let mut t = TxMap::new(a.clone(), Rc::default());
        for round in 0..3 {
            let watch = if round == 1 { b.clone() } else { a.clone() };
            t.rewatch(watch.clone(), Rc::default());
            for (i, k) in keys.iter().enumerate() {
                t.insert(Rc::from(k.to_ascii_lowercase().as_bytes()), kv(k));
                if i % 3 == 0 {
                    t.remove(k.to_ascii_lowercase().as_bytes());
                }
            }
            for (s, n) in watch.iter().zip(&t.counts) {
                let want = t.values().filter(|v| s.matches(&v.key)).count();
                assert_eq!(*n as usize, want, "round {round}");
            }
        }
    }

    /// A slotted key's entry, found by index, is the one its bytes find, through insertions,
    /// replacements and removals (which move entries), a clear and a restore.
    #[test]
    fn slots_find_what_keys_find() {
        let names = ["a", "bb", "ccc", "d", "e_score"];
        let slots: FxMap<Rc<[u8]>, u32> = names
            .iter()
            .enumerate()
            .map(|(i, k)| (Rc::from(k.as_bytes()), i as u32))
            .collect();
        let slots = Rc::new(slots);
        let watch: Rc<[Sel]> = vec![Sel::Contains(b"score".to_vec())].into();
        let mut t = TxMap::new(watch.clone(), slots.clone());
        let check = |t: &TxMap| {
            for (i, k) in names.iter().enumerate() {
                let a = t.get(k.as_bytes()).map(|kv| kv.val.clone());
                let b = t.get_slot(i as u32).map(|kv| kv.val.clone());
                assert_eq!(a, b, "{k}");
            }
            assert_eq!(t.values().count(), t.map.len());
        };
        let ops: &[(&str, bool)] = &[
            ("a", true),
            ("x", true),
            ("bb", true),
            ("e_score", true),
            ("a", false),
            ("ccc", true),
            ("x", false),
            ("a", true),
            ("bb", true),
            ("e_score", false),
            ("d", true),
            ("zz", true),
            ("ccc", false),
        ];
        for (n, (k, add)) in ops.iter().enumerate() {
            if *add {
                let v = Kv {
                    key: Rc::from(k.as_bytes()),
                    val: Rc::from(n.to_string().as_bytes()),
                    id: n as u32,
                };
                t.insert(Rc::from(k.as_bytes()), v);
            } else {
                t.remove(k.as_bytes());
            }
            check(&t);
        }
        if let Some(kv) = t.get_mut(b"d", 3) {
            kv.val = Rc::from(&b"changed"[..]);
        }
        assert_eq!(t.get(b"d").map(|kv| &*kv.val), Some(&b"changed"[..]));
        let mut u = TxMap::new(watch.clone(), slots.clone());
        u.clone_from(&t);
        check(&u);
        t.clear();
        check(&t);
        assert!(t.get_slot(3).is_none());
        t.clone_from(&u);
        check(&t);
        assert_eq!(t.get_slot(3).map(|kv| &*kv.val), Some(&b"changed"[..]));
    }
}
