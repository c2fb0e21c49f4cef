//! Persistent collections (`initcol`): where records live between requests.
//!
//! A transaction reads a record when `initcol` names it and hands back its changes
//! (`setvar`, `expirevar`, `deprecatevar` on it) when it ends. The store is the host's
//! when it offers `sluice.collection.*` (process-wide, and shared by the fleet when the
//! policy has a `[fleet]` store; see Sluice's `docs/ABI.md`), else this VM's own
//! [`LocalStore`] (a host without them, and the engine's tests).

use std::cell::RefCell;
use std::collections::HashMap;

/// One change to a field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldOp {
    /// `setvar:coll.name=value`
    Set(Vec<u8>, Vec<u8>),
    /// `setvar:coll.name=+N` (or `-N`): added to what the store holds, so that every
    /// node's and every thread's increments add up.
    Add(Vec<u8>, i64),
    /// `setvar:!coll.name`
    Del(Vec<u8>),
    /// `expirevar:coll.name=SECONDS`
    Expire(Vec<u8>, u32),
}

/// A record as a transaction sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The store wants the record loaded from the fleet before it is relied on.
    pub stale: bool,
    /// `CREATE_TIME` (seconds since the Unix epoch; 0: a new record).
    pub created: u32,
    /// `LAST_UPDATE_TIME`.
    pub updated: u32,
    /// `UPDATE_COUNTER`.
    pub counter: u32,
    /// Live fields, lowercase names.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where records live.
pub trait CollectionStore {
    /// The record named `key` (empty when there is none).
    fn read(&self, key: &[u8]) -> Loaded;
    /// Applies one transaction's changes; the record times out `timeout_s` after.
    fn apply(&self, key: &[u8], timeout_s: u32, ops: &[FieldOp]);
    /// Seconds since the Unix epoch (`deprecatevar`, `IS_NEW`).
    fn now_s(&self) -> u64;
}

/// Most records a [`LocalStore`] keeps (the oldest update goes first).
const LOCAL_MAX: usize = 10_000;

#[derive(Default, Clone)]
struct LocalRecord {
    fields: HashMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
    created: u64,
    updated: u64,
    counter: u32,
    timeout: u64,
}

/// Records kept in this VM's memory, bounded; time from `clock`.
pub struct LocalStore {
    records: RefCell<HashMap<Vec<u8>, LocalRecord>>,
    clock: Box<dyn Fn() -> u64>,
}

impl LocalStore {
    /// An empty store reading the time (seconds) from `clock`.
    pub fn new(clock: Box<dyn Fn() -> u64>) -> LocalStore {
        LocalStore {
            records: RefCell::new(HashMap::new()),
            clock,
        }
    }
}

impl CollectionStore for LocalStore {
    fn read(&self, key: &[u8]) -> Loaded {
        let now = self.now_s();
        let mut records = self.records.borrow_mut();
        let Some(r) = records.get(key) else {
            return Loaded::default();
        };
        if r.updated + r.timeout <= now {
            records.remove(key);
            return Loaded::default();
        }
        Loaded {
            stale: false,
            created: r.created as u32,
            updated: r.updated as u32,
            counter: r.counter,
            fields: r
                .fields
                .iter()
                .filter(|(_, (_, e))| e.is_none_or(|e| e > now))
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn apply(&self, key: &[u8], timeout_s: u32, ops: &[FieldOp]) {
        if ops.is_empty() {
            return;
        }
        let now = self.now_s();
        let mut records = self.records.borrow_mut();
        if records.len() >= LOCAL_MAX && !records.contains_key(key) {
            records.retain(|_, r| r.updated + r.timeout > now);
            if records.len() >= LOCAL_MAX {
                if let Some(oldest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.updated)
                    .map(|(k, _)| k.clone())
                {
                    records.remove(&oldest);
                }
            }
        }
        let r = records.entry(key.to_vec()).or_default();
        if r.updated + r.timeout <= now {
            *r = LocalRecord::default();
        }
        r.fields.retain(|_, (_, e)| e.is_none_or(|e| e > now));
        for op in ops {
            match op {
                FieldOp::Set(n, v) => {
                    r.fields.entry(n.clone()).or_insert((Vec::new(), None)).0 = v.clone();
                }
                FieldOp::Add(n, d) => {
                    let f = r.fields.entry(n.clone()).or_insert((Vec::new(), None));
                    f.0 = crate::ops::atoi(&f.0)
                        .saturating_add(*d)
                        .to_string()
                        .into_bytes();
                }
                FieldOp::Del(n) => {
                    r.fields.remove(n);
                }
                FieldOp::Expire(n, s) => {
                    if let Some(f) = r.fields.get_mut(n) {
                        f.1 = Some(now + u64::from(*s));
                    }
                }
            }
        }
        if r.created == 0 {
            r.created = now;
        }
        r.updated = now;
        r.counter += 1;
        r.timeout = u64::from(timeout_s.max(1));
    }

    fn now_s(&self) -> u64 {
        (self.clock)()
    }
}

/// `sluice.collection.apply`'s arguments: timeout_s, key_len, key, n, then each change.
pub fn encode_apply(key: &[u8], timeout_s: u32, ops: &[FieldOp]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + key.len() + 16 * ops.len());
    b.extend_from_slice(&timeout_s.to_le_bytes());
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    let sized = |b: &mut Vec<u8>, x: &[u8]| {
        b.extend_from_slice(&(x.len() as u32).to_le_bytes());
        b.extend_from_slice(x);
    };
    for op in ops {
        match op {
            FieldOp::Set(n, v) => {
                b.push(0);
                sized(&mut b, n);
                sized(&mut b, v);
            }
            FieldOp::Add(n, d) => {
                b.push(1);
                sized(&mut b, n);
                b.extend_from_slice(&d.to_le_bytes());
            }
            FieldOp::Del(n) => {
                b.push(2);
                sized(&mut b, n);
            }
            FieldOp::Expire(n, s) => {
                b.push(3);
                sized(&mut b, n);
                b.extend_from_slice(&s.to_le_bytes());
            }
        }
    }
    b
}

/// Reads `sluice.collection.read`'s answer.
pub fn decode_record(b: &[u8]) -> Option<Loaded> {
    let u =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let mut l = Loaded {
        stale: *b.first()? == 1,
        created: u(1)?,
        updated: u(5)?,
        counter: u(9)?,
        fields: Vec::new(),
    };
    let n = u(13)? as usize;
    let mut at = 17;
    for _ in 0..n.min(4096) {
        let len = u(at)? as usize;
        let name = b.get(at + 4..at + 4 + len)?.to_vec();
        at += 4 + len;
        let len = u(at)? as usize;
        let value = b.get(at + 4..at + 4 + len)?.to_vec();
        at += 4 + len;
        l.fields.push((name, value));
    }
    Some(l)
}
