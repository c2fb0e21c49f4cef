//! Regex sets (`regex::bytes`): which patterns match, and one pattern's captures.

use std::sync::OnceLock;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::codec::decode_list;
use super::{MatchError, MAX_REGEX_PATTERNS, REGEX_SIZE_LIMIT};

/// Byte range of a capture group, `None` when the group did not take part.
pub type Group = Option<(usize, usize)>;

/// A compiled regex set and, compiled on first use, each pattern alone (for captures).
pub struct RegexMatcher {
    set: RegexSet,
    singles: Vec<OnceLock<Option<Regex>>>,
}

fn regex_builder(p: &str) -> RegexBuilder {
    let mut b = RegexBuilder::new(p);
    b.size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT);
    b
}

impl RegexMatcher {
    pub(super) fn compile(args: &[u8]) -> Result<RegexMatcher, MatchError> {
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
