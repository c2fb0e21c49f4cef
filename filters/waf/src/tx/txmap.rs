//! The TX collection, and for each key selector that rules use on it (`TX:/^header_name_/`,
//! `TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/`, Debian's `TX:/^MSC_/`) how many of its keys match.
//!
//! A target such as `TX:/^MSC_/` walks the whole map (about a hundred CRS settings) to find
//! no key; with the count at zero it walks nothing. The map is private to this module, so
//! every insertion and removal goes through [`TxMap::insert`] and [`TxMap::remove`], which
//! keep the counts exact; values may change in place (keys do not).

use super::*;

/// Is `a` the same selector as `b` (same kind, same bytes or pattern)?
fn same_sel(a: &Sel, b: &Sel) -> bool {
    match (a, b) {
        (Sel::Prefix(x), Sel::Prefix(y)) | (Sel::Contains(x), Sel::Contains(y)) => x == y,
        (Sel::Re(x), Sel::Re(y)) => Rc::ptr_eq(x, y) || x.as_str() == y.as_str(),
        _ => false,
    }
}

/// The TX map with per-selector key counts (see the module doc).
#[derive(Default)]
pub(super) struct TxMap {
    map: FxMap<Rc<[u8]>, Kv>,
    /// The watched selectors (the engine's `Engine::tx_selectors`).
    watch: Rc<[Sel]>,
    /// Per watched selector: keys of `map` it matches.
    counts: Vec<u32>,
}

impl Clone for TxMap {
    fn clone(&self) -> Self {
        TxMap {
            map: self.map.clone(),
            watch: self.watch.clone(),
            counts: self.counts.clone(),
        }
    }

    /// Reuses `self`'s allocations (the snapshot's map restored into a kept one).
    fn clone_from(&mut self, source: &Self) {
        self.map.clone_from(&source.map);
        self.watch = source.watch.clone();
        self.counts.clone_from(&source.counts);
    }
}

impl TxMap {
    /// Empties the map (its capacity stays; see `spare`).
    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.counts.iter_mut().for_each(|n| *n = 0);
    }

    /// Empties the map and watches `watch` instead (a kept map for a new transaction).
    pub(super) fn rewatch(&mut self, watch: Rc<[Sel]>) {
        self.map.clear();
        self.counts.clear();
        self.counts.resize(watch.len(), 0);
        self.watch = watch;
    }

    /// An empty map watching `watch`.
    pub(super) fn new(watch: Rc<[Sel]>) -> Self {
        let counts = vec![0; watch.len()];
        TxMap {
            map: FxMap::default(),
            watch,
            counts,
        }
    }

    /// The map itself (reads).
    pub(super) fn map(&self) -> &FxMap<Rc<[u8]>, Kv> {
        &self.map
    }

    pub(super) fn get(&self, k: &[u8]) -> Option<&Kv> {
        self.map.get(k)
    }

    /// The entry of `k` to change its value (its key stays).
    pub(super) fn get_mut(&mut self, k: &[u8]) -> Option<&mut Kv> {
        self.map.get_mut(k)
    }

    /// Adds or replaces `k`'s entry.
    pub(super) fn insert(&mut self, k: Rc<[u8]>, v: Kv) {
        self.count(&v.key, true);
        if let Some(old) = self.map.insert(k, v) {
            self.count(&old.key, false);
        }
    }

    pub(super) fn remove(&mut self, k: &[u8]) -> Option<Kv> {
        let v = self.map.remove(k)?;
        self.count(&v.key, false);
        Some(v)
    }

    /// Counts an entry's key in (or out of) the selectors it matches. Targets match
    /// selectors against the entry's `Kv::key` (as set, where the map's key is lowercase),
    /// so that is the key counted.
    fn count(&mut self, key: &[u8], add: bool) {
        for (s, n) in self.watch.iter().zip(self.counts.iter_mut()) {
            if s.matches(key) {
                if add {
                    *n += 1;
                } else {
                    *n -= 1;
                }
            }
        }
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

/// The selectors rules use on TX other than whole (`TX`) or one key (`TX:name`): the ones
/// [`TxMap`] counts keys for.
pub fn tx_selectors(rules: &[Rule]) -> Rc<[Sel]> {
    let mut out: Vec<Sel> = Vec::new();
    for r in rules {
        let mut cur = Some(r);
        while let Some(rule) = cur {
            for t in &rule.targets {
                let on_tx = matches!(t.var, V::Values(Coll::Tx) | V::Names(Coll::Tx));
                let some_keys = !matches!(t.sel, Sel::All | Sel::Key(_));
                if on_tx && some_keys && !out.iter().any(|s| same_sel(s, &t.sel)) {
                    out.push(t.sel.clone());
                }
            }
            cur = rule.chain.as_deref();
        }
    }
    out.into()
}
