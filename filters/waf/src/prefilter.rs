//! Literal prefilter: for `@rx` rules whose matches must start with one of a few literals (from
//! regex-syntax's prefix extraction), one Aho-Corasick scan per (value, transformation chain)
//! tells which of those rules can match at all; the others skip their regex. Exact: no match is lost
//! (a literal is a prefix of every match; the scan is ASCII case-insensitive, a superset).

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use std::collections::HashMap;

/// Shortest literal worth prefiltering on.
const MIN_LEN: usize = 3;

/// Required prefix literals of a translated (`regex::bytes`) pattern, lowercased; `None` if the
/// pattern has no small finite set of literals of at least [`MIN_LEN`] bytes.
pub fn literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix).limit_total(64).limit_class(4);
    let seq = ex.extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().len() < MIN_LEN) {
        return None;
    }
    let mut out: Vec<Vec<u8>> = lits
        .iter()
        .map(|l| l.as_bytes().to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// The compiled prefilter of a rule set.
pub struct Prefilter {
    ac: AhoCorasick,
    /// Bytes one of the literals at least needs: without them the scan finds nothing.
    need: Option<Need>,
    /// For each AC pattern, the slots (prefiltered rules) it belongs to.
    owners: Vec<Vec<u32>>,
    /// Number of slots.
    pub slots: usize,
}

impl std::fmt::Debug for Prefilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Prefilter({} literals, {} rules)",
            self.owners.len(),
            self.slots
        )
    }
}

/// Collects literal sets per slot, then builds the automaton.
#[derive(Default)]
pub struct Builder {
    lits: HashMap<Vec<u8>, Vec<u32>>,
    slots: u32,
}

impl Builder {
    /// Registers a rule's literals; returns its slot.
    pub fn add(&mut self, lits: Vec<Vec<u8>>) -> u32 {
        let s = self.slots;
        self.slots += 1;
        for l in lits {
            self.lits.entry(l).or_default().push(s);
        }
        s
    }

    /// Builds the prefilter (`None` when nothing was registered or the automaton fails).
    pub fn build(self) -> Option<Prefilter> {
        if self.slots == 0 {
            return None;
        }
        let mut pats = Vec::with_capacity(self.lits.len());
        let mut owners = Vec::with_capacity(self.lits.len());
        for (l, o) in self.lits {
            pats.push(l);
            owners.push(o);
        }
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&pats)
            .ok()?;
        Some(Prefilter {
            ac,
            need: Need::phrases(&pats),
            owners,
            slots: self.slots as usize,
        })
    }
}

impl Prefilter {
    /// Bitset of the slots whose literals occur in `input`.
    pub fn scan(&self, input: &[u8]) -> Vec<u64> {
        let mut bits = Vec::new();
        self.scan_into(input, &mut bits);
        bits
    }

    /// Words per bitset.
    pub fn words(&self) -> usize {
        self.slots.div_ceil(64)
    }

    /// Appends the bitset of `input` ([`Prefilter::words`] words) to `out`.
    pub fn scan_into(&self, input: &[u8], out: &mut Vec<u64>) {
        let base = out.len();
        out.resize(base + self.words(), 0);
        if Need::rules_out(self.need.as_ref(), input) {
            return;
        }
        let bits = &mut out[base..];
        for m in self.ac.find_overlapping_iter(input) {
            for &s in &self.owners[m.pattern().as_usize()] {
                bits[(s / 64) as usize] |= 1 << (s % 64);
            }
        }
    }
}

/// Is slot `s` set?
pub fn has(bits: &[u64], s: u32) -> bool {
    bits.get((s / 64) as usize)
        .is_some_and(|w| w & (1 << (s % 64)) != 0)
}

/// At most this many byte sets per [`Need`] (one bit each in its table).
const NEED_SETS: usize = 8;

/// A set of bytes (bit `b` of the 256).
type ByteSet = [u64; 4];

fn set_add(s: &mut ByteSet, b: u8) {
    s[usize::from(b >> 6)] |= 1 << (b & 63);
}

fn set_has(s: &ByteSet, b: u8) -> bool {
    s[usize::from(b >> 6)] & (1 << (b & 63)) != 0
}

/// How often byte `b` shows up in ordinary request values (URIs, cookies, headers,
/// arguments), on an arbitrary scale: digits and lowercase letters (by English letter
/// frequency) high, `/.=&%+-_` and space middling, the other punctuation that attacks are made
/// of low. Only steers which of a pattern's byte sets are kept; any choice is exact.
const fn weight(b: u8) -> u32 {
    const LETTERS: [u32; 26] = [
        // a  b   c   d   e   f   g   h   i   j  k  l   m   n   o   p  q  r   s   t   u   v  w   x  y  z
        82, 15, 28, 43, 127, 22, 20, 61, 70, 2, 8, 40, 24, 67, 75, 19, 1, 60, 63, 91, 28, 10, 24, 2,
        20, 1,
    ];
    match b {
        b'a'..=b'z' => LETTERS[(b - b'a') as usize],
        b'A'..=b'Z' => LETTERS[(b - b'A') as usize] / 4 + 1,
        b'0'..=b'9' => 60,
        b'/' | b'.' | b'=' | b'&' | b'%' | b'+' | b'-' | b'_' | b' ' => 30,
        b',' | b';' | b':' => 10,
        0x21..=0x7e => 3,
        _ => 1,
    }
}

fn score(s: &ByteSet) -> u32 {
    (0..=255u8).filter(|&b| set_has(s, b)).map(weight).sum()
}

/// Byte sets of which every match holds at least one byte each (a conjunction), rarest first
/// (by [`weight`]), at most [`NEED_SETS`]; empty when a match may be empty or nothing is known.
fn need_sets(h: &regex_syntax::hir::Hir) -> Vec<ByteSet> {
    use regex_syntax::hir::{Class, HirKind};
    let mut out: Vec<ByteSet> = match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Vec::new(),
        HirKind::Literal(l) => {
            l.0.iter()
                .map(|&b| {
                    let mut s = [0; 4];
                    set_add(&mut s, b);
                    s
                })
                .collect()
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut s = [0; 4];
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    set_add(&mut s, b);
                }
            }
            vec![s]
        }
        HirKind::Class(Class::Unicode(c)) => {
            // a code point matches as its UTF-8 bytes: ASCII as itself, the others as a
            // sequence whose first byte is >= 0xc2; every byte >= 0x80 stands for them
            let mut s = [0; 4];
            for r in c.ranges() {
                let (a, z) = (u32::from(r.start()), u32::from(r.end()));
                for b in a..=z.min(0x7f) {
                    set_add(&mut s, b as u8);
                }
                if z >= 0x80 {
                    for b in 0x80..=0xff {
                        set_add(&mut s, b);
                    }
                }
            }
            vec![s]
        }
        HirKind::Repetition(r) if r.min == 0 => Vec::new(),
        HirKind::Repetition(r) => need_sets(&r.sub),
        HirKind::Capture(c) => need_sets(&c.sub),
        HirKind::Concat(hs) => hs.iter().flat_map(need_sets).collect(),
        HirKind::Alternation(hs) => {
            // a match is a match of one branch: the union of one set of each branch is needed;
            // the j-th union takes each branch's j-th rarest set (its last when it has fewer)
            let branches: Vec<Vec<ByteSet>> = hs.iter().map(need_sets).collect();
            if branches.iter().any(Vec::is_empty) {
                return Vec::new();
            }
            branch_unions(&branches)
        }
    };
    out.sort_by_key(score);
    out.dedup();
    out.truncate(NEED_SETS);
    out
}

/// Bytes a match needs: up to [`NEED_SETS`] byte sets such that every match of the operator
/// (an `@rx` regex, a `@pm` phrase) holds at least one byte of each. An input missing one set
/// cannot match, so the matcher does not run: exact, only a cheaper "no". For short values such
/// as a session id or a number, which CRS's patterns (made of quotes, brackets, keywords) rarely
/// fit, this answers most calls with one pass over the bytes.
#[derive(Clone)]
pub struct Need {
    /// Per byte, the bit of each set holding it.
    table: Box<[u8; 256]>,
    /// One bit per set: an input may match only when it sets them all.
    all: u8,
}

impl std::fmt::Debug for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Need({} sets)", self.all.count_ones())
    }
}

/// Sets whose [`score`] exceeds this share of all bytes' weight hardly ever say "no".
fn useful(s: &ByteSet) -> bool {
    const TOTAL: u32 = {
        let mut t = 0;
        let mut b = 0;
        while b < 256 {
            t += weight(b as u8);
            b += 1;
        }
        t
    };
    score(s) * 2 < TOTAL
}

impl Need {
    fn from_sets(sets: Vec<ByteSet>) -> Option<Need> {
        let sets: Vec<ByteSet> = sets.into_iter().filter(useful).collect();
        if sets.is_empty() {
            return None;
        }
        let mut table = Box::new([0u8; 256]);
        for (i, s) in sets.iter().enumerate() {
            for b in 0..=255u8 {
                if set_has(s, b) {
                    table[usize::from(b)] |= 1 << i;
                }
            }
        }
        Some(Need {
            table,
            all: ((1u16 << sets.len()) - 1) as u8,
        })
    }

    /// The need of a translated (`regex::bytes`) pattern; `None` when it may match
    /// without any byte that is rare enough to be worth the scan.
    pub fn regex(pattern: &str) -> Option<Need> {
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(pattern)
            .ok()?;
        Need::from_sets(need_sets(&hir))
    }

    /// The need of an ASCII case-insensitive phrase set (`@pm`): every phrase is a branch.
    pub fn phrases(words: &[Vec<u8>]) -> Option<Need> {
        let mut branches = Vec::with_capacity(words.len());
        for w in words {
            let mut sets: Vec<ByteSet> = w
                .iter()
                .map(|&b| {
                    let mut s = [0; 4];
                    set_add(&mut s, b.to_ascii_lowercase());
                    set_add(&mut s, b.to_ascii_uppercase());
                    s
                })
                .collect();
            if sets.is_empty() {
                return None;
            }
            sets.sort_by_key(score);
            sets.dedup();
            branches.push(sets);
        }
        // (no phrase: no sets, and `from_sets` answers `None`)
        let mut sets = branch_unions(&branches);
        sets.sort_by_key(score);
        sets.dedup();
        Need::from_sets(sets)
    }

    /// Do a matcher's byte needs (if it has any) rule `input` out: no match possible?
    #[inline]
    pub fn rules_out(need: Option<&Need>, input: &[u8]) -> bool {
        need.is_some_and(|n| !n.may_match(input))
    }

    /// May `input` match: does it hold a byte of every set?
    #[inline]
    pub fn may_match(&self, input: &[u8]) -> bool {
        let t = &*self.table;
        let mut acc = 0u8;
        let mut chunks = input.chunks_exact(8);
        for c in &mut chunks {
            acc |= t[usize::from(c[0])]
                | t[usize::from(c[1])]
                | t[usize::from(c[2])]
                | t[usize::from(c[3])]
                | t[usize::from(c[4])]
                | t[usize::from(c[5])]
                | t[usize::from(c[6])]
                | t[usize::from(c[7])];
            if acc == self.all {
                return true;
            }
        }
        for &b in chunks.remainder() {
            acc |= t[usize::from(b)];
        }
        acc == self.all
    }
}

/// The byte sets a match of any of `branches` needs (each branch's sets sorted rarest
/// first): the j-th set is the union of each branch's j-th set (its last when it has
/// fewer), for at most [`NEED_SETS`] sets.
fn branch_unions(branches: &[Vec<ByteSet>]) -> Vec<ByteSet> {
    let most = branches.iter().map(Vec::len).max().unwrap_or(0);
    (0..most.min(NEED_SETS))
        .map(|j| {
            let mut u = [0u64; 4];
            for b in branches {
                let s = &b[j.min(b.len() - 1)];
                for w in 0..4 {
                    u[w] |= s[w];
                }
            }
            u
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_extraction_and_scan() {
        assert_eq!(
            literals("(?sm-u)(?i)union\\s+select"),
            Some(vec![b"union".to_vec()])
        );
        assert_eq!(literals("(?sm-u)(?:^|[\\x5c/])\\.\\."), None);
        assert_eq!(literals("(?sm-u)a"), None);
        assert!(literals("(?sm-u)(?:jndi|ldap):").is_some());
        let mut b = Builder::default();
        let s1 = b.add(literals("(?sm-u)(?i)union\\s+select").unwrap());
        let s2 = b.add(literals("(?sm-u)<script").unwrap());
        let p = b.build().unwrap();
        let bits = p.scan(b"1 UNION  select");
        assert!(has(&bits, s1) && !has(&bits, s2));
    }

    /// xorshift64*: deterministic pseudo-random numbers for the property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        /// A byte, mostly from `alphabet`, sometimes any byte.
        fn byte(&mut self, alphabet: &[u8]) -> u8 {
            if alphabet.is_empty() || self.below(8) == 0 {
                self.next() as u8
            } else {
                alphabet[self.below(alphabet.len())]
            }
        }
    }

    /// Appends one string of `h`'s language (look-arounds ignored, repetitions up to 3 past
    /// their minimum): a candidate match, which the regex itself then judges.
    fn sample(h: &regex_syntax::hir::Hir, rng: &mut Rng, out: &mut Vec<u8>) {
        use regex_syntax::hir::{Class, HirKind};
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.extend_from_slice(&l.0),
            HirKind::Class(Class::Bytes(c)) => {
                if let Some(r) = c.ranges().get(rng.below(c.ranges().len())) {
                    let span = usize::from(r.end() - r.start()) + 1;
                    out.push(r.start() + rng.below(span) as u8);
                }
            }
            HirKind::Class(Class::Unicode(c)) => {
                if let Some(r) = c.ranges().get(rng.below(c.ranges().len())) {
                    let span = (u32::from(r.end()) - u32::from(r.start())) as usize + 1;
                    let ch = char::from_u32(u32::from(r.start()) + rng.below(span) as u32)
                        .unwrap_or(r.start());
                    let mut b = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                }
            }
            HirKind::Repetition(r) => {
                let max = r.max.unwrap_or(r.min + 3).min(r.min + 3);
                let n = r.min + rng.below((max - r.min + 1) as usize) as u32;
                for _ in 0..n {
                    sample(&r.sub, rng, out);
                }
            }
            HirKind::Capture(c) => sample(&c.sub, rng, out),
            HirKind::Concat(hs) => hs.iter().for_each(|x| sample(x, rng, out)),
            HirKind::Alternation(hs) => sample(&hs[rng.below(hs.len())], rng, out),
        }
    }

    /// `rounds` inputs built around samples of `pattern`'s language: alone, in random
    /// context, truncated, with a byte changed, uppercased, and random inputs.
    fn inputs(pattern: &str, rng: &mut Rng, rounds: usize) -> Vec<Vec<u8>> {
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(pattern)
            .unwrap();
        let alphabet: Vec<u8> = b"abcxyz019 '\"<>()=;-/\\%&*#.,_:\n\t".to_vec();
        let mut out = Vec::with_capacity(rounds);
        for k in 0..rounds {
            let mut s = Vec::new();
            if k % 4 != 0 {
                for _ in 0..rng.below(6) {
                    s.push(rng.byte(&alphabet));
                }
            }
            if k % 7 != 6 {
                sample(&hir, rng, &mut s);
            }
            if k % 5 == 1 {
                for _ in 0..rng.below(6) {
                    s.push(rng.byte(&alphabet));
                }
            }
            if k % 9 == 2 && !s.is_empty() {
                let at = rng.below(s.len());
                s[at] = rng.byte(&alphabet);
            }
            if k % 11 == 3 {
                s.truncate(rng.below(s.len() + 1));
            }
            if k % 13 == 4 {
                s.make_ascii_uppercase();
            }
            out.push(s);
        }
        out
    }

    /// Checks on [`inputs`] that `need` never says "no" where the regex matches. Returns
    /// how many inputs matched.
    fn check_regex(pattern: &str, need: &Need, rng: &mut Rng, rounds: usize) -> usize {
        let re = regex::bytes::Regex::new(pattern).unwrap();
        let mut matched = 0;
        for s in inputs(pattern, rng, rounds) {
            if re.is_match(&s) {
                matched += 1;
                assert!(
                    need.may_match(&s),
                    "{pattern}: {need:?} says no on {:?}, which matches",
                    String::from_utf8_lossy(&s)
                );
            }
        }
        matched
    }

    #[test]
    fn need_never_refuses_a_regex_match() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let pats = [
            "(?sm-u)(?i)union\\s+select",
            "(?sm-u)<script[^>]*>",
            "(?sm-u)(?i:\\b(?:eval|exec|system)\\s*\\()",
            "(?sm-u)['\"`]\\s*(?:or|and)\\s*['\"`]?\\d",
            "(?sm-u)a(?:b|c?)d",
            "(?sm-u)(?:x+|y{2,3})z*",
            "(?sm-u)^[\\x00-\\x1f]+$",
            "(?sm-u)(?:)|q",
            "(?sm-u)\\bjndi:",
            "(?sm-u)[^a]{2}",
            "(?sm-u)(?i)[\\xc0-\\xff]\\w",
            "(?sm-u)(?:\\.\\./|%2e%2e)",
            "(?sm-u)(?i)(?:alert|prompt|confirm)\\(",
            "(?sm-u)[\\s\\x0b]+(?:having|like)[\\s\\x0b]+\\d",
            "(?sm)\\p{Greek}+x",
        ];
        let mut with_need = 0;
        for p in pats {
            let Some(need) = Need::regex(p) else {
                continue;
            };
            with_need += 1;
            let m = check_regex(p, &need, &mut rng, 4000);
            assert!(m > 0, "{p}: no sample matched, the test proves nothing");
        }
        assert!(with_need >= 10, "only {with_need} patterns got a need");
        // what it is for: short benign values fail the need of attack patterns
        let n = Need::regex("(?sm-u)(?i)union\\s+select").unwrap();
        assert!(!n.may_match(b"0000000000000011") && n.may_match(b"1 UNION SELECT"));
        let n = Need::regex("(?sm-u)<script[^>]*>").unwrap();
        assert!(!n.may_match(b"hello world") && n.may_match(b"x<script src=a>"));
        assert!(Need::regex("(?sm-u)a?").is_none(), "may match empty");
        assert!(Need::regex("(?sm-u).").is_none(), "any byte: no use");
    }

    #[test]
    fn phrase_need_never_refuses_a_phrase() {
        let mut rng = Rng(7);
        let words: Vec<Vec<u8>> = [
            "document.cookie",
            ".innerhtml",
            "<!--",
            "-->",
            "etc/passwd",
            "X",
        ]
        .iter()
        .map(|w| w.as_bytes().to_vec())
        .collect();
        let ac = crate::ops::compile_pm(&words).unwrap();
        let need = Need::phrases(&words[..5]).unwrap();
        let ac5 = crate::ops::compile_pm(&words[..5]).unwrap();
        let alphabet = b"abcdefghijklmnopqrstuvwxyz.-<>!/ ";
        let mut matched = 0;
        for k in 0..20000 {
            let mut s = Vec::new();
            for _ in 0..rng.below(12) {
                s.push(rng.byte(alphabet));
            }
            if k % 2 == 0 {
                let w = &words[rng.below(5)];
                for &b in w {
                    s.push(if rng.below(2) == 0 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    });
                }
            }
            if ac5.is_match(&s) {
                matched += 1;
                assert!(need.may_match(&s), "{:?}", String::from_utf8_lossy(&s));
            }
        }
        assert!(matched > 5000);
        assert!(!need.may_match(b"0000000000000011"));
        // a one-byte phrase needs that byte: any input holding it may match
        let n = Need::phrases(&words);
        assert!(n.as_ref().is_none_or(|n| n.may_match(b"x")) && ac.is_match(b"x"));
        assert!(Need::phrases(&[Vec::new()]).is_none());
    }

    /// Every `@rx` and `@pm` of the installed CRS (all paranoia levels: every rule is
    /// compiled): generated matches and random inputs, never a "no" where the matcher matches.
    #[test]
    fn crs_needs_never_refuse_a_match() {
        /// The installed CRS files (as `tests/support`'s `Fs`).
        struct Fs;
        impl crate::load::FileSource for Fs {
            fn list(&self) -> Vec<String> {
                let mut out = Vec::new();
                for dir in ["/usr/share/modsecurity-crs/rules", "/etc/modsecurity/crs"] {
                    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        out.push(e.path().to_string_lossy().into_owned());
                    }
                }
                out.sort();
                out
            }
            fn read(&self, path: &str) -> Result<Vec<u8>, String> {
                std::fs::read(path).map_err(|e| e.to_string())
            }
        }
        if !std::path::Path::new("/usr/share/modsecurity-crs/rules").exists() {
            // tests/crs.rs decides whether a missing CRS is an error (SLUICE_TEST_ALLOW_SKIP)
            return;
        }
        let cfg = crate::config::Config {
            rules: vec![
                "/etc/modsecurity/crs/crs-setup.conf".into(),
                "/usr/share/modsecurity-crs/rules/*.conf".into(),
            ],
            ..crate::config::Config::default()
        };
        let w = crate::config::build(&cfg, Some(&Fs), None).unwrap();
        let mut rng = Rng(0x5eed);
        let (mut rx, mut pm, mut matched) = (0, 0, 0);
        let mut seen = std::collections::HashSet::new();
        for x in w.engine.rules.iter().flat_map(crate::model::Rule::links) {
            if let crate::ops::Op::Rx(op) = &x.op {
                if let (crate::ops::Rx::Bytes(re), Some(need)) = (&op.rx, &op.need) {
                    if seen.insert(re.as_str().to_string()) {
                        rx += 1;
                        matched += check_regex(re.as_str(), need, &mut rng, 1500);
                    }
                }
            }
        }
        // the literal prefilter of all those patterns scans as it does without its need
        let (mut with, mut without) = (Builder::default(), Builder::default());
        let pats: Vec<&String> = seen.iter().collect();
        for p in &pats {
            if let Some(l) = literals(p) {
                with.add(l.clone());
                without.add(l);
            }
        }
        let (with, mut without) = (with.build().unwrap(), without.build().unwrap());
        assert!(with.need.is_some());
        without.need = None;
        let mut found = 0;
        for p in &pats {
            for s in inputs(p, &mut rng, 40) {
                let bits = with.scan(&s);
                assert_eq!(bits, without.scan(&s), "{:?}", String::from_utf8_lossy(&s));
                found += usize::from(bits.iter().any(|&w| w != 0));
            }
        }
        assert!(found > 1000, "{found} inputs held a literal");
        // the phrase lists (`@pmFromFile`): every phrase, in random case and context
        let mut files: Vec<_> = std::fs::read_dir("/usr/share/modsecurity-crs/rules")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "data"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read(&f).unwrap();
            let words: Vec<Vec<u8>> = text
                .split(|&b| b == b'\n')
                .map(|l| l.trim_ascii().to_vec())
                .filter(|l| !l.is_empty() && l[0] != b'#')
                .collect();
            let Some(need) = Need::phrases(&words) else {
                continue;
            };
            pm += 1;
            let ac = crate::ops::compile_pm(&words).unwrap();
            for w in &words {
                for _ in 0..4 {
                    let mut s: Vec<u8> = (0..rng.below(5)).map(|_| rng.next() as u8).collect();
                    s.extend(w.iter().map(|&b| {
                        if rng.below(2) == 0 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    }));
                    s.extend((0..rng.below(4)).map(|_| b"aZ0 .-/"[rng.below(7)]));
                    assert!(ac.is_match(&s));
                    assert!(
                        need.may_match(&s),
                        "{f:?}: {:?}",
                        String::from_utf8_lossy(&s)
                    );
                }
            }
        }
        eprintln!("CRS: {rx} regexes and {pm} phrase files with a need; {matched} generated inputs matched");
        assert!(
            rx > 100 && pm > 5 && matched > 10_000,
            "{rx} regexes, {pm} files, {matched} matches"
        );
    }
}
