//! Persistent collections in a transaction: `initcol` loads a record from the
//! [`CollectionStore`], rules read and change it as any collection, and the changes go
//! back to the store when the transaction ends ([`Transaction::commit`]).

use super::*;
use crate::persist::{CollectionStore, FieldOp, Loaded};

/// A record `initcol` loaded, and the changes made to it since.
#[derive(Clone, Debug)]
pub(super) struct Col {
    key: Vec<u8>,
    updated: u32,
    ops: Vec<FieldOp>,
}

/// Most changes one transaction may make to one record (a loop of `setvar` stays small).
const MAX_OPS: usize = 128;

impl Transaction {
    /// Gives the transaction its store; with `may_load`, a stale record met in phase 1
    /// stops the phase and names itself in [`Transaction::load`].
    pub fn set_store(&mut self, store: Rc<dyn CollectionStore>, may_load: bool) {
        self.store = Some(store);
        self.may_load = may_load;
    }

    /// Records already loaded for this request (a run after a load must not ask again).
    pub fn set_loaded(&mut self, keys: Vec<Vec<u8>>) {
        self.loaded = keys;
    }

    /// `initcol:COLL=KEY`: the record's fields (and ModSecurity's built-in ones) become
    /// the collection's values.
    pub(super) fn init_collection(&mut self, i: u8, key: &[u8]) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut full = PERSIST[i as usize].as_bytes().to_vec();
        full.push(b'=');
        full.extend_from_slice(key);
        full.truncate(1000);
        let rec: Loaded = store.read(&full);
        if rec.stale && self.may_load && !self.loaded.contains(&full) {
            self.load = Some(full);
            return;
        }
        let now = store.now_s();
        self.persist[i as usize].clear();
        for (n, v) in &rec.fields {
            self.set_tx_kv(SetColl::Persist(i), n, v);
        }
        let timeout = self.eng.settings.collection_timeout;
        let builtins: [(&[u8], String); 6] = [
            (b"key", String::from_utf8_lossy(key).into_owned()),
            (b"timeout", timeout.to_string()),
            (
                b"create_time",
                if rec.created == 0 {
                    now.to_string()
                } else {
                    rec.created.to_string()
                },
            ),
            (b"last_update_time", rec.updated.to_string()),
            (b"update_counter", rec.counter.to_string()),
            (b"is_new", u8::from(rec.created == 0).to_string()),
        ];
        for (n, v) in builtins {
            self.set_tx_kv(SetColl::Persist(i), n, v.as_bytes());
        }
        self.cols[i as usize] = Some(Col {
            key: full,
            updated: rec.updated,
            ops: Vec::new(),
        });
    }

    /// Notes a change to collection `i`'s record (none when no `initcol` loaded one: the
    /// change then lives as long as the transaction, as in ModSecurity).
    pub(super) fn record_op(&mut self, i: u8, op: FieldOp) {
        if let Some(c) = self.cols[i as usize].as_mut() {
            if c.ops.len() < MAX_OPS {
                c.ops.push(op);
            }
        }
    }

    /// `deprecatevar:COLL.name=N/SECONDS`: lowers `cur` by N for each SECONDS since the
    /// record's last update (never below 0).
    pub(super) fn deprecate(&mut self, i: u8, name: &[u8], arg: &[u8], cur: i64) {
        let (Some(store), Some(col)) = (self.store.clone(), self.cols[i as usize].as_ref()) else {
            return;
        };
        let s = String::from_utf8_lossy(arg);
        let Some((n, secs)) = s.split_once('/') else {
            return;
        };
        let (n, secs) = (ops::atoi(n.as_bytes()), ops::atoi(secs.as_bytes()));
        if n <= 0 || secs <= 0 || col.updated == 0 {
            return;
        }
        let periods = store.now_s().saturating_sub(u64::from(col.updated)) as i64 / secs;
        if periods == 0 || cur <= 0 {
            return;
        }
        let v = cur
            .saturating_sub(n.saturating_mul(periods))
            .max(0)
            .to_string();
        self.record_op(i, FieldOp::Set(name.to_vec(), v.clone().into_bytes()));
        self.set_tx_kv(SetColl::Persist(i), name, v.as_bytes());
    }

    /// Hands every loaded record's changes to the store (once; the transaction ends).
    pub fn commit(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let timeout = self.eng.settings.collection_timeout;
        for c in self.cols.iter_mut().filter_map(Option::take) {
            if !c.ops.is_empty() {
                store.apply(&c.key, timeout, &c.ops);
            }
        }
    }
}
