//! Fleet operations: state shared by every Sluice node, started by filters through
//! `proxy_call_foreign_function("sluice.fleet.*")` and completed later through
//! `proxy_on_foreign_function` (see `docs/ABI.md`, "Fleet operations").
//!
//! This module only decodes what a filter asks for ([`FleetOp`]), scopes its key to the
//! filter ([`scoped_key`]) and encodes what it gets back ([`FleetReply`]); the proxy runs
//! the operations (on Redis) through [`crate::callout::Callouts::call`]. Integers are u32
//! little-endian.
//!
//! Component guests reach the same operations through `sluice:edge/fleet`
//! ([`crate::component`]): the embedder runs them with a [`FleetBackend`], on the same
//! store, with the same limits and the same scoping (another key kind, so that a
//! component's keys never meet a Proxy-Wasm filter's).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::abi::Status;

/// Longest key a filter may name (bytes, before the host's prefix).
pub const MAX_KEY: usize = 1024;
/// Largest value a filter may store.
pub const MAX_VALUE: usize = 64 * 1024;
/// Longest window or TTL (one day, in milliseconds).
pub const MAX_TTL_MS: u32 = 86_400_000;

/// The kind of a Proxy-Wasm filter's fleet keys ([`scoped_key`], owner: its `vm_id`).
pub const FILTER_KIND: &[u8] = b"f";
/// The kind of a component filter's fleet keys ([`scoped_key`], owner: its name).
pub const COMPONENT_KIND: &[u8] = b"c";

/// `KIND:LEN:OWNER:KEY`: a key of one owner (a Proxy-Wasm filter's `vm_id`, a component
/// filter's name), the same for every node running the policy, and no two
/// (kind, owner, key) triples alike (the owner's length is spelt out, so no owner's keys
/// reach into another's).
pub fn scoped_key(kind: &[u8], owner: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.len() + 8 + owner.len() + key.len());
    k.extend_from_slice(kind);
    k.push(b':');
    k.extend_from_slice(owner.len().to_string().as_bytes());
    k.push(b':');
    k.extend_from_slice(owner);
    k.push(b':');
    k.extend_from_slice(key);
    k
}

/// A boxed future of an operation's reply, as a [`FleetBackend`] returns it.
pub type FleetFuture = Pin<Box<dyn Future<Output = FleetReply> + Send>>;

/// Runs fleet operations for component guests (`sluice:edge/fleet`): provided by the
/// embedder (the proxy's store on Redis), once per policy. The operation comes checked
/// ([`FleetOp::check`]) and scoped ([`FleetOp::scope`]); the future must end within the
/// store's own timeout, answering a failure as [`FleetReply::Failed`], and must not need
/// the caller's thread (the guest's instance goes on with its other tasks meanwhile).
pub trait FleetBackend: Send + Sync {
    /// Runs `op`.
    fn run(self: Arc<Self>, op: FleetOp) -> FleetFuture;
}

/// One fleet operation a filter started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetOp {
    /// Fixed window counter: add one to `key`, which expires `window_ms` after its first
    /// increment. `limit`: the count above which the key is over its limit (the host then
    /// answers it locally until the window ends).
    Incr {
        /// Key (without prefix).
        key: Vec<u8>,
        /// Window length.
        window_ms: u32,
        /// Allowed count per window.
        limit: u32,
    },
    /// Sliding window (two fixed windows, the previous one weighted by how much of it
    /// still overlaps): counts the hit only when the estimate stays within `limit`.
    Sliding {
        /// Key (without prefix).
        key: Vec<u8>,
        /// Window length.
        window_ms: u32,
        /// Allowed count per window.
        limit: u32,
    },
    /// Reads a value.
    Get {
        /// Key (without prefix).
        key: Vec<u8>,
    },
    /// Writes a value that expires after `ttl_ms` (0: never).
    Set {
        /// Key (without prefix).
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Time to live.
        ttl_ms: u32,
    },
    /// Loads a persistent-collection record from the store into this process's copy
    /// ([`crate::collections`]), writing the changes queued for it on the way.
    Load {
        /// The record's key (the host makes it from the filter's `vm_id` and its key).
        key: Vec<u8>,
    },
    /// Compare-and-set: writes `new` only when the key holds `expected` (`None`: only
    /// when the key is absent).
    Cas {
        /// Key (without prefix).
        key: Vec<u8>,
        /// The value the key must hold, or `None` for "absent".
        expected: Option<Vec<u8>>,
        /// The value written.
        new: Vec<u8>,
        /// Time to live of the new value (0: never).
        ttl_ms: u32,
    },
}

impl FleetOp {
    /// The operation's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            FleetOp::Incr { .. } => "incr",
            FleetOp::Sliding { .. } => "sliding",
            FleetOp::Get { .. } => "get",
            FleetOp::Load { .. } => "load",
            FleetOp::Set { .. } => "set",
            FleetOp::Cas { .. } => "cas",
        }
    }

    /// The key the operation acts on.
    pub fn key(&self) -> &[u8] {
        match self {
            FleetOp::Incr { key, .. }
            | FleetOp::Sliding { key, .. }
            | FleetOp::Get { key }
            | FleetOp::Load { key }
            | FleetOp::Set { key, .. }
            | FleetOp::Cas { key, .. } => key,
        }
    }

    /// Replaces the key with `f(key)` (the host scopes every key to its filter).
    pub fn scope(&mut self, f: impl FnOnce(&[u8]) -> Vec<u8>) {
        let key = match self {
            FleetOp::Incr { key, .. }
            | FleetOp::Sliding { key, .. }
            | FleetOp::Get { key }
            | FleetOp::Load { key }
            | FleetOp::Set { key, .. }
            | FleetOp::Cas { key, .. } => key,
        };
        *key = f(key);
    }

    /// Decodes the arguments of `sluice.fleet.<name>`; `None` when `name` is no fleet
    /// operation, `BAD_ARGUMENT` when the arguments do not decode or break a limit.
    pub fn decode(name: &str, args: &[u8]) -> Option<Result<FleetOp, Status>> {
        let mut r = Reader(args);
        let op = match name {
            "sluice.fleet.incr" | "sluice.fleet.sliding" => (|| {
                let window_ms = r.u32()?;
                let limit = r.u32()?;
                let key = r.rest().to_vec();
                Ok(if name == "sluice.fleet.incr" {
                    FleetOp::Incr {
                        key,
                        window_ms,
                        limit,
                    }
                } else {
                    FleetOp::Sliding {
                        key,
                        window_ms,
                        limit,
                    }
                })
            })(),
            "sluice.fleet.get" => Ok(FleetOp::Get { key: args.to_vec() }),
            "sluice.fleet.load" => Ok(FleetOp::Load { key: args.to_vec() }),
            "sluice.fleet.set" => (|| {
                let ttl_ms = r.u32()?;
                let key = r.sized()?.to_vec();
                let value = r.rest().to_vec();
                Ok(FleetOp::Set { key, value, ttl_ms })
            })(),
            "sluice.fleet.cas" => (|| {
                let ttl_ms = r.u32()?;
                let key = r.sized()?.to_vec();
                let expected = match r.u32()? {
                    u32::MAX => None,
                    n => Some(r.take(n as usize)?.to_vec()),
                };
                let new = r.rest().to_vec();
                Ok(FleetOp::Cas {
                    key,
                    expected,
                    new,
                    ttl_ms,
                })
            })(),
            _ => return None,
        };
        Some(op.and_then(|op| match op.check() {
            Ok(()) => Ok(op),
            Err(e) => {
                tracing::debug!(op = op.name(), error = e, "fleet operation refused");
                Err(Status::BadArgument)
            }
        }))
    }

    /// Checks the limits every operation keeps, whoever started it (before its key is
    /// scoped): keys of 1 to [`MAX_KEY`] bytes, values (and expected values) of at most
    /// [`MAX_VALUE`] bytes, TTLs of at most [`MAX_TTL_MS`], counter windows of 1 to
    /// [`MAX_TTL_MS`]. The error names the limit broken.
    pub fn check(&self) -> Result<(), &'static str> {
        let key = self.key();
        if key.is_empty() || key.len() > MAX_KEY {
            return Err("key must be 1 to 1024 bytes");
        }
        match self {
            FleetOp::Incr { window_ms, .. } | FleetOp::Sliding { window_ms, .. }
                if *window_ms == 0 || *window_ms > MAX_TTL_MS =>
            {
                Err("window must be 1 to 86400000 ms")
            }
            FleetOp::Set { value, .. } | FleetOp::Cas { new: value, .. }
                if value.len() > MAX_VALUE =>
            {
                Err("value must be at most 65536 bytes")
            }
            FleetOp::Set { ttl_ms, .. } | FleetOp::Cas { ttl_ms, .. } if *ttl_ms > MAX_TTL_MS => {
                Err("ttl must be at most 86400000 ms")
            }
            FleetOp::Cas {
                expected: Some(e), ..
            } if e.len() > MAX_VALUE => Err("expected value must be at most 65536 bytes"),
            _ => Ok(()),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Status> {
        if self.0.len() < n {
            return Err(Status::BadArgument);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, Status> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn sized(&mut self) -> Result<&'a [u8], Status> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// How a fleet operation ended: the first byte of the completion data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FleetStatus {
    /// Done; the rest of the data is the operation's result.
    Ok = 0,
    /// The store answered with an error (or could not be reached).
    Error = 1,
    /// No answer within the call's timeout.
    Timeout = 2,
    /// The store is down (the host stopped trying for a moment) or not configured.
    Unavailable = 3,
}

/// The completion data a filter reads from buffer 8 (`CallData`) in
/// `proxy_on_foreign_function`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetReply {
    /// `incr`/`sliding`: the count (after this hit), the milliseconds until the window
    /// ends, whether this hit was counted (sliding windows do not count refused hits).
    Counter {
        /// Count of the window.
        count: u32,
        /// Milliseconds until the count resets.
        reset_ms: u32,
        /// The hit was counted.
        counted: bool,
    },
    /// `get`: the value, if any.
    Value(Option<Vec<u8>>),
    /// `set`: done.
    Done,
    /// `cas`: whether the new value was written.
    Swapped(bool),
    /// The operation failed.
    Failed(FleetStatus, String),
}

impl FleetReply {
    /// The bytes `proxy_on_foreign_function` delivers: a status byte, then
    /// `incr`/`sliding`: count, reset_ms, counted (u32 each); `get`: found (u8), value;
    /// `set`: nothing; `cas`: swapped (u8); a failure: its message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        match self {
            FleetReply::Counter {
                count,
                reset_ms,
                counted,
            } => {
                out.push(FleetStatus::Ok as u8);
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(&reset_ms.to_le_bytes());
                out.extend_from_slice(&(*counted as u32).to_le_bytes());
            }
            FleetReply::Value(v) => {
                out.push(FleetStatus::Ok as u8);
                out.push(v.is_some() as u8);
                out.extend_from_slice(v.as_deref().unwrap_or_default());
            }
            FleetReply::Done => out.push(FleetStatus::Ok as u8),
            FleetReply::Swapped(s) => {
                out.push(FleetStatus::Ok as u8);
                out.push(*s as u8);
            }
            FleetReply::Failed(s, msg) => {
                out.push(*s as u8);
                out.extend_from_slice(msg.as_bytes());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(n: u32) -> [u8; 4] {
        n.to_le_bytes()
    }

    #[test]
    fn operations_decode_and_limits_hold() {
        let mut a = le(60_000).to_vec();
        a.extend(le(10));
        a.extend(b"ip:1.2.3.4");
        assert_eq!(
            FleetOp::decode("sluice.fleet.incr", &a),
            Some(Ok(FleetOp::Incr {
                key: b"ip:1.2.3.4".to_vec(),
                window_ms: 60_000,
                limit: 10
            }))
        );
        let mut cas = le(0).to_vec();
        cas.extend(le(1));
        cas.extend(b"k");
        cas.extend(le(u32::MAX));
        cas.extend(b"new");
        assert_eq!(
            FleetOp::decode("sluice.fleet.cas", &cas),
            Some(Ok(FleetOp::Cas {
                key: b"k".to_vec(),
                expected: None,
                new: b"new".to_vec(),
                ttl_ms: 0
            }))
        );
        assert_eq!(FleetOp::decode("sluice.echo", b""), None);
        // Huge keys, empty keys, short arguments, zero windows.
        let mut huge = le(1000).to_vec();
        huge.extend(le(1));
        huge.extend(vec![b'x'; MAX_KEY + 1]);
        assert_eq!(
            FleetOp::decode("sluice.fleet.incr", &huge),
            Some(Err(Status::BadArgument))
        );
        assert_eq!(
            FleetOp::decode("sluice.fleet.get", b""),
            Some(Err(Status::BadArgument))
        );
        assert_eq!(
            FleetOp::decode("sluice.fleet.sliding", &le(5)),
            Some(Err(Status::BadArgument))
        );
        let mut zero = le(0).to_vec();
        zero.extend(le(1));
        zero.extend(b"k");
        assert_eq!(
            FleetOp::decode("sluice.fleet.incr", &zero),
            Some(Err(Status::BadArgument))
        );
        let mut lying = le(0).to_vec();
        lying.extend(le(u32::MAX - 1));
        assert_eq!(
            FleetOp::decode("sluice.fleet.set", &lying),
            Some(Err(Status::BadArgument))
        );
    }

    #[test]
    fn replies_encode() {
        assert_eq!(
            FleetReply::Counter {
                count: 3,
                reset_ms: 10,
                counted: true
            }
            .encode(),
            [0, 3, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(FleetReply::Value(None).encode(), [0, 0]);
        assert_eq!(
            FleetReply::Failed(FleetStatus::Timeout, "t".into()).encode(),
            [2, b't']
        );
    }
}
