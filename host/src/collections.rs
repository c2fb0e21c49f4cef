//! Persistent collections (ModSecurity's `initcol` IP, GLOBAL, SESSION, USER, RESOURCE):
//! records kept across requests, process-wide and bounded, read and changed by filters
//! through `sluice.collection.read` / `sluice.collection.apply` (see `docs/ABI.md`).
//!
//! A record is a set of named fields, each with an optional expiry (`expirevar`), and the
//! times ModSecurity exposes (`CREATE_TIME`, `LAST_UPDATE_TIME`, `UPDATE_COUNTER`). A
//! record not updated for its timeout (`SecCollectionTimeout`) is gone.
//!
//! With a fleet store (`[fleet]`), the same records live on Redis for every node: changes
//! are applied here at once and queued ([`Collections::take_pending`]) for the proxy to
//! write behind in batches; a record not read from the store for `refresh_ms` is reported
//! stale, and the filter asks the proxy to load it (`sluice.fleet.load`) before it decides
//! on it. What the store answers replaces the local copy ([`Collections::absorb`]), with the
//! changes still queued applied again on top.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock};

use lru::LruCache;

/// Most records the process keeps (least recently used go first).
pub const MAX_RECORDS: usize = 100_000;
/// Most fields in one record (a `setvar` beyond is dropped).
pub const MAX_FIELDS: usize = 128;
/// Longest field name.
pub const MAX_NAME: usize = 256;
/// Largest field value.
pub const MAX_FIELD_VALUE: usize = 4096;
/// Longest timeout a record may have (one day).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Most changes queued for one record before the oldest are folded (sets) or dropped.
const MAX_PENDING_OPS: usize = 256;

/// One change to a record's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldOp {
    /// `setvar:coll.name=value`
    Set(Vec<u8>, Vec<u8>),
    /// `setvar:coll.name=+N` / `-N`: added to what the store holds (so nodes' increments add up).
    Add(Vec<u8>, i64),
    /// `setvar:!coll.name`
    Del(Vec<u8>),
    /// `expirevar:coll.name=SECONDS`
    Expire(Vec<u8>, u32),
}

impl FieldOp {
    /// The field the change is about.
    pub fn name(&self) -> &[u8] {
        match self {
            FieldOp::Set(n, _) | FieldOp::Add(n, _) | FieldOp::Del(n) | FieldOp::Expire(n, _) => n,
        }
    }
}

/// A field's value and when it expires (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Value.
    pub value: Vec<u8>,
    /// Expiry, if `expirevar` set one.
    pub expires_ms: Option<u64>,
}

/// A record as kept here and on the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Fields by (lowercase) name.
    pub fields: HashMap<Vec<u8>, Field>,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Last change.
    pub updated_ms: u64,
    /// Number of transactions that changed it.
    pub counter: u64,
    /// Timeout: the record is gone `timeout_ms` after its last change.
    pub timeout_ms: u64,
    /// When the fleet store last answered for it (fleet mode only).
    pub fetched_ms: Option<u64>,
}

impl Record {
    fn expired(&self, now: u64) -> bool {
        self.updated_ms > 0 && self.updated_ms.saturating_add(self.timeout_ms) <= now
    }

    fn drop_expired_fields(&mut self, now: u64) {
        self.fields
            .retain(|_, f| f.expires_ms.is_none_or(|e| e > now));
    }

    fn set(&mut self, n: &[u8], v: Vec<u8>) {
        if let Some(f) = self.fields.get_mut(n) {
            f.value = v;
        } else if self.fields.len() < MAX_FIELDS {
            self.fields.insert(
                n.to_vec(),
                Field {
                    value: v,
                    expires_ms: None,
                },
            );
        }
    }

    /// Applies one transaction's changes at `now`.
    pub fn apply(&mut self, ops: &[FieldOp], timeout_ms: u64, now: u64) {
        self.drop_expired_fields(now);
        for op in ops {
            match op {
                FieldOp::Set(n, v) => self.set(n, v.clone()),
                FieldOp::Add(n, d) => {
                    let cur = self.fields.get(n).map(|f| atoi(&f.value)).unwrap_or(0);
                    self.set(n, cur.saturating_add(*d).to_string().into_bytes());
                }
                FieldOp::Del(n) => {
                    self.fields.remove(n);
                }
                FieldOp::Expire(n, secs) => {
                    if let Some(f) = self.fields.get_mut(n) {
                        f.expires_ms = Some(now + u64::from(*secs) * 1000);
                    }
                }
            }
        }
        if self.created_ms == 0 {
            self.created_ms = now;
        }
        self.updated_ms = now;
        self.counter += 1;
        self.timeout_ms = timeout_ms;
    }

    /// The bytes `sluice.collection.read` answers: fresh (u8: 0 fresh, 1 stale, the
    /// fleet store should be asked), created, updated (seconds, u32 each), counter (u32),
    /// n (u32), then n x (name_len, name, value_len, value).
    pub fn encode(&self, stale: bool, now: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(stale as u8);
        for n in [self.created_ms / 1000, self.updated_ms / 1000, self.counter] {
            out.extend_from_slice(&(n.min(u32::MAX as u64) as u32).to_le_bytes());
        }
        let live: Vec<_> = self
            .fields
            .iter()
            .filter(|(_, f)| f.expires_ms.is_none_or(|e| e > now))
            .collect();
        out.extend_from_slice(&(live.len() as u32).to_le_bytes());
        for (n, f) in live {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(n);
            out.extend_from_slice(&(f.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&f.value);
        }
        out
    }
}

/// ModSecurity's number reading: leading sign and digits, anything else 0.
fn atoi(b: &[u8]) -> i64 {
    std::str::from_utf8(b)
        .ok()
        .map(str::trim)
        .and_then(|s| {
            let end = s
                .char_indices()
                .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
                .map_or(s.len(), |(i, _)| i);
            s[..end].parse().ok()
        })
        .unwrap_or(0)
}

/// Changes waiting to be written to the fleet store for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The record's key.
    pub key: Vec<u8>,
    /// Its timeout.
    pub timeout_ms: u64,
    /// The changes, oldest first, each transaction's closed by [`Pending::commits`].
    pub ops: Vec<FieldOp>,
    /// Transactions these changes come from (the store counts its `UPDATE_COUNTER`).
    pub commits: u32,
}

/// The process's records and the changes queued for the fleet store.
pub struct Collections {
    records: Mutex<LruCache<Vec<u8>, Record>>,
    pending: Mutex<HashMap<Vec<u8>, Pending>>,
}

/// The process's collections.
pub fn collections() -> &'static Collections {
    static C: OnceLock<Collections> = OnceLock::new();
    C.get_or_init(|| Collections::new(MAX_RECORDS))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Collections {
    /// An empty set of at most `max` records.
    pub fn new(max: usize) -> Collections {
        Collections {
            records: Mutex::new(LruCache::new(
                NonZeroUsize::new(max.max(1)).expect("nonzero"),
            )),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The record's bytes ([`Record::encode`]); an absent or timed-out record reads as
    /// empty. With `refresh_ms` (fleet mode), a record the store has not answered for
    /// within it reads as stale.
    pub fn read(&self, key: &[u8], refresh_ms: Option<u64>, now: u64) -> Vec<u8> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let rec = match records.get_mut(key) {
            Some(r) if !r.expired(now) => r,
            Some(_) => {
                records.pop(key);
                return Record::default().encode(refresh_ms.is_some(), now);
            }
            None => return Record::default().encode(refresh_ms.is_some(), now),
        };
        let stale = refresh_ms.is_some_and(|r| rec.fetched_ms.is_none_or(|f| f + r <= now));
        rec.encode(stale, now)
    }

    /// Applies one transaction's changes; with `fleet`, also queues them for the store.
    pub fn apply(&self, key: &[u8], timeout_ms: u64, ops: Vec<FieldOp>, fleet: bool, now: u64) {
        if ops.is_empty() {
            return;
        }
        let timeout_ms = timeout_ms.clamp(1000, MAX_TIMEOUT_MS);
        {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            if records.peek(key).is_some_and(|r| r.expired(now)) {
                records.pop(key);
            }
            records
                .get_or_insert_mut(key.to_vec(), Record::default)
                .apply(&ops, timeout_ms, now);
        }
        if fleet {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_RECORDS && !pending.contains_key(key) {
                return;
            }
            let p = pending.entry(key.to_vec()).or_insert_with(|| Pending {
                key: key.to_vec(),
                timeout_ms,
                ops: Vec::new(),
                commits: 0,
            });
            p.timeout_ms = timeout_ms;
            p.commits += 1;
            p.ops.extend(ops);
            if p.ops.len() > MAX_PENDING_OPS {
                p.ops = fold(std::mem::take(&mut p.ops));
                p.ops.truncate(MAX_PENDING_OPS);
            }
        }
    }

    /// Takes every queued change (the proxy writes them to the store).
    pub fn take_pending(&self) -> Vec<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .drain()
            .map(|(_, mut p)| {
                p.ops = fold(std::mem::take(&mut p.ops));
                p
            })
            .collect()
    }

    /// Takes the changes queued for one record (a load writes them on its way).
    pub fn take_pending_for(&self, key: &[u8]) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(key).map(|mut p| {
            p.ops = fold(std::mem::take(&mut p.ops));
            p
        })
    }

    /// Puts back changes the store could not take (kept unless newer ones are there).
    pub fn requeue(&self, p: Pending) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(&p.key) {
            Some(newer) => {
                let mut ops = p.ops;
                ops.append(&mut newer.ops);
                newer.ops = fold(ops);
                newer.ops.truncate(MAX_PENDING_OPS);
                newer.commits += p.commits;
            }
            None => {
                if pending.len() < MAX_RECORDS {
                    pending.insert(p.key.clone(), p);
                }
            }
        }
    }

    /// What the store answered for `key` replaces the local copy; changes queued since are
    /// applied again on top. `remote` `None`: the store could not answer, the local copy
    /// counts as fresh until the next refresh (no request waits on a down store twice).
    pub fn absorb(&self, key: &[u8], remote: Option<Record>, now: u64) {
        let queued = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.get(key).map(|p| (p.ops.clone(), p.timeout_ms))
        };
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let rec = match remote {
            Some(mut r) => {
                if let Some((ops, timeout)) = queued {
                    r.apply(&ops, timeout, now);
                    r.counter -= 1;
                }
                r.fetched_ms = Some(now);
                r
            }
            None => {
                let mut r = records.pop(key).unwrap_or_default();
                r.fetched_ms = Some(now);
                r
            }
        };
        records.put(key.to_vec(), rec);
    }

    /// Number of records kept (metrics, tests).
    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Folds a run of changes: additions to one field with nothing between them on that field
/// become one (what makes a flood of `+1` one small write).
fn fold(ops: Vec<FieldOp>) -> Vec<FieldOp> {
    let mut out: Vec<FieldOp> = Vec::with_capacity(ops.len());
    for op in ops {
        if let FieldOp::Add(n, d) = &op {
            if let Some(FieldOp::Add(_, prev)) = out
                .iter_mut()
                .rev()
                .find(|o| o.name() == n.as_slice())
                .filter(|o| matches!(o, FieldOp::Add(..)))
            {
                *prev = prev.saturating_add(*d);
                continue;
            }
        }
        out.push(op);
    }
    out
}

/// Decodes `sluice.collection.apply`'s changes: n (u32), then n x (kind u8: 0 set, 1 add,
/// 2 delete, 3 expire; name_len, name; set: value_len, value; add: i64 LE; expire: seconds
/// u32). `None` when the bytes do not decode or break a limit.
pub fn decode_ops(mut b: &[u8]) -> Option<Vec<FieldOp>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (a, rest) = b.split_at(n);
        *b = rest;
        Some(a)
    }
    fn u32le(b: &mut &[u8]) -> Option<u32> {
        take(b, 4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    }
    let n = u32le(&mut b)? as usize;
    if n > MAX_PENDING_OPS {
        return None;
    }
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = take(&mut b, 1)?[0];
        let len = u32le(&mut b)? as usize;
        if len == 0 || len > MAX_NAME {
            return None;
        }
        let name = take(&mut b, len)?.to_vec();
        ops.push(match kind {
            0 => {
                let len = u32le(&mut b)? as usize;
                if len > MAX_FIELD_VALUE {
                    return None;
                }
                FieldOp::Set(name, take(&mut b, len)?.to_vec())
            }
            1 => {
                let x = take(&mut b, 8)?;
                FieldOp::Add(name, i64::from_le_bytes(x.try_into().ok()?))
            }
            2 => FieldOp::Del(name),
            3 => FieldOp::Expire(name, u32le(&mut b)?.min((MAX_TIMEOUT_MS / 1000) as u32)),
            _ => return None,
        });
    }
    b.is_empty().then_some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(n: &str, d: i64) -> FieldOp {
        FieldOp::Add(n.as_bytes().to_vec(), d)
    }

    fn fields(c: &Collections, key: &[u8], now: u64) -> Vec<(String, String)> {
        let b = c.read(key, None, now);
        let n = u32::from_le_bytes(b[13..17].try_into().unwrap()) as usize;
        let mut at = 17;
        let mut out = Vec::new();
        for _ in 0..n {
            let l = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            let name = String::from_utf8_lossy(&b[at + 4..at + 4 + l]).into_owned();
            at += 4 + l;
            let l = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            let v = String::from_utf8_lossy(&b[at + 4..at + 4 + l]).into_owned();
            at += 4 + l;
            out.push((name, v));
        }
        out.sort();
        out
    }

    #[test]
    fn changes_persist_expire_and_time_out() {
        let c = Collections::new(10);
        let t = 1_000_000;
        c.apply(b"ip:a", 60_000, vec![add("n", 1)], false, t);
        c.apply(
            b"ip:a",
            60_000,
            vec![
                add("n", 2),
                FieldOp::Set(b"f".to_vec(), b"1".to_vec()),
                FieldOp::Expire(b"f".to_vec(), 5),
            ],
            false,
            t + 1,
        );
        assert_eq!(
            fields(&c, b"ip:a", t + 2),
            [("f".into(), "1".into()), ("n".into(), "3".into())]
        );
        // The field expires, the rest stays.
        assert_eq!(fields(&c, b"ip:a", t + 6_000), [("n".into(), "3".into())]);
        // The record times out 60 s after its last change.
        assert!(fields(&c, b"ip:a", t + 61_001).is_empty());
        assert!(c.is_empty());
    }

    #[test]
    fn the_store_is_bounded_and_queues_fold() {
        let c = Collections::new(3);
        for i in 0..10u8 {
            c.apply(&[i], 60_000, vec![add("n", 1)], true, 1000);
        }
        assert_eq!(c.len(), 3);
        for _ in 0..1000 {
            c.apply(b"k", 60_000, vec![add("n", 1)], true, 1000);
        }
        let p = c.take_pending_for(b"k").unwrap();
        assert_eq!(p.ops, [add("n", 1000)]);
        assert_eq!(p.commits, 1000);
        assert_eq!(c.take_pending().len(), 10);
        // A stale read in fleet mode until the store answered.
        assert_eq!(c.read(b"k", Some(1000), 1000)[0], 1);
        c.absorb(b"k", None, 1000);
        assert_eq!(c.read(b"k", Some(1000), 1500)[0], 0);
        assert_eq!(c.read(b"k", Some(1000), 2000)[0], 1);
    }

    #[test]
    fn absorbed_records_keep_the_changes_still_queued() {
        let c = Collections::new(10);
        c.apply(b"k", 60_000, vec![add("n", 2)], true, 1000);
        let mut remote = Record::default();
        remote.fields.insert(
            b"n".to_vec(),
            Field {
                value: b"40".to_vec(),
                expires_ms: None,
            },
        );
        remote.updated_ms = 900;
        remote.timeout_ms = 60_000;
        c.absorb(b"k", Some(remote), 1000);
        assert_eq!(fields(&c, b"k", 1000), [("n".into(), "42".into())]);
    }

    #[test]
    fn hostile_change_lists_are_refused() {
        assert_eq!(decode_ops(&[]), None);
        assert_eq!(decode_ops(&0u32.to_le_bytes()), Some(vec![]));
        let mut b = 1u32.to_le_bytes().to_vec();
        b.push(0);
        b.extend((MAX_NAME as u32 + 1).to_le_bytes());
        assert_eq!(decode_ops(&b), None);
        let mut b = 1u32.to_le_bytes().to_vec();
        b.push(9);
        b.extend(1u32.to_le_bytes());
        b.push(b'n');
        assert_eq!(decode_ops(&b), None);
        let mut b = u32::MAX.to_le_bytes().to_vec();
        b.push(2);
        assert_eq!(decode_ops(&b), None);
        assert_eq!(atoi(b"12abc"), 12);
        assert_eq!(atoi(b"-3"), -3);
        assert_eq!(atoi(b"x"), 0);
    }
}
