//! Per-request evaluation: variables, transformation cache, operators, actions, phases.
//!
//! One file per step of a rule's evaluation, in the order a request meets them:
//! - [`input`]: the request line, headers and body parsed into variables;
//! - [`response`]: the response status, headers and body (phases 3 and 4);
//! - [`snapshot`]: the request-independent head of phase 1, run once at configure, and the
//!   gates folded from it;
//! - [`misses`]: the rules every value of their shared target list is a known miss for,
//!   from the memo rows of the lists' segments, collected once per phase;
//! - [`lists`]: the values of a rule's targets, collected once per phase, with memo rows;
//! - [`collections`]: a target resolved against the collections, and macro expansion;
//! - [`operator`]: one value through the transformations and the operator;
//! - [`actions`]: what a match does (setvar, ctl, captures, the match log);
//! - [`persist`]: records of persistent collections (`initcol`) loaded and changed;
//! - [`eval`]: rules and chains over a phase, skips and the disruptive decision.

mod actions;
mod collections;
mod eval;
mod input;
mod lists;
mod misses;
mod operator;
mod persist;
mod response;
mod snapshot;
mod spare;
mod txmap;

use persist::Col;
pub use snapshot::{Fold, Snapshot};
use txmap::TxMap;
pub use txmap::{tx_selectors, tx_slots, NO_SLOT};

use crate::hash::FxMap;
use crate::load::{Engine, Entry, LimitAction};
use crate::model::*;
use crate::ops::{self, Op};
use lists::{List, ROW_NONE};
use std::rc::Rc;

impl Drop for Transaction {
    fn drop(&mut self) {
        self.recycle_lists();
        self.keep_tables();
    }
}

const NOCACHE: u32 = u32::MAX;

/// A key/value with a per-request id (for the transformation cache).
#[derive(Clone, Debug)]
pub struct Kv {
    /// Key as received.
    pub key: Rc<[u8]>,
    /// Value.
    pub val: Rc<[u8]>,
    /// Unique per request (values 2n, keys 2n+1).
    pub id: u32,
}

#[derive(Clone)]
struct Val {
    var: V,
    key: Rc<[u8]>,
    val: Rc<[u8]>,
    id: u32,
}

/// One logged rule match.
#[derive(Clone, Debug)]
pub struct MatchLog {
    /// Rule id.
    pub id: u32,
    /// Index into `Engine::rules`.
    pub rule: usize,
    /// Expanded msg.
    pub msg: String,
    /// Matched variable name (`ARGS:id`).
    pub var: String,
    /// Expanded logdata (truncated).
    pub data: String,
}

/// A disruptive decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervention {
    /// HTTP status to answer.
    pub status: u16,
    /// Rule that decided.
    pub rule_id: u32,
    /// Phase.
    pub phase: u8,
}

/// State of one request.
pub struct Transaction {
    eng: Rc<Engine>,
    next_id: u32,
    args_get: Vec<Kv>,
    args_post: Vec<Kv>,
    headers: Vec<Kv>,
    cookies: Vec<Kv>,
    files: Vec<Kv>,
    files_sizes: Vec<Kv>,
    part_headers: Vec<Kv>,
    xml_text: Vec<Kv>,
    xml_attrs: Vec<Kv>,
    resp_headers: Vec<Kv>,
    scalars: Vec<Option<Kv>>,
    tx: TxMap,
    persist: Vec<FxMap<Rc<[u8]>, Kv>>,
    matched_var: Option<Kv>,
    matched_vars: Vec<Kv>,
    cache: FxMap<u64, Rc<[u8]>>,
    /// (value id, transformation chain) -> offset of its prefilter bitset in `pf_bits`.
    pf_cache: FxMap<u64, usize>,
    pf_bits: Vec<u64>,
    names: FxMap<(u32, V), Rc<[u8]>>,
    /// `MATCHED_VAR_NAME`s that are a variable's name alone (see `matched_name`).
    var_names: FxMap<V, Rc<[u8]>>,
    removed_ids: IdRanges,
    removed_tags: Vec<String>,
    excl_by_id: Vec<(IdRanges, Excl)>,
    excl_by_tag: Vec<(String, Excl)>,
    /// Effective engine mode (SecRuleEngine, then ctl:ruleEngine).
    pub mode: Mode,
    body_proc: Option<BodyProc>,
    force_body_var: bool,
    body_access: bool,
    resp_body_access: bool,
    /// Logged matches.
    pub logs: Vec<MatchLog>,
    /// The disruptive decision, if any (only in mode On).
    pub intervention: Option<Intervention>,
    /// What would have been denied in DetectionOnly.
    pub would_block: Option<Intervention>,
    allowed: bool,
    /// Counters: rules evaluated, operator calls.
    pub counters: (u32, u32),
    scratch: Vec<Val>,
    buf_a: Vec<u8>,
    buf_b: Vec<u8>,
    empty: Rc<[u8]>,
    /// Phase-1 entries already evaluated by a restored [`Snapshot`], and its `MATCHED_VAR`.
    skip1: (usize, usize),
    skip1_mv: Option<Kv>,
    /// Value id -> memo row ([`ROW_UNKNOWN`], [`ROW_NONE`]), valid for `memo_gen`.
    memo_rows: Vec<u32>,
    memo_gen: u32,
    /// Collected values per interned target list (`Rule::tlist`), for the running phase.
    lists: Vec<Option<Rc<List>>>,
    /// The indices of `lists` holding a list (so that recycling visits only those).
    lists_used: Vec<u32>,
    /// The known misses of the shared lists in this phase (reset with `lists`).
    misses: misses::Misses,
    /// Input values added or replaced so far (every `kv` and `set_scalar`: request, body,
    /// response), and its count when `lists` were started.
    input_gen: u64,
    lists_input_gen: u64,
    /// Gates folded at configure (from the [`Snapshot`]).
    folds: Rc<[Vec<Fold>; 6]>,
    /// Per phase, per entry: the next entry to evaluate (from the [`Snapshot`];
    /// `snapshot::next_evals`), empty without one.
    next: Rc<[Vec<u32>; 6]>,
    /// The `MATCHED_VARS` of [`Fold::Counted`] gates (from the [`Snapshot`]).
    counted: Rc<Vec<Vec<Kv>>>,
    /// The operator argument of the rule being evaluated, expanded (see [`Transaction::arg`]).
    op_arg: std::cell::RefCell<Option<Rc<[u8]>>>,
    /// Where persistent collections' records live (none: per transaction only).
    store: Option<Rc<dyn crate::persist::CollectionStore>>,
    /// Per persistent collection: the record `initcol` loaded and the changes made to it.
    cols: Vec<Option<Col>>,
    /// Records a stale read may ask to load (phase 1 only; the caller loads it and runs
    /// the transaction again), and the ones already loaded for this request.
    may_load: bool,
    loaded: Vec<Vec<u8>>,
    /// A record to load from the fleet before this transaction is run again.
    pub load: Option<Vec<u8>>,
}

fn rc(b: &[u8]) -> Rc<[u8]> {
    Rc::from(b)
}

impl Transaction {
    /// A new transaction for `eng`.
    pub fn new(eng: Rc<Engine>) -> Self {
        let mode = eng.settings.mode;
        let body_access = eng.settings.body_access;
        let resp_body_access = eng.settings.resp_body_access;
        let memo_gen = eng.memo.borrow().generation();
        // (tables a finished transaction left, empty: see `spare`)
        let sp = *spare::take();
        let tx = match sp.tx {
            Some(mut t) => {
                t.rewatch(eng.tx_selectors.clone(), eng.tx_slots.clone());
                t
            }
            None => TxMap::new(eng.tx_selectors.clone(), eng.tx_slots.clone()),
        };
        let mut persist = sp.persist;
        persist.resize(PERSIST.len(), FxMap::default());
        Transaction {
            eng,
            next_id: 0,
            args_get: sp.args_get,
            args_post: sp.args_post,
            headers: sp.headers,
            cookies: sp.cookies,
            files: Vec::new(),
            files_sizes: Vec::new(),
            part_headers: Vec::new(),
            xml_text: Vec::new(),
            xml_attrs: Vec::new(),
            resp_headers: sp.resp_headers,
            scalars: sp.scalars,
            tx,
            persist,
            matched_var: None,
            matched_vars: sp.matched_vars,
            cache: sp.cache,
            pf_cache: sp.pf_cache,
            pf_bits: sp.pf_bits,
            names: sp.names,
            var_names: sp.var_names,
            removed_ids: Vec::new(),
            removed_tags: Vec::new(),
            excl_by_id: Vec::new(),
            excl_by_tag: Vec::new(),
            mode,
            body_proc: None,
            force_body_var: false,
            body_access,
            resp_body_access,
            logs: sp.logs,
            intervention: None,
            would_block: None,
            allowed: false,
            counters: (0, 0),
            scratch: sp.scratch,
            buf_a: sp.buf_a,
            buf_b: sp.buf_b,
            empty: sp.empty.unwrap_or_else(|| Rc::from(&b""[..])),
            skip1: (0, 0),
            skip1_mv: None,
            memo_rows: sp.memo_rows,
            memo_gen,
            lists: sp.lists,
            lists_used: sp.lists_used,
            misses: sp.misses,
            input_gen: 0,
            lists_input_gen: 0,
            folds: Rc::new(Default::default()),
            next: Rc::new(Default::default()),
            counted: Rc::new(Vec::new()),
            op_arg: Default::default(),
            store: None,
            cols: vec![None; PERSIST.len()],
            may_load: false,
            loaded: Vec::new(),
            load: None,
        }
    }

    /// Before a phase: collected lists are per phase (the body adds values between phases),
    /// memo rows per memo generation (another transaction may have trimmed it).
    /// The lists of the last phase are kept when no input value was added or replaced since
    /// they were started (a GET's phase 2 sees phase 1's values) and the memo generation is
    /// the same (their rows and known misses are still valid).
    fn phase_start(&mut self) {
        let g = self.eng.memo.borrow().generation();
        if g != self.memo_gen || self.input_gen != self.lists_input_gen {
            self.recycle_lists();
            self.lists_input_gen = self.input_gen;
        }
        self.lists.resize(self.eng.n_tlists as usize, None);
        if g != self.memo_gen {
            self.memo_rows.clear();
            self.memo_gen = g;
        }
    }

    /// Access to the engine.
    pub fn engine(&self) -> &Rc<Engine> {
        &self.eng
    }
}
