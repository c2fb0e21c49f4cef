//! HTTP fields: `proxy_get_header_map_*`, `proxy_set_header_map_pairs`,
//! `proxy_add/replace/remove_header_map_value`.
//!
//! Outside a stream, or for a map the running phase does not have, reads answer an
//! empty map / `NOT_FOUND` and writes are ignored, as the SDK expects `OK` from them.

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::memory;
use crate::state::HostState;
use crate::stream::HeaderMap;

/// Most bytes one header map may hold; writes past it answer `BAD_ARGUMENT`.
pub const MAX_MAP_BYTES: usize = 256 << 10;

/// Which map a `proxy_map_type_t` names, or `None` when the stream has no such map.
fn map_mut(
    state: &mut HostState,
    map_type: i32,
) -> Result<Option<(&mut HeaderMap, &mut bool)>, Status> {
    if !(0..=7).contains(&map_type) {
        return Err(Status::BadArgument);
    }
    if map_type == 6 || map_type == 7 {
        return Ok(state.call_response.as_mut().map(|r| {
            let m = if map_type == 6 {
                &mut r.headers
            } else {
                &mut r.trailers
            };
            // Call responses are read-only for the guest: edits go to a scratch flag.
            (m, &mut state.call_response_touched)
        }));
    }
    if !state.has_stream {
        return Ok(None);
    }
    let s = state.stream_mut();
    Ok(match map_type {
        0 => Some((&mut s.request_headers, &mut s.request_headers_changed)),
        1 => Some((&mut s.request_trailers, &mut s.request_headers_changed)),
        2 => Some((&mut s.response_headers, &mut s.response_headers_changed)),
        3 => Some((&mut s.response_trailers, &mut s.response_headers_changed)),
        // gRPC metadata and HTTP-call response maps are not part of an HTTP stream.
        _ => None,
    })
}

/// Which map a `proxy_map_type_t` names, for reading ([`map_mut`]).
fn map_ref(state: &HostState, map_type: i32) -> Result<Option<&HeaderMap>, Status> {
    if !(0..=7).contains(&map_type) {
        return Err(Status::BadArgument);
    }
    if map_type == 6 || map_type == 7 {
        return Ok(state.call_response.as_ref().map(|r| {
            if map_type == 6 {
                &r.headers
            } else {
                &r.trailers
            }
        }));
    }
    if !state.has_stream {
        return Ok(None);
    }
    let s = state.stream();
    Ok(match map_type {
        0 => Some(&s.request_headers),
        1 => Some(&s.request_trailers),
        2 => Some(&s.response_headers),
        3 => Some(&s.response_trailers),
        _ => None,
    })
}

/// The entries of a map (none when there is no map), for the pairs codec.
fn pairs(m: Option<&HeaderMap>) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    m.into_iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.as_bytes(), v))
}

/// A header name copied out of guest memory (it must outlive the guest allocation of
/// a copy-out, which may move the guest's memory): on the stack when short, so that a
/// look-up costs no host allocation.
enum Key {
    /// Up to [`Key::INLINE`] bytes of UTF-8.
    Inline([u8; Key::INLINE], usize),
    /// A longer name.
    Heap(String),
}

impl Key {
    const INLINE: usize = 64;

    /// Copies the UTF-8 name at `ptr`/`len` of guest memory (`BAD_ARGUMENT` when not UTF-8).
    fn read(c: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Key, Status> {
        memory::with_guest(c, |mem, _| {
            let k = memory::guest_slice(mem, ptr, len)?;
            let k = memory::guest_str(k)?;
            Ok(if k.len() <= Key::INLINE {
                let mut buf = [0; Key::INLINE];
                buf[..k.len()].copy_from_slice(k.as_bytes());
                Key::Inline(buf, k.len())
            } else {
                Key::Heap(k.to_string())
            })
        })
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` whole: always UTF-8.
            Key::Inline(buf, n) => memory::guest_str(&buf[..*n]).unwrap_or_default(),
            Key::Heap(s) => s,
        }
    }
}

/// One edit of a map, its key and value read in place from guest memory.
fn edit(
    c: &mut Caller<'_, HostState>,
    map_type: i32,
    key: (i32, i32),
    value: Option<(i32, i32)>,
    op: fn(&mut HeaderMap, &str, &[u8]),
) -> Result<(), Status> {
    memory::with_guest(c, |mem, state| {
        let k = memory::guest_slice(mem, key.0, key.1)?;
        let k = memory::guest_str(k)?;
        let v = match value {
            Some((p, l)) => memory::guest_slice(mem, p, l)?,
            None => &[],
        };
        if let Some((map, changed)) = map_mut(state, map_type)? {
            if map.byte_size() + k.len() + v.len() > MAX_MAP_BYTES {
                return Err(Status::BadArgument);
            }
            op(map, k, v);
            *changed = true;
        }
        Ok(())
    })
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_get_header_map_pairs",
        Support::Full,
        "request/response headers and trailers, pseudo-headers included",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                // Serialised straight into the guest's buffer.
                let len = memory::pairs_len(pairs(map_ref(c.data(), map_type)?));
                memory::copy_out_with(&mut c, len, ret_ptr, ret_len, |out, st| {
                    // The guest's allocator ran meanwhile: it may have edited the map.
                    let m = map_ref(st, map_type)?;
                    if memory::pairs_len(pairs(m)) != out.len() {
                        return Err(Status::InternalFailure);
                    }
                    memory::write_pairs(pairs(m), out);
                    Ok(())
                })
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_get_header_map_size",
        Support::Full,
        "size of the serialized map",
        |mut c: Caller<'_, HostState>, map_type: i32, ret: i32| -> wasmtime::Result<i32> {
            status((|| {
                let n = match map_mut(c.data_mut(), map_type)? {
                    Some((m, _)) => 4 + m.len() * 10 + m.byte_size(),
                    None => 4,
                };
                memory::write_u32(&mut c, ret, n as u32)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_set_header_map_pairs",
        Support::Full,
        "replaces the whole map",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let raw = memory::read(&mut c, ptr, len)?;
                if raw.len() > MAX_MAP_BYTES * 2 {
                    return Err(Status::BadArgument);
                }
                let pairs = memory::decode_pairs(&raw)?;
                let mut new = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    new.push((String::from_utf8(k).map_err(|_| Status::BadArgument)?, v));
                }
                if let Some((map, changed)) = map_mut(c.data_mut(), map_type)? {
                    *map = HeaderMap::from_pairs(new);
                    map.mark_replaced();
                    *changed = true;
                }
                Ok(())
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_get_header_map_value",
        Support::Full,
        "all values of a name joined with `, `; `NOT_FOUND` when absent",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let k = Key::read(&mut c, kp, kl)?;
                let k = k.as_str();
                let len = match map_ref(c.data(), map_type)? {
                    Some(m) => m.joined_len(k).ok_or(Status::NotFound)?,
                    None => return Err(Status::NotFound),
                };
                // Joined straight into the guest's buffer.
                memory::copy_out_with(&mut c, len, ret_ptr, ret_len, |out, st| {
                    // The guest's allocator ran meanwhile: it may have edited the map.
                    match map_ref(st, map_type)? {
                        Some(m) if m.joined_len(k) == Some(out.len()) => {
                            m.write_joined(k, out);
                            Ok(())
                        }
                        _ => Err(Status::InternalFailure),
                    }
                })
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_add_header_map_value",
        Support::Full,
        "appends a value",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            status(edit(
                &mut c,
                map_type,
                (kp, kl),
                Some((vp, vl)),
                |m, k, v| m.add_bytes(k, v),
            ))
        },
    )?;
    reg.func(
        "env",
        "proxy_replace_header_map_value",
        Support::Full,
        "sets a name to one value",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            status(edit(
                &mut c,
                map_type,
                (kp, kl),
                Some((vp, vl)),
                |m, k, v| m.set_bytes(k, v),
            ))
        },
    )?;
    reg.func(
        "env",
        "proxy_remove_header_map_value",
        Support::Full,
        "removes every value of a name",
        |mut c: Caller<'_, HostState>, map_type: i32, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            status(edit(&mut c, map_type, (kp, kl), None, |m, k, _| {
                m.remove(k)
            }))
        },
    )?;
    Ok(())
}
