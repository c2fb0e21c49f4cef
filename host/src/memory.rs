//! Bounds-checked access to guest linear memory, the guest allocator, and the
//! Proxy-Wasm map ("pairs") codec.
//!
//! Every pointer and length a guest passes goes through this module: nothing here
//! can panic or read outside the guest's memory, whatever the guest sends.

use wasmtime::{AsContextMut, Caller};

use super::abi::Status;
use super::state::HostState;

/// Largest single value the host copies in from a guest (header, property, body chunk...).
pub const MAX_GUEST_READ: usize = 64 << 20;

fn range(ptr: i32, len: i32, mem_len: usize) -> Result<std::ops::Range<usize>, Status> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > MAX_GUEST_READ {
        return Err(Status::InvalidMemoryAccess);
    }
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    if end > mem_len {
        return Err(Status::InvalidMemoryAccess);
    }
    Ok(ptr..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = caller.data().memory.ok_or(Status::InternalFailure)?;
    let data = mem.data(&caller);
    let r = range(ptr, len, data.len())?;
    Ok(data[r].to_vec())
}

/// `bytes` (a name a guest passed) as UTF-8, `BAD_ARGUMENT` when it is not. Header
/// names are ASCII: a word-at-a-time ASCII test answers them in a few instructions,
/// where `str::from_utf8` walked short names byte by byte (~100 instructions a name,
/// 8 names a request for a filter that edits two headers); other bytes take the full
/// validation.
pub fn guest_str(bytes: &[u8]) -> Result<&str, Status> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).map_err(|_| Status::BadArgument)
    }
}

/// Reads guest bytes as a UTF-8 string.
pub fn read_str(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Result<String, Status> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| Status::BadArgument)
}

/// Writes `bytes` at `ptr` in guest memory.
pub fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let mem = caller.data().memory.ok_or(Status::InternalFailure)?;
    let data = mem.data_mut(caller.as_context_mut());
    let r = range(ptr, bytes.len() as i32, data.len())?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian u32 at `ptr`.
pub fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, v: u32) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Writes a little-endian u64 at `ptr`.
pub fn write_u64(caller: &mut Caller<'_, HostState>, ptr: i32, v: u64) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Allocates `bytes.len()` in the guest with its allocator, copies `bytes` there, and
/// stores the address and size at `ret_ptr` / `ret_len` (the ABI's return-value idiom).
///
/// An empty result is handed back as address 0 and size 0 without calling the guest's
/// allocator, as the reference host does (the Go SDK's allocator panics on 0 bytes).
/// A trap, deadline or memory-cap hit inside the allocator (or an allocator answering
/// null) fails the callback: the failure is kept in [`HostState::guest_fault`] and
/// the hostcall ends with a trap, so the VM fails like any other trap.
pub fn copy_out(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> Result<(), Status> {
    copy_out_with(caller, bytes.len(), ret_ptr, ret_len, |out, _| {
        out.copy_from_slice(bytes);
        Ok(())
    })
}

/// [`copy_out`] of `len` bytes that `fill` writes straight into the guest's buffer
/// (given the host state, so that a value the state holds needs no copy of its own).
/// The guest's allocator runs in between and may call hostcalls: `fill` must check
/// that what it writes is still `len` bytes long, and fail otherwise.
pub fn copy_out_with(
    caller: &mut Caller<'_, HostState>,
    len: usize,
    ret_ptr: i32,
    ret_len: i32,
    fill: impl FnOnce(&mut [u8], &HostState) -> Result<(), Status>,
) -> Result<(), Status> {
    // Check the return slots first so a bad pointer costs no guest allocation.
    {
        let mem = caller.data().memory.ok_or(Status::InternalFailure)?;
        let n = mem.data(&caller).len();
        range(ret_ptr, 4, n)?;
        range(ret_len, 4, n)?;
    }
    if len == 0 {
        write_u32(caller, ret_ptr, 0)?;
        return write_u32(caller, ret_len, 0);
    }
    let len = i32::try_from(len).map_err(|_| Status::BadArgument)?;
    let alloc = caller.data().alloc.clone().ok_or(Status::InternalFailure)?;
    let addr = match alloc.call(caller.as_context_mut(), len) {
        Ok(0) => {
            return Err(guest_fault(
                caller,
                wasmtime::format_err!("the guest's allocator returned null for {len} bytes"),
            ))
        }
        Ok(addr) => addr,
        Err(e) => return Err(guest_fault(caller, e)),
    };
    // One look-up of the memory for the three writes (the allocator may have grown it;
    // it never shrinks, so the return slots checked above are still in bounds).
    let mem = caller.data().memory.ok_or(Status::InternalFailure)?;
    let (data, state) = mem.data_and_store_mut(caller.as_context_mut());
    let r = range(addr, len, data.len())?;
    fill(&mut data[r], state)?;
    let r = range(ret_ptr, 4, data.len())?;
    data[r].copy_from_slice(&(addr as u32).to_le_bytes());
    let r = range(ret_len, 4, data.len())?;
    data[r].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Runs `f` with guest memory and the host state borrowed together, so that guest
/// bytes reach the state without a copy ([`guest_slice`] bounds-checks each range).
pub fn with_guest<R>(
    caller: &mut Caller<'_, HostState>,
    f: impl FnOnce(&[u8], &mut HostState) -> Result<R, Status>,
) -> Result<R, Status> {
    let mem = caller.data().memory.ok_or(Status::InternalFailure)?;
    let (data, state) = mem.data_and_store_mut(caller.as_context_mut());
    f(data, state)
}

/// The `len` bytes at `ptr` of guest memory `data`, bounds-checked.
pub fn guest_slice(data: &[u8], ptr: i32, len: i32) -> Result<&[u8], Status> {
    Ok(&data[range(ptr, len, data.len())?])
}

/// Size in the pairs format ([`encode_pairs`]) of `pairs`.
pub fn pairs_len<'a, I>(pairs: I) -> usize
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    pairs
        .into_iter()
        .fold(4, |n, (k, v)| n + 8 + k.len() + v.len() + 2)
}

/// Writes `pairs` in the pairs format into `out`, which is [`pairs_len`] bytes long.
pub fn write_pairs<'a, I>(pairs: I, out: &mut [u8])
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    I::IntoIter: Clone,
{
    let pairs = pairs.into_iter();
    let mut count = 0u32;
    let mut at = 4;
    for (k, v) in pairs.clone() {
        out[at..at + 4].copy_from_slice(&(k.len() as u32).to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&(v.len() as u32).to_le_bytes());
        at += 8;
        count += 1;
    }
    out[..4].copy_from_slice(&count.to_le_bytes());
    for (k, v) in pairs {
        out[at..at + k.len()].copy_from_slice(k);
        at += k.len();
        out[at] = 0;
        out[at + 1..at + 1 + v.len()].copy_from_slice(v);
        at += v.len() + 1;
        out[at] = 0;
        at += 1;
    }
}

/// Records a failure of the guest's own code met inside a hostcall (its allocator
/// trapped, ran out of time or memory) and answers the status that ends the hostcall
/// with a trap; the VM reports the recorded failure rather than the hostcall's trap.
fn guest_fault(caller: &mut Caller<'_, HostState>, e: wasmtime::Error) -> Status {
    caller.data_mut().guest_fault = Some(e);
    Status::InvalidMemoryAccess
}

/// Serializes header-like pairs in the Proxy-Wasm map format:
/// count, then (key length, value length) pairs, then NUL-terminated keys and values.
pub fn encode_pairs<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    I::IntoIter: Clone,
{
    let pairs = pairs.into_iter();
    let (count, body) = pairs.clone().fold((0usize, 0usize), |(n, b), (k, v)| {
        (n + 1, b + k.len() + v.len() + 2)
    });
    let mut out = Vec::with_capacity(4 + count * 8 + body);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Decoded map entries: raw names and values.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses the Proxy-Wasm map format; an empty input (or a lone 0 byte) is an empty map.
pub fn decode_pairs(bytes: &[u8]) -> Result<Pairs, Status> {
    if bytes.len() <= 1 {
        return Ok(Vec::new());
    }
    let u32_at = |at: usize| -> Result<usize, Status> {
        let b = bytes.get(at..at + 4).ok_or(Status::SerializationFailure)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let header = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .filter(|n| *n <= bytes.len())
        .ok_or(Status::SerializationFailure)?;
    let mut out = Vec::with_capacity(count);
    let mut at = header;
    for i in 0..count {
        let (klen, vlen) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let mut take = |len: usize| -> Result<Vec<u8>, Status> {
            let end = at.checked_add(len).ok_or(Status::SerializationFailure)?;
            let v = bytes
                .get(at..end)
                .ok_or(Status::SerializationFailure)?
                .to_vec();
            // Each key and value is followed by a NUL byte.
            at = end.checked_add(1).ok_or(Status::SerializationFailure)?;
            Ok(v)
        };
        let k = take(klen)?;
        let v = take(vlen)?;
        out.push((k, v));
    }
    if at > bytes.len() {
        return Err(Status::SerializationFailure);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names_are_utf8_checked_whatever_their_bytes() {
        assert_eq!(guest_str(b"x-bench-h1"), Ok("x-bench-h1"));
        assert_eq!(guest_str(b""), Ok(""));
        assert_eq!(guest_str("caf\u{e9}".as_bytes()), Ok("caf\u{e9}"));
        for bad in [
            &b"\xff"[..],
            b"a\xc3",
            b"\xed\xa0\x80",
            b"0123456789abcdef\x80",
        ] {
            assert!(guest_str(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pairs_roundtrip_matches_spec_example() {
        let enc = encode_pairs([(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"22"[..])]);
        let mut want = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        want.extend_from_slice(b"a\x001\x00b\x0022\x00");
        assert_eq!(enc, want);
        let dec = decode_pairs(&enc).unwrap();
        assert_eq!(
            dec,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"22".to_vec())
            ]
        );
    }

    #[test]
    fn write_pairs_matches_encode_pairs() {
        let pairs = [
            (&b"a"[..], &b"1"[..]),
            (&b""[..], &b"22"[..]),
            (&b"ccc"[..], &b""[..]),
        ];
        let mut out = vec![0xaa; pairs_len(pairs)];
        write_pairs(pairs, &mut out);
        assert_eq!(out, encode_pairs(pairs));
        let mut empty = vec![0xaa; pairs_len(std::iter::empty::<(&[u8], &[u8])>())];
        write_pairs(std::iter::empty::<(&[u8], &[u8])>(), &mut empty);
        assert_eq!(empty, encode_pairs(std::iter::empty::<(&[u8], &[u8])>()));
    }

    #[test]
    fn pairs_reject_truncated_and_huge_counts() {
        let enc = encode_pairs([(&b"key"[..], &b"value"[..])]);
        for cut in 2..enc.len() - 1 {
            assert!(decode_pairs(&enc[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_pairs(&[0xff, 0xff, 0xff, 0xff, 0]).is_err());
        assert_eq!(decode_pairs(&[]).unwrap(), vec![]);
        assert_eq!(decode_pairs(&[0]).unwrap(), vec![]);
    }
}
