//! Tables a finished transaction hands to the next one (a filter VM is one thread).
//!
//! A transaction fills a few maps and vectors that start empty and grow (the transformation
//! cache, prefilter bitsets, `MATCHED_VAR_NAME`s, memo rows, the value vectors, the TX map
//! restored from the snapshot). Growing them again on every request costs allocations and
//! rehashes; instead, when a transaction is dropped its tables are emptied and kept, and the
//! next [`Transaction::new`] starts with their capacity. Only capacity is carried over:
//! every table is cleared before it is kept (they are keyed by per-request value ids).

use super::*;
use std::cell::RefCell;

/// The reusable tables of one transaction, all empty.
#[derive(Default)]
pub(super) struct Spare {
    pub(super) args_get: Vec<Kv>,
    pub(super) args_post: Vec<Kv>,
    pub(super) headers: Vec<Kv>,
    pub(super) cookies: Vec<Kv>,
    pub(super) resp_headers: Vec<Kv>,
    /// `SCALARS.len()` entries, all `None`.
    pub(super) scalars: Vec<Option<Kv>>,
    pub(super) tx: Option<TxMap>,
    pub(super) persist: Vec<FxMap<Rc<[u8]>, Kv>>,
    pub(super) matched_vars: Vec<Kv>,
    pub(super) cache: FxMap<u64, Rc<[u8]>>,
    pub(super) pf_cache: FxMap<u64, usize>,
    pub(super) pf_bits: Vec<u64>,
    pub(super) names: FxMap<(u32, V), Rc<[u8]>>,
    /// Not cleared: a variable's bare name does not depend on the request.
    pub(super) var_names: FxMap<V, Rc<[u8]>>,
    pub(super) scratch: Vec<Val>,
    pub(super) buf_a: Vec<u8>,
    pub(super) buf_b: Vec<u8>,
    pub(super) memo_rows: Vec<u32>,
    /// Every entry `None` (the lists were recycled before), `lists_used` empty.
    pub(super) lists: Vec<Option<Rc<List>>>,
    pub(super) lists_used: Vec<u32>,
    /// Reset (`Misses::reset`, with the lists).
    pub(super) misses: misses::Misses,
    pub(super) logs: Vec<MatchLog>,
    /// The shared empty value.
    pub(super) empty: Option<Rc<[u8]>>,
}

thread_local! {
    static SPARE: RefCell<Option<Box<Spare>>> = const { RefCell::new(None) };
}

/// The tables the last transaction left (empty ones when there are none).
pub(super) fn take() -> Box<Spare> {
    SPARE.with(|s| s.borrow_mut().take()).unwrap_or_else(|| {
        Box::new(Spare {
            scalars: vec![None; SCALARS.len()],
            ..Spare::default()
        })
    })
}

impl Transaction {
    /// Empties this transaction's tables into the spare for the next one (on drop).
    pub(super) fn keep_tables(&mut self) {
        use std::mem::take;
        let mut scalars = take(&mut self.scalars);
        scalars.clear();
        scalars.resize(SCALARS.len(), None);
        // (`Drop` recycles the lists first: every entry of `lists` is `None`)
        debug_assert!(self.lists_used.is_empty() && self.lists.iter().all(Option::is_none));
        let mut tx = take(&mut self.tx);
        tx.clear();
        let mut sp = Box::new(Spare {
            args_get: take(&mut self.args_get),
            args_post: take(&mut self.args_post),
            headers: take(&mut self.headers),
            cookies: take(&mut self.cookies),
            resp_headers: take(&mut self.resp_headers),
            scalars,
            tx: Some(tx),
            persist: take(&mut self.persist),
            matched_vars: take(&mut self.matched_vars),
            cache: take(&mut self.cache),
            pf_cache: take(&mut self.pf_cache),
            pf_bits: take(&mut self.pf_bits),
            names: take(&mut self.names),
            var_names: take(&mut self.var_names),
            scratch: take(&mut self.scratch),
            buf_a: take(&mut self.buf_a),
            buf_b: take(&mut self.buf_b),
            memo_rows: take(&mut self.memo_rows),
            lists: take(&mut self.lists),
            lists_used: take(&mut self.lists_used),
            misses: take(&mut self.misses),
            logs: take(&mut self.logs),
            empty: Some(self.empty.clone()),
        });
        sp.clear();
        SPARE.with(|s| *s.borrow_mut() = Some(sp));
    }
}

impl Spare {
    /// Empties every table but `var_names` (capacity stays).
    fn clear(&mut self) {
        self.args_get.clear();
        self.args_post.clear();
        self.headers.clear();
        self.cookies.clear();
        self.resp_headers.clear();
        for m in &mut self.persist {
            m.clear();
        }
        self.matched_vars.clear();
        self.cache.clear();
        self.pf_cache.clear();
        self.pf_bits.clear();
        self.names.clear();
        self.scratch.clear();
        self.buf_a.clear();
        self.buf_b.clear();
        self.memo_rows.clear();
        self.lists_used.clear();
        self.logs.clear();
    }
}
