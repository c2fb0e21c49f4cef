//! The matchers one VM holds, by handle, and the foreign-function calls on them
//! (`sluice.regex.*`, `sluice.pm.*`): bytes in, bytes out.

use std::sync::Arc;

use super::cache::cached;
use super::codec::take_u32;
use super::{MatchError, PmMatcher, RegexMatcher, MAX_HANDLES, MAX_INPUT_BYTES};

pub(super) enum Handle {
    Regex(Arc<RegexMatcher>),
    Pm(Arc<PmMatcher>),
}

/// The matchers one VM holds, by handle (handle `n` is slot `n - 1`).
#[derive(Default)]
pub struct Handles {
    slots: Vec<Handle>,
}

impl Handles {
    fn push(&mut self, h: Handle) -> Result<u32, MatchError> {
        if self.slots.len() >= MAX_HANDLES {
            return Err(MatchError::Limit("too many handles in this VM"));
        }
        self.slots.push(h);
        Ok(self.slots.len() as u32)
    }

    pub(super) fn regex(&self, handle: u32) -> Result<&RegexMatcher, MatchError> {
        match self.slots.get((handle as usize).wrapping_sub(1)) {
            Some(Handle::Regex(r)) => Ok(r),
            _ => Err(MatchError::Handle(handle)),
        }
    }

    pub(super) fn pm(&self, handle: u32) -> Result<&PmMatcher, MatchError> {
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
