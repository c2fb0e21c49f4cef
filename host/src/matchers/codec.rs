//! The list encoding of the matchers' arguments (all integers u32 little-endian).

use super::{MatchError, MAX_PATTERN_BYTES};

/// Reads a u32 LE at the front of `b` and advances it.
pub(super) fn take_u32(b: &mut &[u8]) -> Result<u32, MatchError> {
    if b.len() < 4 {
        return Err(MatchError::Malformed("truncated integer"));
    }
    let (head, rest) = b.split_at(4);
    *b = rest;
    Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")))
}

/// Decodes `count, count × (len, bytes)` with the given caps.
pub(super) fn decode_list(
    mut b: &[u8],
    max_items: usize,
    max_total: usize,
) -> Result<Vec<&[u8]>, MatchError> {
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

#[cfg(test)] // Guests encode their own; the tests build arguments with it.
/// Encodes a list the way `sluice.regex.compile` and `sluice.pm.compile` take it.
pub fn encode_list<P: AsRef<[u8]>>(items: &[P]) -> Vec<u8> {
    let mut out = (items.len() as u32).to_le_bytes().to_vec();
    for p in items {
        out.extend_from_slice(&(p.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(p.as_ref());
    }
    out
}
