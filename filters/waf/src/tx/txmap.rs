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
            watch: self.watch.clone(),
            counts: self.counts.clone(),
            masks: Vec::new(),
        }
    }

    /// Reuses `self`'s allocations (the snapshot's map restored into a kept one); the mask
    /// cache stays when the selectors are the same.
    fn clone_from(&mut self, source: &Self) {
        self.map.clone_from(&source.map);
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
        self.counts.iter_mut().for_each(|n| *n = 0);
    }

    /// Empties the map and watches `watch` instead (a kept map for a new transaction).
    pub(super) fn rewatch(&mut self, watch: Rc<[Sel]>) {
        self.map.clear();
        self.counts.clear();
        self.counts.resize(watch.len(), 0);
        if !Rc::ptr_eq(&self.watch, &watch) {
            self.masks.clear();
        }
        self.watch = watch;
    }

    /// An empty map watching `watch`.
    pub(super) fn new(watch: Rc<[Sel]>) -> Self {
        let counts = vec![0; watch.len()];
        TxMap {
            map: FxMap::default(),
            watch,
            counts,
            masks: Vec::new(),
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
        let mut t = TxMap::new(a.clone());
        for round in 0..3 {
            let watch = if round == 1 { b.clone() } else { a.clone() };
            t.rewatch(watch.clone());
            for (i, k) in keys.iter().enumerate() {
                t.insert(Rc::from(k.to_ascii_lowercase().as_bytes()), kv(k));
                if i % 3 == 0 {
                    t.remove(k.to_ascii_lowercase().as_bytes());
                }
            }
            for (s, n) in watch.iter().zip(&t.counts) {
                let want = t.map.values().filter(|v| s.matches(&v.key)).count();
                assert_eq!(*n as usize, want, "round {round}");
            }
        }
    }
}
