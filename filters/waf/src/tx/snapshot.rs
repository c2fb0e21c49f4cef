//! The configure-time snapshot: request-independent phase-1 rules evaluated once, and the
//! gates folded from their result ([`Snapshot`], [`Fold`]).

use super::*;

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
    tx: TxMap,
    persist: Vec<FxMap<Rc<[u8]>, Kv>>,
    next_id: u32,
    matched_var: Option<Kv>,
    counters: (u32, u32),
    logs: usize,
    /// B is `skip.0..skip.1` in phase 1.
    skip: (usize, usize),
    /// Per phase, per entry: what a request does without evaluating it (see [`Fold`]).
    folds: Rc<[Vec<Fold>; 6]>,
    /// Per phase, per entry: where a request goes on from there (see [`next_evals`]).
    next: Rc<[Vec<u32>; 6]>,
    /// The `MATCHED_VARS` [`Fold::Counted`] gates leave.
    counted: Rc<Vec<Vec<Kv>>>,
}

/// Per phase, per entry `i`: the first entry from `i` on that a request evaluates when no
/// rule or target removal is active: markers and gates folded to [`Fold::Pass`] are stepped
/// over and gates folded to [`Fold::Jump`] followed, as the evaluation loop would one at a
/// time (the phase's length: nothing left). Phase 1's snapshot start `b.0` is a stop, so the
/// jump over the snapshot's rules is taken there as before.
pub(super) fn next_evals(
    phases: &[Vec<Entry>; 6],
    folds: &[Vec<Fold>; 6],
    b: (usize, usize),
) -> [Vec<u32>; 6] {
    let mut out: [Vec<u32>; 6] = Default::default();
    for (p, list) in phases.iter().enumerate() {
        let len = list.len();
        let mut next = vec![len as u32; len + 1];
        for i in (0..len).rev() {
            let stop = p == 1 && i == b.0 && b.1 > b.0;
            next[i] = match (&list[i], folds[p].get(i)) {
                _ if stop => i as u32,
                (Entry::Marker(_), _) | (Entry::Rule(..), Some(Fold::Pass)) => next[i + 1],
                // (a skipAfter target is after its rule: `next[t]` is known)
                (Entry::Rule(..), Some(&Fold::Jump(t))) if t > i => next[t.min(len)],
                _ => i as u32,
            };
        }
        out[p] = next;
    }
    out
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
    /// A rule whose targets are counts of TX keys no per-request rule can write
    /// (`&TX:crs_exclusions_drupal|TX:crs_exclusions_drupal "@eq 0"`, `&TX:ARG_LENGTH "@eq 1"`):
    /// its values are configure-time values (never memoised), so its answer is computed once.
    /// Unlike [`Fold::Pass`] and [`Fold::Jump`] it still counts as evaluated, with `ops`
    /// operator calls, and a match leaves its `MATCHED_VARS` and `MATCHED_VAR` (the last of
    /// them; index `mv - 1` in the snapshot's matched values, 0: no match): what evaluating
    /// it would do.
    Counted {
        /// Where a request goes on: `None` the next entry.
        to: Option<usize>,
        ops: u32,
        mv: u32,
    },
}

/// Can a `setvar` whose (lowercase) name is `name` write TX key `key`? Conservative: `false`
/// only when no expansion can equal `key`. `%{rule.id}` expands to digits.
pub(super) fn can_write(name: &Macro, key: &[u8]) -> bool {
    let mut k = key;
    for p in &name.parts {
        match p {
            Part::Lit(l) => match k.strip_prefix(&l[..]) {
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
pub(super) fn var_matched(v: V) -> bool {
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
        self.next = Rc::new(Default::default());
        self.counted = Rc::new(Vec::new());
    }

    /// Number of folded gates (reports and tests).
    pub fn folded(&self) -> usize {
        self.folds
            .iter()
            .flatten()
            .filter(|f| matches!(f, Fold::Pass | Fold::Jump(_)))
            .count()
    }

    /// Number of [`Fold::Counted`] rules (reports and tests).
    pub fn counted(&self) -> usize {
        self.folds
            .iter()
            .flatten()
            .filter(|f| matches!(f, Fold::Counted { .. }))
            .count()
    }
}

/// Does `v` read state that rules write (TX, persistent collections, matches)?
pub(super) fn var_stateful(v: V) -> bool {
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
pub(super) fn var_pure(v: V) -> bool {
    v == V::Nothing || var_stateful(v)
}

pub(super) fn macro_vars(m: &Macro, f: fn(V) -> bool) -> bool {
    m.parts.iter().all(|p| match p {
        Part::Lit(_) | Part::Rule(_) => true,
        Part::Var(v, ..) => f(*v),
    })
}

/// Do all of `r`'s macros (operator, setvar, msg, logdata) pass `f` on their variables?
pub(super) fn rule_macros(r: &Rule, f: fn(V) -> bool) -> bool {
    r.op.macro_arg().is_none_or(|m| macro_vars(m, f))
        && r.setvars.iter().all(|sv| {
            macro_vars(&sv.name, f)
                && match &sv.op {
                    SetOp::Del => true,
                    SetOp::Set(m)
                    | SetOp::Add(m)
                    | SetOp::Sub(m)
                    | SetOp::Init(m)
                    | SetOp::Expire(m)
                    | SetOp::Deprecate(m) => macro_vars(m, f),
                }
        })
        && r.msg.as_ref().is_none_or(|m| macro_vars(m, f))
        && r.logdata.as_ref().is_none_or(|m| macro_vars(m, f))
}

/// Can `r` (with its chain) be evaluated before the request is known, with the same result?
pub(super) fn rule_pure(r: &Rule) -> bool {
    let op = match &r.op {
        Op::RxMacro(..) => false,
        Op::Unconditional | Op::NoMatch => true,
        op => op.macro_arg().is_some(),
    };
    // (a persistent collection's record depends on the request and the time)
    op && r.ctls.is_empty()
        && r.setvars.iter().all(|sv| sv.coll == SetColl::Tx)
        && r.skip == 0
        && r.targets.iter().all(|t| var_pure(t.var))
        && r.excl.iter().all(|e| var_pure(e.var))
        && rule_macros(r, var_pure)
        && r.chain.as_deref().is_none_or(rule_pure)
}

/// Can request-independent rules after `r` be evaluated before `r` (see [`Snapshot`])?
/// `r` must not write or read rule-written state nor change control flow.
pub(super) fn rule_passable(r: &Rule, default: Disr) -> bool {
    pub(super) fn link(r: &Rule) -> bool {
        r.setvars.is_empty()
            && !r.capture
            && r.ctls.iter().all(|c| {
                matches!(
                    c,
                    Ctl::BodyProcessor(_)
                        | Ctl::ForceBodyVar(_)
                        | Ctl::BodyAccess(_)
                        | Ctl::ResponseBodyAccess(_)
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

impl Transaction {
    pub(super) fn save(&self, skip: (usize, usize)) -> Snapshot {
        Snapshot {
            tx: self.tx.clone(),
            persist: self.persist.clone(),
            next_id: self.next_id,
            matched_var: self.matched_var.clone(),
            counters: self.counters,
            logs: self.logs.len(),
            skip,
            folds: self.folds.clone(),
            next: self.next.clone(),
            counted: self.counted.clone(),
        }
    }

    /// Restores a [`Snapshot`] into a fresh transaction (before `set_request`).
    pub fn restore(&mut self, s: &Snapshot) {
        self.tx.clone_from(&s.tx);
        self.persist.clone_from(&s.persist);
        self.next_id = s.next_id;
        self.counters = s.counters;
        if s.skip.1 > s.skip.0 {
            self.skip1 = s.skip;
            self.skip1_mv = s.matched_var.clone();
        }
        self.folds = s.folds.clone();
        self.next = s.next.clone();
        self.counted = s.counted.clone();
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
        self.next = Rc::new(next_evals(&eng.phases, &self.folds, (start, i)));
        self.save((start, i))
    }

    /// Computes the [`Fold`]s from the state after the request-independent head `b` of phase 1.
    pub(super) fn fold_gates(&mut self, b: (usize, usize)) -> [Vec<Fold>; 6] {
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
                    for r in eng.rules[*ri].links() {
                        writers.extend(
                            r.setvars
                                .iter()
                                .filter(|sv| sv.coll == SetColl::Tx)
                                .map(|sv| &sv.name),
                        );
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
            if self.mode == Mode::Off {
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
                let d = match r.disruptive {
                    Some(Disr::Block) | None => eng.default_disr[p],
                    Some(d) => d,
                };
                // no effect when it matches but the jump
                let silent = r.chain.is_none()
                    && r.setvars.is_empty()
                    && r.ctls.is_empty()
                    && !r.capture
                    && !r.log
                    && r.skip == 0
                    && d == Disr::Pass;
                let key = match r.targets.as_slice() {
                    [Target {
                        var: V::Values(Coll::Tx),
                        sel: Sel::Key(k),
                        count: false,
                        ..
                    }] => Some(k),
                    _ => None,
                };
                let gate = key.is_some_and(|k| stable(k))
                    && !reads_matched
                    && silent
                    && r.excl.is_empty()
                    && r.memo.is_some(); // a pure operator
                if !gate {
                    if let Some(f) = self.fold_counted(r, *ri, *skip_to, silent, &stable) {
                        folds[p][i] = f;
                    }
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

    /// [`Fold::Counted`] for rule `r` (entry `Entry::Rule(ri, skip_to)`) when its targets are
    /// TX keys that `stable` says no per-request rule writes, at least one counted (`&TX:key`)
    /// and the others not set: its values are then the counts alone, the same in every
    /// request and never memoised, and with a pure operator its answer and its operator
    /// calls are too. A match must have no effect but the jump (`silent`). Evaluated here
    /// once, on the snapshot's state, which is left as it was.
    fn fold_counted(
        &mut self,
        r: &Rule,
        ri: usize,
        skip_to: Option<usize>,
        silent: bool,
        stable: &dyn Fn(&[u8]) -> bool,
    ) -> Option<Fold> {
        let mut counts = 0;
        for t in &r.targets {
            let Target {
                var: V::Values(Coll::Tx),
                sel: Sel::Key(k),
                count,
                ..
            } = t
            else {
                return None;
            };
            if !stable(k) {
                return None;
            }
            if *count {
                counts += 1;
            } else if self.tx.get(k).is_some() {
                return None;
            }
        }
        if counts == 0 || !r.excl.is_empty() || r.memo.is_none() {
            return None;
        }
        let (mv, mvs, counters) = (
            self.matched_var.clone(),
            std::mem::take(&mut self.matched_vars),
            self.counters,
        );
        // (the top rule alone: a chain runs only after a match, and a match must be silent)
        let hit = self.eval_one(r, r, ri, false);
        let ops = self.counters.1 - counters.1;
        let left = std::mem::replace(&mut self.matched_vars, mvs);
        self.matched_var = mv;
        self.counters = counters;
        if !hit {
            return Some(Fold::Counted {
                to: None,
                ops,
                mv: 0,
            });
        }
        if !silent || left.is_empty() {
            return None;
        }
        let counted = Rc::make_mut(&mut self.counted);
        counted.push(left);
        Some(Fold::Counted {
            to: skip_to,
            ops,
            mv: counted.len() as u32,
        })
    }
}
