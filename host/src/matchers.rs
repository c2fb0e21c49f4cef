//! Host-side matchers offered to filters as foreign functions: regex sets
//! (`regex::bytes`) and phrase sets (Aho-Corasick, ASCII case-insensitive).
//!
//! A filter compiles a set once (at configure time) and gets a handle, valid for its VM.
//! Compiled sets are cached host-wide by the SHA-256 of their encoded arguments and held
//! weakly, so the VMs of every worker thread running one policy share one compiled set,
//! and a set no VM holds any more is freed.
//!
//! Wire format (all integers u32 little-endian): see `docs/ABI.md` and
//! [`super::abi`]'s `foreign` module; the functions here take and return those bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use sha2::{Digest, Sha256};

/// Longest pattern or phrase, bytes.
pub const MAX_PATTERN_BYTES: usize = 64 << 10;
/// Most patterns in one regex set.
pub const MAX_REGEX_PATTERNS: usize = 10_000;
/// Most phrases in one phrase set.
pub const MAX_PM_PHRASES: usize = 100_000;
/// Most bytes of phrases in one phrase set.
pub const MAX_PM_BYTES: usize = 8 << 20;
/// Compiled-program and lazy-DFA cache size limit of one regex set (each).
pub const REGEX_SIZE_LIMIT: usize = 64 << 20;
/// Longest input a matcher accepts, bytes.
pub const MAX_INPUT_BYTES: usize = 16 << 20;
/// Most handles one VM may hold.
pub const MAX_HANDLES: usize = 4096;

/// Why a matcher call failed; every case maps to `BAD_ARGUMENT` for the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The arguments do not follow the encoding.
    #[error("malformed arguments: {0}")]
    Malformed(&'static str),
    /// A limit was exceeded.
    #[error("over limit: {0}")]
    Limit(&'static str),
    /// A pattern did not compile.
    #[error("pattern {index} does not compile: {reason}")]
    Pattern {
        /// Index of the pattern in the set.
        index: usize,
        /// The compiler's message.
        reason: String,
    },
    /// No such handle, or a handle of the other kind.
    #[error("unknown handle {0}")]
    Handle(u32),
}

/// Byte range of a capture group, `None` when the group did not take part.
pub type Group = Option<(usize, usize)>;

/// A compiled regex set and, compiled on first use, each pattern alone (for captures).
pub struct RegexMatcher {
    set: RegexSet,
    singles: Vec<OnceLock<Option<Regex>>>,
}

/// A compiled phrase set.
pub struct PmMatcher {
    ac: Option<AhoCorasick>,
    /// Index in the caller's list of each automaton pattern (empty phrases are skipped).
    index: Vec<u32>,
}

enum Handle {
    Regex(Arc<RegexMatcher>),
    Pm(Arc<PmMatcher>),
}

/// The matchers one VM holds, by handle (handle `n` is slot `n - 1`).
#[derive(Default)]
pub struct Handles {
    slots: Vec<Handle>,
}

type Cache<T> = Mutex<HashMap<[u8; 32], Weak<T>>>;

/// The host-wide cache of one matcher type.
trait Cached: Sized + Send + Sync + 'static {
    fn cache() -> &'static Cache<Self>;
}

impl Cached for RegexMatcher {
    fn cache() -> &'static Cache<Self> {
        static C: OnceLock<Cache<RegexMatcher>> = OnceLock::new();
        C.get_or_init(Default::default)
    }
}

impl Cached for PmMatcher {
    fn cache() -> &'static Cache<Self> {
        static C: OnceLock<Cache<PmMatcher>> = OnceLock::new();
        C.get_or_init(Default::default)
    }
}

/// Returns the cached value for `key`, or builds, caches and returns it.
fn cached<T: Cached>(
    tag: u8,
    args: &[u8],
    build: impl FnOnce() -> Result<T, MatchError>,
) -> Result<Arc<T>, MatchError> {
    let mut h = Sha256::new();
    h.update([tag]);
    h.update(args);
    let key: [u8; 32] = h.finalize().into();
    let map = T::cache();
    if let Some(hit) = map
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .and_then(Weak::upgrade)
    {
        return Ok(hit);
    }
    // Built outside the lock: compiling a large set takes a while and other VMs may be
    // compiling other sets. Two VMs racing on one set both build; one copy wins the slot.
    let built = Arc::new(build()?);
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|_, w| w.strong_count() > 0);
    if let Some(hit) = m.get(&key).and_then(Weak::upgrade) {
        return Ok(hit);
    }
    m.insert(key, Arc::downgrade(&built));
    Ok(built)
}

/// Number of live compiled sets in the host-wide cache (regex, phrase).
pub fn cached_counts() -> (usize, usize) {
    let r = RegexMatcher::cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|w| w.strong_count() > 0)
        .count();
    let p = PmMatcher::cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|w| w.strong_count() > 0)
        .count();
    (r, p)
}

/// Reads a u32 LE at the front of `b` and advances it.
fn take_u32(b: &mut &[u8]) -> Result<u32, MatchError> {
    if b.len() < 4 {
        return Err(MatchError::Malformed("truncated integer"));
    }
    let (head, rest) = b.split_at(4);
    *b = rest;
    Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")))
}

/// Decodes `count, count × (len, bytes)` with the given caps.
fn decode_list(mut b: &[u8], max_items: usize, max_total: usize) -> Result<Vec<&[u8]>, MatchError> {
    let count = take_u32(&mut b)? as usize;
    if count > max_items {
        return Err(MatchError::Limit("too many patterns"));
    }
    let mut out = Vec::with_capacity(count);
    let mut total = 0usize;
    for _ in 0..count {
        let len = take_u32(&mut b)? as usize;
        if len > MAX_PATTERN_BYTES {
            return Err(MatchError::Limit("pattern longer than 64 KiB"));
        }
        if b.len() < len {
            return Err(MatchError::Malformed("truncated pattern"));
        }
        total += len;
        if total > max_total {
            return Err(MatchError::Limit("patterns too large in total"));
        }
        let (p, rest) = b.split_at(len);
        out.push(p);
        b = rest;
    }
    if !b.is_empty() {
        return Err(MatchError::Malformed("trailing bytes"));
    }
    Ok(out)
}

/// Encodes a list the way `sluice.regex.compile` and `sluice.pm.compile` take it.
pub fn encode_list<P: AsRef<[u8]>>(items: &[P]) -> Vec<u8> {
    let mut out = (items.len() as u32).to_le_bytes().to_vec();
    for p in items {
        out.extend_from_slice(&(p.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(p.as_ref());
    }
    out
}

fn regex_builder(p: &str) -> RegexBuilder {
    let mut b = RegexBuilder::new(p);
    b.size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT);
    b
}

impl RegexMatcher {
    fn compile(args: &[u8]) -> Result<RegexMatcher, MatchError> {
        let list = decode_list(args, MAX_REGEX_PATTERNS, usize::MAX)?;
        if list.is_empty() {
            return Err(MatchError::Malformed("empty pattern set"));
        }
        let mut pats = Vec::with_capacity(list.len());
        for (index, p) in list.iter().enumerate() {
            let s = std::str::from_utf8(p).map_err(|_| MatchError::Pattern {
                index,
                reason: "not UTF-8".into(),
            })?;
            pats.push(s);
        }
        let set = RegexSetBuilder::new(&pats)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                // Name the culprit: compile each alone until one fails.
                let index = pats
                    .iter()
                    .position(|p| regex_builder(p).build().is_err())
                    .unwrap_or(0);
                MatchError::Pattern {
                    index,
                    reason: e.to_string(),
                }
            })?;
        Ok(RegexMatcher {
            singles: (0..pats.len()).map(|_| OnceLock::new()).collect(),
            set,
        })
    }

    /// Indexes of the patterns that match somewhere in `input`, ascending.
    pub fn matches(&self, input: &[u8]) -> Vec<u32> {
        self.set.matches(input).iter().map(|i| i as u32).collect()
    }

    /// Byte offsets of each group of the leftmost-first match of pattern `index`
    /// (`None` for groups that did not take part), or `None` when it does not match.
    pub fn captures(&self, index: usize, input: &[u8]) -> Result<Option<Vec<Group>>, MatchError> {
        let slot = self
            .singles
            .get(index)
            .ok_or(MatchError::Malformed("pattern index out of range"))?;
        let re = slot
            .get_or_init(|| regex_builder(&self.set.patterns()[index]).build().ok())
            .as_ref()
            .ok_or(MatchError::Limit("pattern too large to compile alone"))?;
        Ok(re
            .captures(input)
            .map(|c| c.iter().map(|m| m.map(|m| (m.start(), m.end()))).collect()))
    }
}

impl PmMatcher {
    fn compile(args: &[u8]) -> Result<PmMatcher, MatchError> {
        let list = decode_list(args, MAX_PM_PHRASES, MAX_PM_BYTES)?;
        let mut index = Vec::new();
        let mut phrases = Vec::new();
        for (i, p) in list.iter().enumerate() {
            if !p.is_empty() {
                index.push(i as u32);
                phrases.push(*p);
            }
        }
        let ac = if phrases.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&phrases)
                    .map_err(|e| MatchError::Pattern {
                        index: 0,
                        reason: e.to_string(),
                    })?,
            )
        };
        Ok(PmMatcher { ac, index })
    }

    /// The first match scanning left to right (the one that ends earliest): phrase
    /// index, start, end.
    pub fn find(&self, input: &[u8]) -> Option<(u32, usize, usize)> {
        let m = self.ac.as_ref()?.find(input)?;
        Some((self.index[m.pattern().as_usize()], m.start(), m.end()))
    }
}

impl Handles {
    fn push(&mut self, h: Handle) -> Result<u32, MatchError> {
        if self.slots.len() >= MAX_HANDLES {
            return Err(MatchError::Limit("too many handles in this VM"));
        }
        self.slots.push(h);
        Ok(self.slots.len() as u32)
    }

    fn regex(&self, handle: u32) -> Result<&RegexMatcher, MatchError> {
        match self.slots.get((handle as usize).wrapping_sub(1)) {
            Some(Handle::Regex(r)) => Ok(r),
            _ => Err(MatchError::Handle(handle)),
        }
    }

    fn pm(&self, handle: u32) -> Result<&PmMatcher, MatchError> {
        match self.slots.get((handle as usize).wrapping_sub(1)) {
            Some(Handle::Pm(p)) => Ok(p),
            _ => Err(MatchError::Handle(handle)),
        }
    }

    /// `sluice.regex.compile`: `count, count × (len, pattern)` -> `handle`.
    pub fn regex_compile(&mut self, args: &[u8]) -> Result<Vec<u8>, MatchError> {
        if self.slots.len() >= MAX_HANDLES {
            return Err(MatchError::Limit("too many handles in this VM"));
        }
        let m = cached(b'r', args, || RegexMatcher::compile(args))?;
        Ok(self.push(Handle::Regex(m))?.to_le_bytes().to_vec())
    }

    /// `sluice.regex.match`: `handle, input` -> `n, n × index`.
    pub fn regex_match(&self, mut args: &[u8]) -> Result<Vec<u8>, MatchError> {
        let h = take_u32(&mut args)?;
        let m = self.regex(h)?;
        check_input(args)?;
        let hits = m.matches(args);
        let mut out = Vec::with_capacity(4 + 4 * hits.len());
        out.extend_from_slice(&(hits.len() as u32).to_le_bytes());
        for i in hits {
            out.extend_from_slice(&i.to_le_bytes());
        }
        Ok(out)
    }

    /// `sluice.regex.captures`: `handle, index, input` -> `n, n × (start, end)`.
    pub fn regex_captures(&self, mut args: &[u8]) -> Result<Vec<u8>, MatchError> {
        let h = take_u32(&mut args)?;
        let index = take_u32(&mut args)? as usize;
        let m = self.regex(h)?;
        check_input(args)?;
        let groups = m.captures(index, args)?.unwrap_or_default();
        let mut out = Vec::with_capacity(4 + 8 * groups.len());
        out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
        for g in groups {
            let (s, e) = g.map_or((u32::MAX, u32::MAX), |(s, e)| (s as u32, e as u32));
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
        Ok(out)
    }

    /// `sluice.pm.compile`: `count, count × (len, phrase)` -> `handle`.
    pub fn pm_compile(&mut self, args: &[u8]) -> Result<Vec<u8>, MatchError> {
        if self.slots.len() >= MAX_HANDLES {
            return Err(MatchError::Limit("too many handles in this VM"));
        }
        let m = cached(b'p', args, || PmMatcher::compile(args))?;
        Ok(self.push(Handle::Pm(m))?.to_le_bytes().to_vec())
    }

    /// `sluice.pm.match`: `handle, input` -> `found, index, start, end`.
    pub fn pm_match(&self, mut args: &[u8]) -> Result<Vec<u8>, MatchError> {
        let h = take_u32(&mut args)?;
        let m = self.pm(h)?;
        check_input(args)?;
        let (found, i, s, e) = match m.find(args) {
            Some((i, s, e)) => (1u32, i, s as u32, e as u32),
            None => (0, 0, 0, 0),
        };
        let mut out = Vec::with_capacity(16);
        for v in [found, i, s, e] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(out)
    }
}

fn check_input(input: &[u8]) -> Result<(), MatchError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(MatchError::Limit("input longer than 16 MiB"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32s(b: &[u8]) -> Vec<u32> {
        b.chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn with_handle(h: u32, input: &[u8]) -> Vec<u8> {
        let mut a = h.to_le_bytes().to_vec();
        a.extend_from_slice(input);
        a
    }

    #[test]
    fn regex_set_reports_every_matching_pattern() {
        let mut hs = Handles::default();
        let h = hs
            .regex_compile(&encode_list(&[
                r"(?sm-u)^b$",
                r"(?i)select\s+\w+",
                r"(?-u)\xe9",
                "zzz",
            ]))
            .unwrap();
        assert_eq!(u32s(&h), vec![1]);
        let out = hs
            .regex_match(&with_handle(1, b"a\nb\nSELECT x \xe9"))
            .unwrap();
        assert_eq!(u32s(&out), vec![3, 0, 1, 2]);
        let out = hs.regex_match(&with_handle(1, b"nothing")).unwrap();
        assert_eq!(u32s(&out), vec![0]);
    }

    #[test]
    fn captures_give_offsets_and_absent_groups() {
        let mut hs = Handles::default();
        hs.regex_compile(&encode_list(&["(a+)(x)?(b)", "q"]))
            .unwrap();
        let mut args = 1u32.to_le_bytes().to_vec();
        args.extend_from_slice(&0u32.to_le_bytes());
        args.extend_from_slice(b"--aab");
        let out = u32s(&hs.regex_captures(&args).unwrap());
        assert_eq!(out, vec![4, 2, 5, 2, 4, u32::MAX, u32::MAX, 4, 5]);
        // No match: n = 0. Index out of range: error.
        let mut args = 1u32.to_le_bytes().to_vec();
        args.extend_from_slice(&1u32.to_le_bytes());
        args.extend_from_slice(b"--aab");
        assert_eq!(u32s(&hs.regex_captures(&args).unwrap()), vec![0]);
        let mut args = 1u32.to_le_bytes().to_vec();
        args.extend_from_slice(&7u32.to_le_bytes());
        assert!(hs.regex_captures(&args).is_err());
    }

    #[test]
    fn pm_is_ascii_case_insensitive_and_reports_the_earliest_end() {
        let mut hs = Handles::default();
        let h = hs
            .pm_compile(&encode_list(&["", "/etc/passwd", "passwd", "cmd.exe"]))
            .unwrap();
        let h = u32s(&h)[0];
        let out = u32s(&hs.pm_match(&with_handle(h, b"GET /ETC/PASSWD")).unwrap());
        assert_eq!(out, vec![1, 1, 4, 15]);
        let out = u32s(&hs.pm_match(&with_handle(h, b"a CMD.EXE b")).unwrap());
        assert_eq!(out, vec![1, 3, 2, 9]);
        let out = u32s(&hs.pm_match(&with_handle(h, b"harmless")).unwrap());
        assert_eq!(out, vec![0, 0, 0, 0]);
    }

    #[test]
    fn compiled_sets_are_shared_across_vms() {
        let args = encode_list(&["shared-set-test-[0-9]+"]);
        let mut a = Handles::default();
        let mut b = Handles::default();
        a.regex_compile(&args).unwrap();
        b.regex_compile(&args).unwrap();
        let (ra, rb) = (a.regex(1).unwrap(), b.regex(1).unwrap());
        assert!(std::ptr::eq(ra, rb), "one compiled set for both VMs");
        drop(a);
        drop(b);
        // Nobody holds it any more: the next compile builds afresh.
        let mut c = Handles::default();
        c.regex_compile(&args).unwrap();
        assert!(cached_counts().0 >= 1);
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let mut hs = Handles::default();
        // Truncated, trailing, empty set, bad pattern, non-UTF-8.
        assert!(matches!(
            hs.regex_compile(&[1, 0]),
            Err(MatchError::Malformed(_))
        ));
        let mut t = encode_list(&["a"]);
        t.push(0);
        assert!(hs.regex_compile(&t).is_err());
        let mut t = encode_list(&["abc"]);
        t.truncate(t.len() - 1);
        assert!(hs.regex_compile(&t).is_err());
        assert!(hs.regex_compile(&encode_list::<&str>(&[])).is_err());
        assert_eq!(
            hs.regex_compile(&encode_list(&["ok", "(unclosed"])),
            Err(MatchError::Pattern {
                index: 1,
                reason: hs
                    .regex_compile(&encode_list(&["ok", "(unclosed"]))
                    .unwrap_err()
                    .to_string()
                    .split_once(": ")
                    .map(|(_, r)| r.to_string())
                    .unwrap()
            })
        );
        assert!(hs.regex_compile(&encode_list(&[&b"\xff"[..]])).is_err());
        // Unknown handles, and a handle of the other kind.
        assert_eq!(
            hs.regex_match(&with_handle(9, b"x")),
            Err(MatchError::Handle(9))
        );
        assert_eq!(
            hs.regex_match(&[1, 2]),
            Err(MatchError::Malformed("truncated integer"))
        );
        hs.pm_compile(&encode_list(&["x"])).unwrap();
        assert_eq!(
            hs.regex_match(&with_handle(1, b"x")),
            Err(MatchError::Handle(1))
        );
        assert_eq!(
            hs.pm_match(&with_handle(0, b"x")),
            Err(MatchError::Handle(0))
        );
    }

    #[test]
    fn limits_are_enforced() {
        let mut hs = Handles::default();
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        assert!(matches!(
            hs.regex_compile(&encode_list(&[long.as_str()])),
            Err(MatchError::Limit(_))
        ));
        // A count above the cap is refused before anything is read.
        let mut many = ((MAX_REGEX_PATTERNS + 1) as u32).to_le_bytes().to_vec();
        many.extend_from_slice(&[0; 16]);
        assert!(matches!(hs.regex_compile(&many), Err(MatchError::Limit(_))));
        // A pattern whose compiled program is over the size limit.
        let huge = r"(?u)\w{1000}\w{1000}\w{1000}";
        assert!(matches!(
            hs.regex_compile(&encode_list(&[huge])),
            Err(MatchError::Pattern { index: 0, .. })
        ));
        // Handles per VM.
        let args = encode_list(&["limit-test"]);
        for _ in 0..MAX_HANDLES {
            hs.regex_compile(&args).unwrap();
        }
        assert_eq!(
            hs.regex_compile(&args),
            Err(MatchError::Limit("too many handles in this VM"))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 400, failure_persistence: None, ..Default::default() })]

        /// Whatever bytes a guest sends, every call answers Ok or an error, never a panic.
        #[test]
        fn arbitrary_arguments_never_panic(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            pats in proptest::collection::vec("[ab()|*+?\\\\\\[\\]{}^$.0-9,-]{0,10}", 1..6),
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            handle in 0u32..4,
            index in 0u32..8,
        ) {
            let mut hs = Handles::default();
            let _ = hs.regex_compile(&raw);
            let _ = hs.pm_compile(&raw);
            let _ = hs.regex_compile(&encode_list(&pats));
            let _ = hs.pm_compile(&encode_list(&pats));
            let mut args = handle.to_le_bytes().to_vec();
            args.extend_from_slice(&input);
            let _ = hs.regex_match(&args);
            let _ = hs.pm_match(&args);
            let mut cargs = handle.to_le_bytes().to_vec();
            cargs.extend_from_slice(&index.to_le_bytes());
            cargs.extend_from_slice(&input);
            let _ = hs.regex_captures(&cargs);
            let _ = hs.regex_match(&raw);
            let _ = hs.regex_captures(&raw);
            let _ = hs.pm_match(&raw);
        }
    }
}
