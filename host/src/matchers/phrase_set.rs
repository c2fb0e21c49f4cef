//! Phrase sets (Aho-Corasick, ASCII case-insensitive): the first phrase found.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::codec::decode_list;
use super::{MatchError, MAX_PM_BYTES, MAX_PM_PHRASES};

/// A compiled phrase set.
pub struct PmMatcher {
    ac: Option<AhoCorasick>,
    /// Index in the caller's list of each automaton pattern (empty phrases are skipped).
    index: Vec<u32>,
}

impl PmMatcher {
    pub(super) fn compile(args: &[u8]) -> Result<PmMatcher, MatchError> {
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
