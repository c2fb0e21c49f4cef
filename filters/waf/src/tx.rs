//! Per-request evaluation: variables, transformation cache, operators, actions, phases.

use crate::body;
use crate::load::{Engine, Entry, LimitAction};
use crate::model::*;
use crate::ops::{self, Caps, Op};
use crate::transform::{form_decode, uri_decode};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// FxHash-style hasher for small integer keys.
#[derive(Default)]
pub struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.recycle_lists();
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

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
    scalars: Vec<Option<Kv>>,
    tx: FxMap<Rc<[u8]>, Kv>,
    persist: Vec<FxMap<Rc<[u8]>, Kv>>,
    matched_var: Option<Kv>,
    matched_vars: Vec<Kv>,
    cache: FxMap<u64, Rc<[u8]>>,
    /// (value id, transformation chain) -> offset of its prefilter bitset in `pf_bits`.
    pf_cache: FxMap<u64, usize>,
    pf_bits: Vec<u64>,
    names: FxMap<(u32, V), Rc<[u8]>>,
    removed_ids: IdRanges,
    removed_tags: Vec<String>,
    excl_by_id: Vec<(IdRanges, Excl)>,
    excl_by_tag: Vec<(String, Excl)>,
    /// Effective engine mode (SecRuleEngine, then ctl:ruleEngine).
    pub mode: Mode,
    body_proc: Option<BodyProc>,
    force_body_var: bool,
    body_access: bool,
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
    /// Gates folded at configure (from the [`Snapshot`]).
    folds: Rc<[Vec<Fold>; 6]>,
    /// The operator argument of the rule being evaluated, expanded (see [`Transaction::arg`]).
    op_arg: std::cell::RefCell<Option<Rc<[u8]>>>,
}

/// The values of a shared target list and their memo rows ([`ROW_NONE`] when not memoised).
#[derive(Default)]
struct List {
    vals: Vec<Val>,
    rows: Vec<u32>,
}

/// An operator argument: a literal, or a macro expanded once per rule evaluation.
enum Arg<'m> {
    Lit(&'m [u8]),
    Expanded(Rc<[u8]>),
}

impl std::ops::Deref for Arg<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Arg::Lit(l) => l,
            Arg::Expanded(e) => e,
        }
    }
}

thread_local! {
    /// Emptied [`List`]s kept for reuse across phases and transactions (a filter VM is one
    /// thread), so collecting a list allocates nothing in the steady state.
    static LIST_POOL: std::cell::RefCell<Vec<Rc<List>>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// Most lists kept in [`LIST_POOL`].
const LIST_POOL_MAX: usize = 512;

/// `memo_rows`: not looked up yet.
const ROW_UNKNOWN: u32 = u32::MAX;
/// `memo_rows`: the value is not memoised (too long, memo full or off).
const ROW_NONE: u32 = u32::MAX - 1;
/// Value ids beyond this are not memoised (bounds `memo_rows`).
const MAX_MEMO_ID: u32 = 1 << 16;

/// Transaction state after the request-independent part of phase 1 (the CRS 901xxx
/// initialisation: rules that read and write only TX and persistent collections), computed
/// once at configure and restored into each new transaction instead of re-running those rules.
///
/// Phase 1 is `[A][B][rest]`: A are leading rules that read the request but can change nothing
/// B depends on (no setvar/capture/skip, body-only `ctl`, pass, read no TX or MATCHED_VAR);
/// B are the request-independent rules. Each request runs A, then jumps over B (taking B's
/// last `MATCHED_VAR`), then runs the rest.
#[derive(Clone)]
pub struct Snapshot {
    tx: FxMap<Rc<[u8]>, Kv>,
    persist: Vec<FxMap<Rc<[u8]>, Kv>>,
    next_id: u32,
    matched_var: Option<Kv>,
    counters: (u32, u32),
    logs: usize,
    /// B is `skip.0..skip.1` in phase 1.
    skip: (usize, usize),
    /// Per phase, per entry: what a request does without evaluating it (see [`Fold`]).
    folds: Rc<[Vec<Fold>; 6]>,
}

/// Gates folded at configure: rules such as CRS's `SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt 2"
/// "pass,nolog,skipAfter:END-..."` (about 130 of the ~270 rules a request evaluates at
/// paranoia level 1) whose one target is a TX variable no per-request rule can write, with a
/// pure operator and no effect but the jump. Their answer is the same for every request, so it
/// is computed once from the snapshot's TX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    /// Evaluate the entry as usual.
    Eval,
    /// The gate never matches: go on with the next entry.
    Pass,
    /// The gate always matches: continue at this entry.
    Jump(usize),
}

/// Can a `setvar` whose (lowercase) name is `name` write TX key `key`? Conservative: `false`
/// only when no expansion can equal `key`. `%{rule.id}` expands to digits.
fn can_write(name: &Macro, key: &[u8]) -> bool {
    let mut k = key;
    for p in &name.parts {
        match p {
            Part::Lit(l) => match k.strip_prefix(l.as_slice()) {
                Some(rest) => k = rest,
                None => return false,
            },
            Part::Rule(RuleField::Id) => return k.first().is_some_and(u8::is_ascii_digit),
            _ => return true,
        }
    }
    k.is_empty()
}

/// Does `v` read what the last match left (`MATCHED_VAR*`)?
fn var_matched(v: V) -> bool {
    matches!(
        v,
        V::MatchedVar | V::MatchedVarName | V::MatchedVars | V::MatchedVarsNames
    )
}

impl Snapshot {
    /// Phase-1 entries (`start..end`) evaluated at configure instead of per request.
    pub fn range(&self) -> (usize, usize) {
        self.skip
    }

    /// Drops the folds: every gate is evaluated per request (the reference for tests).
    pub fn unfold(&mut self) {
        self.folds = Rc::new(Default::default());
    }

    /// Number of folded gates (reports and tests).
    pub fn folded(&self) -> usize {
        self.folds
            .iter()
            .flatten()
            .filter(|f| **f != Fold::Eval)
            .count()
    }
}

/// Does `v` read state that rules write (TX, persistent collections, matches)?
fn var_stateful(v: V) -> bool {
    matches!(
        v,
        V::Values(Coll::Tx | Coll::Persist(_))
            | V::Names(Coll::Tx | Coll::Persist(_))
            | V::MatchedVar
            | V::MatchedVarName
            | V::MatchedVars
            | V::MatchedVarsNames
    )
}

/// Does `v` read only request-independent state?
fn var_pure(v: V) -> bool {
    v == V::Nothing || var_stateful(v)
}

fn macro_vars(m: &Macro, f: fn(V) -> bool) -> bool {
    m.parts.iter().all(|p| match p {
        Part::Lit(_) | Part::Rule(_) => true,
        Part::Var(v, _) => f(*v),
    })
}

/// Do all of `r`'s macros (operator, setvar, msg, logdata) pass `f` on their variables?
fn rule_macros(r: &Rule, f: fn(V) -> bool) -> bool {
    r.op.macro_arg().is_none_or(|m| macro_vars(m, f))
        && r.setvars.iter().all(|sv| {
            macro_vars(&sv.name, f)
                && match &sv.op {
                    SetOp::Del => true,
                    SetOp::Set(m) | SetOp::Add(m) | SetOp::Sub(m) => macro_vars(m, f),
                }
        })
        && r.msg.as_ref().is_none_or(|m| macro_vars(m, f))
        && r.logdata.as_ref().is_none_or(|m| macro_vars(m, f))
}

/// Can `r` (with its chain) be evaluated before the request is known, with the same result?
fn rule_pure(r: &Rule) -> bool {
    let op = match &r.op {
        Op::RxMacro(..) => false,
        Op::Unconditional | Op::NoMatch => true,
        op => op.macro_arg().is_some(),
    };
    op && r.ctls.is_empty()
        && r.skip == 0
        && r.targets.iter().all(|t| var_pure(t.var))
        && r.excl.iter().all(|e| var_pure(e.var))
        && rule_macros(r, var_pure)
        && r.chain.as_deref().is_none_or(rule_pure)
}

/// Can request-independent rules after `r` be evaluated before `r` (see [`Snapshot`])?
/// `r` must not write or read rule-written state nor change control flow.
fn rule_passable(r: &Rule, default: Disr) -> bool {
    fn link(r: &Rule) -> bool {
        r.setvars.is_empty()
            && !r.capture
            && r.ctls.iter().all(|c| {
                matches!(
                    c,
                    Ctl::BodyProcessor(_)
                        | Ctl::ForceBodyVar(_)
                        | Ctl::BodyAccess(_)
                        | Ctl::Ignored
                )
            })
            && !r.targets.iter().any(|t| var_stateful(t.var))
            && rule_macros(r, |v| !var_stateful(v))
            && r.chain.as_deref().is_none_or(link)
    }
    let d = match r.disruptive {
        Some(Disr::Block) | None => default,
        Some(d) => d,
    };
    d == Disr::Pass && r.skip == 0 && r.skip_after.is_none() && link(r)
}

fn rc(b: &[u8]) -> Rc<[u8]> {
    Rc::from(b)
}

impl Transaction {
    /// A new transaction for `eng`.
    pub fn new(eng: Rc<Engine>) -> Self {
        let mode = eng.settings.mode;
        let body_access = eng.settings.body_access;
        let memo_gen = eng.memo.borrow().generation();
        Transaction {
            eng,
            next_id: 0,
            args_get: Vec::new(),
            args_post: Vec::new(),
            headers: Vec::new(),
            cookies: Vec::new(),
            files: Vec::new(),
            files_sizes: Vec::new(),
            part_headers: Vec::new(),
            xml_text: Vec::new(),
            xml_attrs: Vec::new(),
            scalars: vec![None; SCALARS.len()],
            tx: FxMap::default(),
            persist: vec![FxMap::default(); PERSIST.len()],
            matched_var: None,
            matched_vars: Vec::new(),
            cache: FxMap::default(),
            pf_cache: FxMap::default(),
            pf_bits: Vec::new(),
            names: FxMap::default(),
            removed_ids: Vec::new(),
            removed_tags: Vec::new(),
            excl_by_id: Vec::new(),
            excl_by_tag: Vec::new(),
            mode,
            body_proc: None,
            force_body_var: false,
            body_access,
            logs: Vec::new(),
            intervention: None,
            would_block: None,
            allowed: false,
            counters: (0, 0),
            scratch: Vec::new(),
            buf_a: Vec::new(),
            buf_b: Vec::new(),
            empty: Rc::from(&b""[..]),
            skip1: (0, 0),
            skip1_mv: None,
            memo_rows: Vec::new(),
            memo_gen,
            lists: Vec::new(),
            folds: Rc::new(Default::default()),
            op_arg: Default::default(),
        }
    }

    /// Before a phase: collected lists are per phase (the body adds values between phases),
    /// memo rows per memo generation (another transaction may have trimmed it).
    fn phase_start(&mut self) {
        self.recycle_lists();
        self.lists.resize(self.eng.n_tlists as usize, None);
        let g = self.eng.memo.borrow().generation();
        if g != self.memo_gen {
            self.memo_rows.clear();
            self.memo_gen = g;
        }
    }

    /// Empties `lists`, keeping their allocations for the next lists ([`LIST_POOL`]).
    fn recycle_lists(&mut self) {
        LIST_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            for slot in self.lists.drain(..) {
                let Some(mut l) = slot else { continue };
                if let Some(list) = Rc::get_mut(&mut l) {
                    list.vals.clear();
                    list.rows.clear();
                    if pool.len() < LIST_POOL_MAX {
                        pool.push(l);
                    }
                }
            }
        });
    }

    /// The memo row of value `v`, looked up once per value per transaction.
    fn memo_row(&mut self, v: &Val) -> Option<u32> {
        if v.id >= MAX_MEMO_ID {
            return None;
        }
        let i = v.id as usize;
        if i >= self.memo_rows.len() {
            self.memo_rows.resize(i + 1, ROW_UNKNOWN);
        }
        match self.memo_rows[i] {
            ROW_UNKNOWN => {
                let r = self.eng.memo.borrow_mut().row(&v.val);
                self.memo_rows[i] = r.unwrap_or(ROW_NONE);
                r
            }
            ROW_NONE => None,
            r => Some(r),
        }
    }

    /// The values of an interned target list, collected once per phase.
    fn list(&mut self, li: u32, rule: &Rule) -> Rc<List> {
        let li = li as usize;
        if li >= self.lists.len() {
            self.lists.resize(li + 1, None);
        }
        if let Some(l) = &self.lists[li] {
            return l.clone();
        }
        let mut l = LIST_POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Rc::new(List::default()));
        let list = Rc::get_mut(&mut l).expect("pooled lists are unshared");
        for t in &rule.targets {
            self.collect(t, &rule.excl, &[], &mut list.vals);
        }
        for v in &list.vals {
            let row = match v.id {
                NOCACHE => ROW_NONE,
                _ => self.memo_row(v).unwrap_or(ROW_NONE),
            };
            list.rows.push(row);
        }
        self.lists[li] = Some(l.clone());
        l
    }

    fn save(&self, skip: (usize, usize)) -> Snapshot {
        Snapshot {
            tx: self.tx.clone(),
            persist: self.persist.clone(),
            next_id: self.next_id,
            matched_var: self.matched_var.clone(),
            counters: self.counters,
            logs: self.logs.len(),
            skip,
            folds: self.folds.clone(),
        }
    }

    /// Restores a [`Snapshot`] into a fresh transaction (before `set_request`).
    pub fn restore(&mut self, s: &Snapshot) {
        self.tx = s.tx.clone();
        self.persist = s.persist.clone();
        self.next_id = s.next_id;
        self.counters = s.counters;
        if s.skip.1 > s.skip.0 {
            self.skip1 = s.skip;
            self.skip1_mv = s.matched_var.clone();
        }
        self.folds = s.folds.clone();
    }

    /// Evaluates the request-independent rules of phase 1 (see [`Snapshot`]) on this fresh
    /// transaction and returns the state after them. Stops at the first rule that reads
    /// request data (after the leading passable ones), has `ctl:`, or matches with an effect
    /// other than a silent `pass` (that rule is left to run per request).
    pub fn snapshot(mut self) -> Snapshot {
        let eng = self.eng.clone();
        let list = &eng.phases[1];
        let mut i = 0;
        let mut from: Option<usize> = None;
        self.phase_start();
        if self.mode == Mode::Off {
            return self.save((0, 0));
        }
        while i < list.len() {
            let (ri, skip_to) = match &list[i] {
                Entry::Marker(_) => {
                    i += 1;
                    continue;
                }
                Entry::Rule(r, t) => (*r, *t),
            };
            let rule = &eng.rules[ri];
            if !rule_pure(rule) {
                if from.is_none() && rule_passable(rule, eng.default_disr[1]) {
                    i += 1;
                    continue;
                }
                break;
            }
            let start = *from.get_or_insert(i);
            let before = self.save((start, i));
            self.matched_vars.clear();
            self.counters.0 += 1;
            if self.eval_chain(rule, ri) {
                let d = match rule.disruptive {
                    Some(Disr::Block) | None => eng.default_disr[1],
                    Some(d) => d,
                };
                if d != Disr::Pass || self.logs.len() != before.logs {
                    self.tx = before.tx;
                    self.persist = before.persist;
                    self.next_id = before.next_id;
                    self.matched_var = before.matched_var;
                    self.counters = before.counters;
                    break;
                }
                if let Some(t) = skip_to {
                    i = t;
                    continue;
                }
            }
            i += 1;
        }
        let start = from.unwrap_or(i);
        self.folds = Rc::new(self.fold_gates((start, i)));
        self.save((start, i))
    }

    /// Computes the [`Fold`]s from the state after the request-independent head `b` of phase 1.
    fn fold_gates(&mut self, b: (usize, usize)) -> [Vec<Fold>; 6] {
        let eng = self.eng.clone();
        let mut folds: [Vec<Fold>; 6] = Default::default();
        // TX names that rules evaluated per request may write (all but B's).
        let mut writers: Vec<&Macro> = Vec::new();
        for (p, list) in eng.phases.iter().enumerate() {
            for (i, e) in list.iter().enumerate() {
                if let Entry::Rule(ri, _) = e {
                    if p == 1 && i >= b.0 && i < b.1 {
                        continue;
                    }
                    let mut cur = Some(&eng.rules[*ri]);
                    while let Some(r) = cur {
                        writers.extend(
                            r.setvars
                                .iter()
                                .filter(|sv| sv.coll == SetColl::Tx)
                                .map(|sv| &sv.name),
                        );
                        cur = r.chain.as_deref();
                    }
                }
            }
        }
        // (capture writes TX:0-9)
        let stable = |k: &[u8]| {
            let capture = k.len() == 1 && k[0].is_ascii_digit();
            !capture && !writers.iter().any(|m| can_write(m, k))
        };
        for (p, list) in eng.phases.iter().enumerate() {
            folds[p] = vec![Fold::Eval; list.len()];
            // A folded gate leaves no MATCHED_VAR behind: only fold where no rule reads one
            // before its own match.
            let reads_matched = list.iter().any(|e| match e {
                Entry::Rule(ri, _) => {
                    let r = &eng.rules[*ri];
                    r.targets.iter().any(|t| var_matched(t.var))
                        || r.op
                            .macro_arg()
                            .is_some_and(|m| !macro_vars(m, |v| !var_matched(v)))
                }
                Entry::Marker(_) => false,
            });
            if reads_matched || self.mode == Mode::Off {
                continue;
            }
            for (i, e) in list.iter().enumerate() {
                let Entry::Rule(ri, skip_to) = e else {
                    continue;
                };
                if p == 1 && i >= b.0 && i < b.1 {
                    continue;
                }
                let r = &eng.rules[*ri];
                let key = match r.targets.as_slice() {
                    [Target {
                        var: V::Values(Coll::Tx),
                        sel: Sel::Key(k),
                        count: false,
                        ..
                    }] => k,
                    _ => continue,
                };
                let d = match r.disruptive {
                    Some(Disr::Block) | None => eng.default_disr[p],
                    Some(d) => d,
                };
                let gate = r.chain.is_none()
                    && r.excl.is_empty()
                    && r.memo.is_some() // a pure operator
                    && r.setvars.is_empty()
                    && r.ctls.is_empty()
                    && !r.capture
                    && !r.log
                    && r.skip == 0
                    && d == Disr::Pass
                    && stable(key);
                if !gate {
                    continue;
                }
                let (mv, mvs, counters) = (
                    self.matched_var.clone(),
                    std::mem::take(&mut self.matched_vars),
                    self.counters,
                );
                let hit = self.eval_chain(r, *ri);
                self.matched_var = mv;
                self.matched_vars = mvs;
                self.counters = counters;
                folds[p][i] = match (hit, skip_to) {
                    (true, Some(t)) => Fold::Jump(*t),
                    _ => Fold::Pass,
                };
            }
        }
        folds
    }

    fn kv(&mut self, k: &[u8], v: &[u8]) -> Kv {
        self.next_id += 1;
        Kv {
            key: rc(k),
            val: rc(v),
            id: self.next_id * 2,
        }
    }

    fn set_scalar(&mut self, i: u8, v: &[u8]) {
        let kv = self.kv(b"", v);
        self.scalars[i as usize] = Some(kv);
    }

    /// Scalar value (tests, logs).
    pub fn scalar(&self, i: u8) -> Option<&[u8]> {
        self.scalars[i as usize].as_ref().map(|k| &*k.val)
    }

    /// TX variable (lowercase key).
    pub fn tx_get(&self, k: &str) -> Option<&[u8]> {
        self.tx.get(k.as_bytes()).map(|kv| &*kv.val)
    }

    /// The CRS inbound anomaly score (tx.anomaly_score, or tx.inbound_anomaly_score).
    pub fn anomaly_score(&self) -> i64 {
        let a = self.tx_get("anomaly_score").map(ops::atoi).unwrap_or(0);
        let b = self
            .tx_get("inbound_anomaly_score")
            .map(ops::atoi)
            .unwrap_or(0);
        a.max(b)
    }

    /// Sets a TX variable (config knobs such as paranoia level use it before phase 1).
    pub fn tx_set(&mut self, k: &str, v: &[u8]) {
        let kv = self.kv(k.as_bytes(), v);
        self.tx.insert(rc(k.to_ascii_lowercase().as_bytes()), kv);
    }

    fn add_arg(&mut self, post: bool, k: &[u8], v: &[u8]) {
        if self.args_get.len() + self.args_post.len() >= self.eng.settings.args_limit {
            return;
        }
        let kv = self.kv(k, v);
        if post {
            self.args_post.push(kv);
        } else {
            self.args_get.push(kv);
        }
    }

    /// Request line and headers (phase 1 input). `uri` is the raw path and query.
    pub fn set_request(
        &mut self,
        method: &str,
        uri: &str,
        protocol: &str,
        headers: &[(String, String)],
        remote_addr: &str,
        unique_id: &str,
    ) {
        let ub = uri.as_bytes();
        self.set_scalar(s::REQUEST_METHOD, method.as_bytes());
        self.set_scalar(s::REQUEST_PROTOCOL, protocol.as_bytes());
        self.set_scalar(
            s::REQUEST_LINE,
            format!("{method} {uri} {protocol}").as_bytes(),
        );
        self.set_scalar(s::REQUEST_URI_RAW, ub);
        self.set_scalar(s::REQUEST_URI, &uri_decode(ub));
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        let fname = uri_decode(path.as_bytes());
        let base = match fname.iter().rposition(|&b| b == b'/') {
            Some(p) => fname[p + 1..].to_vec(),
            None => fname.clone(),
        };
        self.set_scalar(s::REQUEST_FILENAME, &fname);
        self.set_scalar(s::REQUEST_BASENAME, &base);
        if let Some(q) = query {
            self.set_scalar(s::QUERY_STRING, q.as_bytes());
            let sep = self.eng.settings.arg_sep;
            for (k, v) in body::urlencoded(q.as_bytes(), sep) {
                self.add_arg(false, &k, &v);
            }
        } else {
            self.set_scalar(s::QUERY_STRING, b"");
        }
        let mut ctype = String::new();
        for (k, v) in headers {
            let kv = self.kv(k.as_bytes(), v.as_bytes());
            self.headers.push(kv);
            if k.eq_ignore_ascii_case("cookie") {
                for c in v.split(';') {
                    let c = c.trim();
                    if c.is_empty() {
                        continue;
                    }
                    let (ck, cv) = c.split_once('=').unwrap_or((c, ""));
                    let kv = self.kv(ck.as_bytes(), cv.as_bytes());
                    self.cookies.push(kv);
                }
            }
            if k.eq_ignore_ascii_case("content-type") {
                ctype = v.to_ascii_lowercase();
            }
        }
        if ctype.starts_with("application/x-www-form-urlencoded") {
            self.body_proc = Some(BodyProc::UrlEncoded);
        } else if ctype.starts_with("multipart/form-data") {
            self.body_proc = Some(BodyProc::Multipart);
        }
        let (addr, port) = split_addr(remote_addr);
        self.set_scalar(s::REMOTE_ADDR, addr.as_bytes());
        self.set_scalar(s::REMOTE_PORT, port.as_bytes());
        self.set_scalar(s::UNIQUE_ID, unique_id.as_bytes());
        self.set_scalar(s::DURATION, b"0");
        self.set_scalar(s::REQBODY_ERROR, b"0");
        self.set_scalar(s::REQBODY_PROCESSOR_ERROR, b"0");
        self.update_combined_size();
    }

    fn update_combined_size(&mut self) {
        let n: usize = self
            .args_get
            .iter()
            .chain(self.args_post.iter())
            .map(|kv| kv.key.len() + kv.val.len())
            .sum();
        self.set_scalar(s::ARGS_COMBINED_SIZE, n.to_string().as_bytes());
    }

    /// Does phase 2 want the request body?
    pub fn wants_body(&self) -> bool {
        self.body_access && self.mode != Mode::Off && self.intervention.is_none() && !self.allowed
    }

    /// Body size limit for this request and what to do beyond it.
    pub fn body_limit(&self) -> (usize, LimitAction) {
        let st = &self.eng.settings;
        let lim = if self.body_proc == Some(BodyProc::Multipart) {
            st.body_limit
        } else {
            st.body_nofiles_limit.min(st.body_limit)
        };
        (lim, st.body_limit_action)
    }

    /// Feeds the (complete or truncated) request body; run before phase 2.
    pub fn process_body(&mut self, data: &[u8], content_type: Option<&str>) {
        if !self.wants_body() {
            return;
        }
        self.set_scalar(s::REQUEST_BODY_LENGTH, data.len().to_string().as_bytes());
        self.set_scalar(s::FULL_REQUEST_LENGTH, data.len().to_string().as_bytes());
        if let Some(p) = self.body_proc {
            self.set_scalar(s::REQBODY_PROCESSOR, p.name().as_bytes());
        }
        if matches!(self.body_proc, None | Some(BodyProc::UrlEncoded)) || self.force_body_var {
            self.set_scalar(s::REQUEST_BODY, data);
        }
        let mut error: Option<String> = None;
        match self.body_proc {
            None => {}
            Some(BodyProc::UrlEncoded) => {
                let sep = self.eng.settings.arg_sep;
                for (k, v) in body::urlencoded(data, sep) {
                    self.add_arg(true, &k, &v);
                }
            }
            Some(BodyProc::Json) => match body::json(data, self.eng.settings.json_depth) {
                Ok(args) => {
                    for (k, v) in args {
                        self.add_arg(true, &k, &v);
                    }
                }
                Err(e) => error = Some(format!("JSON parsing error: {e}")),
            },
            Some(BodyProc::Xml) => match body::xml(data) {
                Ok((text, attrs)) => {
                    let kv = self.kv(b"", &text);
                    self.xml_text.push(kv);
                    for a in attrs {
                        let kv = self.kv(b"", &a);
                        self.xml_attrs.push(kv);
                    }
                }
                Err(e) => error = Some(format!("XML parsing error: {e}")),
            },
            Some(BodyProc::Multipart) => {
                let m = body::multipart(content_type.unwrap_or(""), data);
                for (k, v) in &m.args {
                    self.add_arg(true, k, v);
                }
                let mut total = 0usize;
                for f in &m.files {
                    let kv = self.kv(&f.name, &f.filename);
                    self.files.push(kv);
                    let kv = self.kv(&f.name, f.size.to_string().as_bytes());
                    self.files_sizes.push(kv);
                    total += f.size;
                }
                for (n, h) in &m.part_headers {
                    let kv = self.kv(n, h);
                    self.part_headers.push(kv);
                }
                self.set_scalar(s::FILES_COMBINED_SIZE, total.to_string().as_bytes());
                let mut strict = false;
                for i in s::MULTIPART_BOUNDARY_QUOTED..=43 {
                    let on = m.flags.contains(&i);
                    strict |= on;
                    self.set_scalar(i, if on { b"1" } else { b"0" });
                }
                self.set_scalar(
                    s::MULTIPART_UNMATCHED_BOUNDARY,
                    if m.unmatched_boundary { b"1" } else { b"0" },
                );
                if let Some(e) = &m.error {
                    error = Some(format!("Multipart parsing error: {e}"));
                    strict = true;
                }
                self.set_scalar(s::MULTIPART_STRICT_ERROR, if strict { b"1" } else { b"0" });
            }
        }
        if let Some(e) = error {
            self.set_scalar(s::REQBODY_ERROR, b"1");
            self.set_scalar(s::REQBODY_PROCESSOR_ERROR, b"1");
            self.set_scalar(s::REQBODY_ERROR_MSG, e.as_bytes());
            self.set_scalar(s::REQBODY_PROCESSOR_ERROR_MSG, e.as_bytes());
        }
        self.update_combined_size();
    }

    // ---------------------------------------------------------------- variables

    fn coll(&self, c: Coll) -> (&[Kv], &[Kv]) {
        match c {
            Coll::Args => (&self.args_get, &self.args_post),
            Coll::ArgsGet => (&self.args_get, &[]),
            Coll::ArgsPost => (&self.args_post, &[]),
            Coll::Headers => (&self.headers, &[]),
            Coll::Cookies => (&self.cookies, &[]),
            Coll::Files => (&self.files, &[]),
            Coll::FilesSizes => (&self.files_sizes, &[]),
            Coll::PartHeaders => (&self.part_headers, &[]),
            Coll::Tx | Coll::Persist(_) | Coll::Empty => (&[], &[]),
        }
    }

    fn map(&self, c: Coll) -> Option<&FxMap<Rc<[u8]>, Kv>> {
        match c {
            Coll::Tx => Some(&self.tx),
            Coll::Persist(i) => Some(&self.persist[i as usize]),
            _ => None,
        }
    }

    fn collect(&self, t: &Target, excl: &[Excl], dyn_excl: &[Excl], out: &mut Vec<Val>) {
        let start = out.len();
        // `ex` is only asked about `t.var`: no exclusion of that variable, nothing to test
        let no_ex = !excl.iter().chain(dyn_excl.iter()).any(|e| e.var == t.var);
        let all = matches!(t.sel, Sel::All);
        let ex = |var: V, key: &[u8]| {
            !no_ex && excl.iter().chain(dyn_excl.iter()).any(|e| e.hits(var, key))
        };
        match t.var {
            V::Values(c) | V::Names(c) => {
                let names = matches!(t.var, V::Names(_));
                let push = |kv: &Kv, out: &mut Vec<Val>| {
                    if (all || t.sel.matches(&kv.key)) && !ex(t.var, &kv.key) {
                        if names {
                            out.push(Val {
                                var: t.var,
                                key: kv.key.clone(),
                                val: kv.key.clone(),
                                id: kv.id | 1,
                            });
                        } else {
                            out.push(Val {
                                var: t.var,
                                key: kv.key.clone(),
                                val: kv.val.clone(),
                                id: kv.id,
                            });
                        }
                    }
                };
                if let Some(m) = self.map(c) {
                    if let Sel::Key(k) = &t.sel {
                        if let Some(kv) = m.get(k.as_slice()) {
                            push(kv, out);
                        }
                    } else {
                        for kv in m.values() {
                            push(kv, out);
                        }
                    }
                } else {
                    let (a, b) = self.coll(c);
                    for kv in a.iter().chain(b.iter()) {
                        push(kv, out);
                    }
                }
            }
            V::Scalar(i) => {
                if let Some(kv) = &self.scalars[i as usize] {
                    out.push(Val {
                        var: t.var,
                        key: self.empty.clone(),
                        val: kv.val.clone(),
                        id: kv.id,
                    });
                }
            }
            V::MatchedVar => {
                if let Some(kv) = &self.matched_var {
                    out.push(Val {
                        var: t.var,
                        key: self.empty.clone(),
                        val: kv.val.clone(),
                        id: NOCACHE,
                    });
                }
            }
            V::MatchedVarName => {
                if let Some(kv) = &self.matched_var {
                    out.push(Val {
                        var: t.var,
                        key: self.empty.clone(),
                        val: kv.key.clone(),
                        id: NOCACHE,
                    });
                }
            }
            V::MatchedVars | V::MatchedVarsNames => {
                for kv in &self.matched_vars {
                    if t.sel.matches(&kv.key) && !ex(t.var, &kv.key) {
                        let val = if t.var == V::MatchedVars {
                            kv.val.clone()
                        } else {
                            kv.key.clone()
                        };
                        out.push(Val {
                            var: t.var,
                            key: kv.key.clone(),
                            val,
                            id: NOCACHE,
                        });
                    }
                }
            }
            V::XmlText | V::XmlAttrs => {
                let src = if t.var == V::XmlText {
                    &self.xml_text
                } else {
                    &self.xml_attrs
                };
                for kv in src {
                    out.push(Val {
                        var: t.var,
                        key: self.empty.clone(),
                        val: kv.val.clone(),
                        id: kv.id,
                    });
                }
            }
            V::Nothing => {
                if t.name.is_empty() {
                    // SecAction pseudo-target
                    out.push(Val {
                        var: V::Nothing,
                        key: self.empty.clone(),
                        val: self.empty.clone(),
                        id: NOCACHE,
                    });
                }
            }
        }
        if t.count {
            let n = out.len() - start;
            out.truncate(start);
            out.push(Val {
                var: t.var,
                key: self.empty.clone(),
                val: rc(n.to_string().as_bytes()),
                id: NOCACHE,
            });
        }
    }

    fn first(&self, v: V, key: Option<&[u8]>) -> Option<Rc<[u8]>> {
        match v {
            V::Values(c) => {
                if let Some(m) = self.map(c) {
                    return m.get(key?).map(|kv| kv.val.clone());
                }
                let (a, b) = self.coll(c);
                a.iter()
                    .chain(b.iter())
                    .find(|kv| key.is_none_or(|k| kv.key.eq_ignore_ascii_case(k)))
                    .map(|kv| kv.val.clone())
            }
            V::Names(c) => {
                let (a, b) = self.coll(c);
                a.iter().chain(b.iter()).next().map(|kv| kv.key.clone())
            }
            V::Scalar(i) => self.scalars[i as usize].as_ref().map(|kv| kv.val.clone()),
            V::MatchedVar => self.matched_var.as_ref().map(|kv| kv.val.clone()),
            V::MatchedVarName => self.matched_var.as_ref().map(|kv| kv.key.clone()),
            V::MatchedVars => self.matched_vars.first().map(|kv| kv.val.clone()),
            V::MatchedVarsNames => self.matched_vars.first().map(|kv| kv.key.clone()),
            V::XmlText => self.xml_text.first().map(|kv| kv.val.clone()),
            V::XmlAttrs => self.xml_attrs.first().map(|kv| kv.val.clone()),
            V::Nothing => None,
        }
    }

    /// Expands `%{...}` macros for `rule`.
    pub fn expand<'m>(&self, m: &'m Macro, rule: Option<&Rule>) -> Cow<'m, [u8]> {
        self.expand_d(m, rule, 0)
    }

    fn expand_d<'m>(&self, m: &'m Macro, rule: Option<&Rule>, depth: u8) -> Cow<'m, [u8]> {
        if let Some(l) = m.literal() {
            return Cow::Borrowed(l);
        }
        let mut out = Vec::new();
        for p in &m.parts {
            match p {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Var(v, k) => {
                    if let Some(x) = self.first(*v, k.as_deref()) {
                        out.extend_from_slice(&x);
                    }
                }
                Part::Rule(f) => {
                    let Some(r) = rule else { continue };
                    match f {
                        RuleField::Id => out.extend_from_slice(r.id.to_string().as_bytes()),
                        RuleField::Severity => {
                            if let Some(s) = r.severity {
                                out.extend_from_slice(s.to_string().as_bytes());
                            }
                        }
                        RuleField::Msg | RuleField::Logdata if depth == 0 => {
                            let src = if *f == RuleField::Msg {
                                &r.msg
                            } else {
                                &r.logdata
                            };
                            if let Some(mm) = src {
                                out.extend_from_slice(&self.expand_d(mm, rule, 1));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Cow::Owned(out)
    }

    // ---------------------------------------------------------------- evaluation

    fn transformed(&mut self, rule: &Rule, v: &Val) -> Rc<[u8]> {
        if rule.transforms.is_empty() {
            return v.val.clone();
        }
        let key = (u64::from(v.id) << 32) | u64::from(rule.tchain);
        if v.id != NOCACHE {
            if let Some(x) = self.cache.get(&key) {
                return x.clone();
            }
        }
        let mut a = std::mem::take(&mut self.buf_a);
        let mut b = std::mem::take(&mut self.buf_b);
        let mut owned = false;
        for t in rule.transforms.iter() {
            let src: &[u8] = if owned { &a } else { &v.val };
            if t.is_noop(src) {
                continue;
            }
            t.apply(src, &mut b);
            std::mem::swap(&mut a, &mut b);
            owned = true;
        }
        let out = if !owned || *a == *v.val {
            v.val.clone()
        } else {
            rc(&a)
        };
        self.buf_a = a;
        self.buf_b = b;
        if v.id != NOCACHE {
            self.cache.insert(key, out.clone());
        }
        out
    }

    /// The operator's macro argument: expanded on first use within a rule evaluation and
    /// reused for its other values; `eval_one` drops it when it starts and after actions run
    /// (they may change what the macro reads).
    fn arg<'m>(&self, m: &'m Macro, rule: &Rule) -> Arg<'m> {
        if let Some(l) = m.literal() {
            return Arg::Lit(l);
        }
        let mut cached = self.op_arg.borrow_mut();
        if let Some(e) = &*cached {
            return Arg::Expanded(e.clone());
        }
        let e: Rc<[u8]> = Rc::from(self.expand(m, Some(rule)).into_owned());
        *cached = Some(e.clone());
        Arg::Expanded(e)
    }

    fn op_eval(&self, rule: &Rule, input: &[u8], caps: bool) -> (bool, Option<Caps>) {
        let num = |m: &Macro| ops::atoi(&self.arg(m, rule));
        let r = match &rule.op {
            Op::Rx(rx) => {
                if let (Some(h), Some(host)) = (rx.host, &self.eng.host) {
                    if let Ok(res) = host.run_rx(h, caps, input) {
                        return (res.is_some(), res);
                    }
                }
                if caps {
                    let c = rx.rx.captures(input);
                    return (c.is_some(), c);
                }
                rx.rx.is_match(input)
            }
            Op::RxMacro(m, cache) => {
                let pat = self.expand(m, Some(rule)).into_owned();
                let found = cache
                    .borrow()
                    .iter()
                    .find(|(p, _)| *p == pat)
                    .map(|(_, r)| r.clone());
                let rx = match found {
                    Some(r) => r,
                    None => match ops::compile_rx(&String::from_utf8_lossy(&pat)) {
                        Ok(r) => {
                            let r = Rc::new(r);
                            let mut c = cache.borrow_mut();
                            if c.len() >= 16 {
                                c.remove(0);
                            }
                            c.push((pat, r.clone()));
                            r
                        }
                        Err(_) => return (false, None),
                    },
                };
                if caps {
                    let c = rx.captures(input);
                    return (c.is_some(), c);
                }
                rx.is_match(input)
            }
            Op::Pm(pm) => {
                if let (Some(h), Some(host)) = (pm.host, &self.eng.host) {
                    if let Ok(res) = host.run_pm(h, input) {
                        return (res.is_some(), res);
                    }
                }
                match pm.ac.find(input) {
                    Some(m) => {
                        return (
                            true,
                            caps.then(|| vec![Some(input[m.start()..m.end()].to_vec())]),
                        )
                    }
                    None => false,
                }
            }
            Op::StrEq(m) => *self.arg(m, rule) == *input,
            Op::Contains(m) => {
                let n = self.arg(m, rule);
                match ops::memfind(input, &n) {
                    Some(_) => return (true, caps.then(|| vec![Some(n.to_vec())])),
                    None => false,
                }
            }
            Op::ContainsWord(m) => ops::contains_word(input, &self.arg(m, rule)),
            Op::BeginsWith(m) => input.starts_with(&self.arg(m, rule)),
            Op::EndsWith(m) => input.ends_with(&self.arg(m, rule)),
            Op::Within(m) => {
                let l = self.arg(m, rule);
                !input.is_empty() && ops::within(input, &l)
            }
            Op::Eq(m) => ops::atoi(input) == num(m),
            Op::Ge(m) => ops::atoi(input) >= num(m),
            Op::Gt(m) => ops::atoi(input) > num(m),
            Op::Lt(m) => ops::atoi(input) < num(m),
            Op::Le(m) => ops::atoi(input) <= num(m),
            Op::ValidateByteRange(ok) => input.iter().any(|&b| !ok[b as usize]),
            Op::ValidateUrlEncoding => ops::invalid_url_encoding(input),
            Op::ValidateUtf8Encoding => ops::invalid_utf8(input),
            Op::IpMatch(list) => ops::ip_match(list, input),
            Op::DetectSqli => {
                let r = libinjectionrs::detect_sqli(input);
                if r.is_injection() {
                    let fp = r.fingerprint.map(|f| f.as_str().as_bytes().to_vec());
                    return (true, caps.then(|| vec![fp]));
                }
                false
            }
            Op::DetectXss => libinjectionrs::detect_xss(input).is_injection(),
            Op::Unconditional => true,
            Op::NoMatch => false,
        };
        (r, None)
    }

    fn is_removed(&self, r: &Rule) -> bool {
        (!self.removed_ids.is_empty() && in_ranges(&self.removed_ids, r.id))
            || (!self.removed_tags.is_empty() && self.removed_tags.iter().any(|t| r.has_tag(t)))
    }

    /// Sets `name` (already lowercase) in a collection; updates in place when it exists.
    fn set_tx_kv(&mut self, coll: SetColl, name: &[u8], val: &[u8]) {
        self.next_id += 1;
        let id = self.next_id * 2;
        let map = match coll {
            SetColl::Tx => &mut self.tx,
            SetColl::Persist(i) => &mut self.persist[i as usize],
        };
        if let Some(kv) = map.get_mut(name) {
            kv.val = rc(val);
            kv.id = id;
            return;
        }
        let key = rc(name);
        map.insert(
            key.clone(),
            Kv {
                key,
                val: rc(val),
                id,
            },
        );
    }

    fn exec_setvar(&mut self, sv: &SetVar, rule: &Rule) {
        let mut name = self.expand(&sv.name, Some(rule));
        if name.iter().any(u8::is_ascii_uppercase) {
            name.to_mut().make_ascii_lowercase();
        }
        let name: &[u8] = &name;
        let map = match sv.coll {
            SetColl::Tx => &self.tx,
            SetColl::Persist(i) => &self.persist[i as usize],
        };
        let cur = map.get(name).map(|kv| ops::atoi(&kv.val)).unwrap_or(0);
        match &sv.op {
            SetOp::Del => {
                match sv.coll {
                    SetColl::Tx => self.tx.remove(name),
                    SetColl::Persist(i) => self.persist[i as usize].remove(name),
                };
            }
            SetOp::Set(m) => {
                let v = self.expand(m, Some(rule)).into_owned();
                self.set_tx_kv(sv.coll, name, &v);
            }
            SetOp::Add(m) | SetOp::Sub(m) => {
                let d = ops::atoi(&self.expand(m, Some(rule)));
                let v = if matches!(sv.op, SetOp::Add(_)) {
                    cur.saturating_add(d)
                } else {
                    cur.saturating_sub(d)
                };
                self.set_tx_kv(sv.coll, name, v.to_string().as_bytes());
            }
        }
    }

    fn exec_ctl(&mut self, c: &Ctl) {
        match c {
            Ctl::RemoveById(r) => self.removed_ids.extend_from_slice(r),
            Ctl::RemoveByTag(t) => self.removed_tags.push(t.clone()),
            Ctl::RemoveTargetById(r, e) => self.excl_by_id.push((r.clone(), e.clone())),
            Ctl::RemoveTargetByTag(t, e) => self.excl_by_tag.push((t.clone(), e.clone())),
            Ctl::Engine(m) => self.mode = *m,
            Ctl::BodyProcessor(p) => self.body_proc = Some(*p),
            Ctl::ForceBodyVar(b) => self.force_body_var = *b,
            Ctl::BodyAccess(b) => self.body_access = *b,
            Ctl::Ignored => {}
        }
    }

    fn exec_actions(&mut self, rule: &Rule) {
        for sv in &rule.setvars {
            self.exec_setvar(sv, rule);
        }
        for c in &rule.ctls {
            self.exec_ctl(c);
        }
    }

    fn log_match(&mut self, top: &Rule, ri: usize) {
        if !top.log {
            return;
        }
        let msg = top
            .msg
            .as_ref()
            .map(|m| String::from_utf8_lossy(&self.expand(m, Some(top))).into_owned())
            .unwrap_or_default();
        let mut data = top
            .logdata
            .as_ref()
            .map(|m| String::from_utf8_lossy(&self.expand(m, Some(top))).into_owned())
            .unwrap_or_default();
        if data.len() > 256 {
            let mut cut = 256;
            while !data.is_char_boundary(cut) {
                cut -= 1;
            }
            data.truncate(cut);
        }
        let var = self
            .matched_var
            .as_ref()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .unwrap_or_default();
        self.logs.push(MatchLog {
            id: top.id,
            rule: ri,
            msg,
            var,
            data,
        });
    }

    fn set_captures(&mut self, caps: Caps) {
        for (i, c) in caps.into_iter().enumerate().take(10) {
            let k = [b'0' + i as u8];
            match c {
                Some(v) => {
                    let kv = self.kv(&k, &v);
                    self.tx.insert(kv.key.clone(), kv);
                }
                None => {
                    self.tx.remove(&k[..]);
                }
            }
        }
    }

    /// `MATCHED_VAR_NAME` of `v` (`ARGS:id`), cached per value id and variable.
    fn matched_name(&mut self, v: &Val) -> Rc<[u8]> {
        let build = |v: &Val| -> Rc<[u8]> {
            if v.var == V::Nothing {
                Rc::from(&b""[..])
            } else if v.key.is_empty() || matches!(v.var, V::MatchedVars | V::MatchedVarsNames) {
                rc(var_name(v.var).as_bytes())
            } else {
                let n = var_name(v.var).as_bytes();
                let mut b = Vec::with_capacity(n.len() + 1 + v.key.len());
                b.extend_from_slice(n);
                b.push(b':');
                b.extend_from_slice(&v.key);
                Rc::from(b)
            }
        };
        if v.id == NOCACHE {
            return build(v);
        }
        if let Some(n) = self.names.get(&(v.id, v.var)) {
            return n.clone();
        }
        let n = build(v);
        self.names.insert((v.id, v.var), n.clone());
        n
    }

    /// Evaluates one rule of a chain; `immediate`: an unchained rule (logs itself).
    fn eval_one(&mut self, rule: &Rule, top: &Rule, ri: usize, immediate: bool) -> bool {
        let eng = self.eng.clone();
        self.op_arg.replace(None);
        let mut vals = std::mem::take(&mut self.scratch);
        vals.clear();
        let has_dyn = (!self.excl_by_id.is_empty()
            && self.excl_by_id.iter().any(|(r, _)| in_ranges(r, top.id)))
            || (!self.excl_by_tag.is_empty()
                && self.excl_by_tag.iter().any(|(t, _)| top.has_tag(t)));
        let dyn_excl: Vec<Excl> = if has_dyn {
            self.excl_by_id
                .iter()
                .filter(|(r, _)| in_ranges(r, top.id))
                .map(|(_, e)| e.clone())
                .chain(
                    self.excl_by_tag
                        .iter()
                        .filter(|(t, _)| top.has_tag(t))
                        .map(|(_, e)| e.clone()),
                )
                .collect()
        } else {
            Vec::new()
        };
        let shared = match rule.tlist {
            Some(li) if !has_dyn => Some(self.list(li, rule)),
            _ => {
                for t in &rule.targets {
                    self.collect(t, &rule.excl, &dyn_excl, &mut vals);
                }
                None
            }
        };
        let (items, rows): (&[Val], &[u32]) = match &shared {
            Some(l) => (&l.vals, &l.rows),
            None => (&vals, &[]),
        };
        let mut any = false;
        for (k, v) in items.iter().enumerate() {
            let memo = match rule.memo {
                Some(slot) => match rows.get(k) {
                    Some(&ROW_NONE) => None,
                    Some(&r) => Some((r, slot)),
                    None if v.id != NOCACHE => self.memo_row(v).map(|r| (r, slot)),
                    None => None,
                },
                None => None,
            };
            if let Some((r, slot)) = memo {
                if eng.memo.borrow_mut().is_miss(r, slot) {
                    continue;
                }
            }
            let mut hit = false;
            let single;
            let multi: Vec<Rc<[u8]>>;
            let candidates: &[Rc<[u8]>] = if rule.multi_match {
                let mut c = vec![v.val.clone()];
                let mut cur = std::mem::take(&mut self.buf_a);
                let mut nb = std::mem::take(&mut self.buf_b);
                cur.clear();
                cur.extend_from_slice(&v.val);
                for t in rule.transforms.iter() {
                    if t.is_noop(&cur) {
                        continue;
                    }
                    t.apply(&cur, &mut nb);
                    std::mem::swap(&mut cur, &mut nb);
                    if c.last().is_none_or(|l| **l != *cur) {
                        c.push(rc(&cur));
                    }
                }
                self.buf_a = cur;
                self.buf_b = nb;
                multi = c;
                &multi
            } else {
                single = [self.transformed(rule, v)];
                &single
            };
            for tv in candidates {
                let tv = tv.clone();
                if let (Some(slot), Some(pf)) = (rule.pf, &eng.prefilter) {
                    // the rule's regex needs one of its literals: skip it when none occurs
                    let key = (u64::from(v.id) << 32) | u64::from(rule.tchain);
                    let hit = if v.id == NOCACHE {
                        crate::prefilter::has(&pf.scan(&tv), slot)
                    } else {
                        let at = match self.pf_cache.get(&key) {
                            Some(&at) => at,
                            None => {
                                let at = self.pf_bits.len();
                                pf.scan_into(&tv, &mut self.pf_bits);
                                self.pf_cache.insert(key, at);
                                at
                            }
                        };
                        crate::prefilter::has(&self.pf_bits[at..at + pf.words()], slot)
                    };
                    if !hit {
                        continue;
                    }
                }
                self.counters.1 += 1;
                let (m, caps) = self.op_eval(rule, &tv, rule.capture && !rule.negated);
                let m = m != rule.negated;
                if !m {
                    continue;
                }
                any = true;
                hit = true;
                if let Some(c) = caps {
                    if rule.capture {
                        self.set_captures(c);
                    }
                }
                let name = self.matched_name(v);
                let kv = Kv {
                    key: name,
                    val: tv.clone(),
                    id: NOCACHE,
                };
                self.matched_var = Some(kv.clone());
                self.matched_vars.push(kv);
                // libmodsecurity 3: setvar/ctl run per matched value, whatever the rest of the chain does
                self.exec_actions(rule);
                self.op_arg.replace(None);
                if immediate && rule.multi_match {
                    self.log_match(top, ri);
                }
                if !rule.multi_match {
                    break;
                }
            }
            if let (Some((r, slot)), false) = (memo, hit) {
                eng.memo.borrow_mut().set_miss(r, slot);
            }
        }
        self.scratch = vals;
        if any && immediate && !rule.multi_match {
            self.log_match(top, ri);
        }
        any
    }

    fn eval_chain(&mut self, top: &Rule, ri: usize) -> bool {
        let chained = top.chain.is_some();
        let mut cur = top;
        loop {
            if !self.eval_one(cur, top, ri, !chained) {
                return false;
            }
            match &cur.chain {
                Some(n) => cur = n,
                None => break,
            }
        }
        if chained {
            self.log_match(top, ri);
        }
        true
    }

    /// Runs the rules of one phase (1, 2 or 5; 3 and 4 hold response rules and are not run).
    pub fn run_phase(&mut self, phase: u8) {
        if self.mode == Mode::Off || (phase < 5 && (self.intervention.is_some() || self.allowed)) {
            return;
        }
        let eng = self.eng.clone();
        let list = &eng.phases[phase as usize];
        let mut i = 0;
        self.phase_start();
        while i < list.len() {
            if phase == 1 && i == self.skip1.0 && self.skip1.1 > i {
                i = self.skip1.1;
                if let Some(mv) = self.skip1_mv.take() {
                    self.matched_var = Some(mv);
                }
                continue;
            }
            let (ri, skip_to) = match &list[i] {
                Entry::Marker(_) => {
                    i += 1;
                    continue;
                }
                Entry::Rule(r, t) => (*r, *t),
            };
            let rule = &eng.rules[ri];
            if self.is_removed(rule) {
                i += 1;
                continue;
            }
            // (a ctl:ruleRemoveTarget* could remove a gate's target: evaluate then)
            let fold = if self.excl_by_id.is_empty() && self.excl_by_tag.is_empty() {
                self.folds[phase as usize].get(i)
            } else {
                None
            };
            match fold {
                Some(Fold::Pass) => {
                    i += 1;
                    continue;
                }
                Some(&Fold::Jump(t)) => {
                    i = t;
                    continue;
                }
                _ => {}
            }
            self.matched_vars.clear();
            self.counters.0 += 1;
            if self.eval_chain(rule, ri) {
                let d = match rule.disruptive {
                    Some(Disr::Block) | None => eng.default_disr[phase as usize],
                    Some(d) => d,
                };
                match d {
                    Disr::Deny | Disr::Drop if phase < 5 => {
                        let status = rule.status.unwrap_or(eng.settings.default_status);
                        let iv = Intervention {
                            status,
                            rule_id: rule.id,
                            phase,
                        };
                        if self.mode == Mode::On {
                            self.intervention = Some(iv);
                            return;
                        }
                        if self.would_block.is_none() {
                            self.would_block = Some(iv);
                        }
                    }
                    Disr::Allow if self.mode == Mode::On => {
                        self.allowed = true;
                        return;
                    }
                    _ => {}
                }
                if self.mode == Mode::Off {
                    return;
                }
                if let Some(t) = skip_to {
                    i = t;
                    continue;
                }
                if rule.skip > 0 {
                    let mut n = rule.skip;
                    while n > 0 && i + 1 < list.len() {
                        i += 1;
                        if matches!(list[i], Entry::Rule(..)) {
                            n -= 1;
                        }
                    }
                }
            }
            i += 1;
        }
    }

    /// Access to the engine.
    pub fn engine(&self) -> &Rc<Engine> {
        &self.eng
    }

    /// Values of a collection (tests).
    pub fn args(&self) -> Vec<(String, String)> {
        self.args_get
            .iter()
            .chain(self.args_post.iter())
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.val).into_owned(),
                )
            })
            .collect()
    }

    /// FILES (field name, file name) (tests).
    pub fn files(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.val).into_owned(),
                )
            })
            .collect()
    }
}

fn split_addr(a: &str) -> (&str, &str) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((ip, port)) = rest.split_once("]:") {
            return (ip, port);
        }
        return (rest.trim_end_matches(']'), "");
    }
    match a.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') => (ip, port),
        _ => (a, ""),
    }
}

#[allow(dead_code)]
fn decode_form(b: &[u8]) -> Vec<u8> {
    form_decode(b)
}
