//! Evaluation: rules and chains over a phase, with skips, removals and the disruptive decision.

use super::*;

impl Transaction {
    pub(super) fn is_removed(&self, r: &Rule) -> bool {
        (!self.removed_ids.is_empty() && in_ranges(&self.removed_ids, r.id))
            || (!self.removed_tags.is_empty() && self.removed_tags.iter().any(|t| r.has_tag(t)))
    }

    /// Evaluates one rule of a chain; `immediate`: an unchained rule (logs itself).
    pub(super) fn eval_one(&mut self, rule: &Rule, top: &Rule, ri: usize, immediate: bool) -> bool {
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
                    t.apply_with(&cur, &mut nb, eng.settings.unicode_map.as_deref());
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
                if let (Some(slot), Some(pf)) = (rule.pf, &eng.prefilter) {
                    // The regex's own byte needs first (what `op_eval` tests before the
                    // regex): one pass over the value answers most values never seen before
                    // (a number, a session id), without the prefilter's scan of the value.
                    // Skipped as the prefilter skips: not an operator call.
                    if let Op::Rx(rx) = &rule.op {
                        if crate::prefilter::Need::rules_out(rx.need.as_ref(), tv) {
                            continue;
                        }
                    }
                    // the rule's regex needs one of its literals: skip it when none occurs
                    let key = (u64::from(v.id) << 32) | u64::from(rule.tchain);
                    let hit = if v.id == NOCACHE {
                        crate::prefilter::has(&pf.scan(tv), slot)
                    } else {
                        let at = match self.pf_cache.get(&key) {
                            Some(&at) => at,
                            None => {
                                let at = self.pf_bits.len();
                                pf.scan_into(tv, &mut self.pf_bits);
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
                let (m, caps) = self.op_eval(rule, tv, rule.capture && !rule.negated);
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

    pub(super) fn eval_chain(&mut self, top: &Rule, ri: usize) -> bool {
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

    /// Runs the rules of one phase: 1 request headers, 2 request body, 3 response headers,
    /// 4 response body, 5 logging. A decision (deny, `allow`) ends phases 1-4.
    pub fn run_phase(&mut self, phase: u8) {
        if self.mode == Mode::Off || (phase < 5 && (self.intervention.is_some() || self.allowed)) {
            return;
        }
        let eng = self.eng.clone();
        let list = &eng.phases[phase as usize];
        let mut i = 0;
        self.phase_start();
        let next = self.next.clone();
        let next = &next[phase as usize];
        let counted = self.counted.clone();
        let folds = self.folds.clone();
        let known = misses::Phase {
            entries: &eng.miss_entries[phase as usize],
            folds: &folds[phase as usize],
            next,
            stop: match phase == 1 && self.skip1.1 > self.skip1.0 {
                true => self.skip1.0,
                false => usize::MAX,
            },
        };
        // No runtime target exclusion / no rule removal active: only a rule's `ctl` actions
        // change them, so they are read again after each evaluation, not at every entry.
        let mut no_excl = self.excl_by_id.is_empty() && self.excl_by_tag.is_empty();
        let mut quiet = no_excl && self.removed_ids.is_empty() && self.removed_tags.is_empty();
        while i < list.len() {
            if self.load.is_some() {
                // a stale record must be loaded first: the caller runs the request again
                return;
            }
            // (entry `i`'s rule already found not to be a known miss)
            let mut checked = false;
            // Markers and folded gates: straight to the next entry to evaluate, unless a
            // removal is active (a removed gate is not followed; folds are off with a target
            // removal). What the steps below would do one entry at a time.
            if quiet {
                if let Some(&n) = next.get(i) {
                    i = n as usize;
                }
                // (the known misses from here, in one step)
                (i, checked) = self.skip_known_misses(i, known);
                if i >= list.len() {
                    break;
                }
            }
            // phase 1's snapshot start (`known.stop`): its entries were run at configure
            if i == known.stop {
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
            if !quiet && self.is_removed(rule) {
                i += 1;
                continue;
            }
            // (a ctl:ruleRemoveTarget* could remove a gate's target: evaluate then)
            let fold = if no_excl {
                folds[phase as usize].get(i)
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
                Some(&Fold::Counted { to, ops, mv }) => {
                    // what evaluating it does: counted, its operator calls, its matches
                    self.counters.0 += 1;
                    self.counters.1 += ops;
                    self.matched_vars.clear();
                    if mv > 0 {
                        let mvs = &counted[mv as usize - 1];
                        self.matched_vars.extend(mvs.iter().cloned());
                        self.matched_var = mvs.last().cloned();
                        if self.mode == Mode::Off {
                            // (a `ctl:ruleEngine=Off` before it: a match ends the phase)
                            return;
                        }
                    }
                    i = to.unwrap_or(i + 1);
                    continue;
                }
                _ => {}
            }
            self.matched_vars.clear();
            self.counters.0 += 1;
            if !checked && (self.known_miss(rule) || self.tx_known_miss(rule)) {
                // what evaluating it would do: every value skipped on its memo bit
                i += 1;
                continue;
            }
            let matched = self.eval_chain(rule, ri);
            no_excl = self.excl_by_id.is_empty() && self.excl_by_tag.is_empty();
            quiet = no_excl && self.removed_ids.is_empty() && self.removed_tags.is_empty();
            if matched {
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
}
