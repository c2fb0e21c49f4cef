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
}
