//! The end of loading: rule updates applied, rules planned (memo slots, shared target lists)
//! and the [`Engine`] built.

use super::*;

impl<'a> Loader<'a> {
    pub(super) fn apply_updates(&mut self) -> Result<(), LoadError> {
        let updates = std::mem::take(&mut self.updates);
        for (loc, ranges, spec) in updates {
            let (tag, targets) = if let Some(rest) = spec.strip_prefix('\u{0}') {
                let (t, tg) = rest.split_once('\u{0}').unwrap_or((rest, ""));
                (Some(t.to_string()), tg.to_string())
            } else {
                (None, spec)
            };
            let mut parsed = Vec::new();
            for v in parse::split_vars(&targets) {
                parsed.push(self.target(&v).map_err(|e| err(&loc, e))?);
            }
            for r in self.rules.iter_mut() {
                let hit = match &tag {
                    Some(t) => r.has_tag(t),
                    None => in_ranges(&ranges, r.id),
                };
                if !hit {
                    continue;
                }
                for (is_excl, tg) in &parsed {
                    if *is_excl {
                        r.excl.push(Excl {
                            var: tg.var,
                            sel: tg.sel.clone(),
                        });
                    } else {
                        r.targets.push(tg.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Finishes loading: applies removals/updates, lays out the phases, resolves skipAfter.
    pub fn finish(mut self) -> Result<Engine, LoadError> {
        if let Some(r) = self.chain_stack.first() {
            return Err(err(&r.loc, "chain without a following rule"));
        }
        self.apply_updates()?;
        let mut removed = vec![false; self.rules.len()];
        for (i, r) in self.rules.iter().enumerate() {
            for rm in &self.removals {
                let hit = match rm {
                    Removal::Id(rg) => r.id != 0 && in_ranges(rg, r.id),
                    Removal::Tag(t) => r.has_tag(t),
                    Removal::Msg(m) => {
                        r.msg.as_ref().and_then(|x| x.literal()) == Some(m.as_bytes())
                    }
                };
                if hit {
                    removed[i] = true;
                }
            }
        }
        let mut phases: [Vec<Entry>; 6] = Default::default();
        for it in &self.order {
            match it {
                Item::Rule(i) => {
                    if !removed[*i] {
                        phases[self.rules[*i].phase as usize].push(Entry::Rule(*i, None));
                    }
                }
                Item::Marker(m) => {
                    for p in phases.iter_mut().skip(1) {
                        p.push(Entry::Marker(m.clone()));
                    }
                }
            }
        }
        for list in phases.iter_mut() {
            let mut markers: HashMap<Rc<str>, usize> = HashMap::new();
            for (i, e) in list.iter().enumerate() {
                if let Entry::Marker(m) = e {
                    markers.entry(m.clone()).or_insert(i);
                }
            }
            let len = list.len();
            for (i, e) in list.iter_mut().enumerate() {
                if let Entry::Rule(r, target) = e {
                    if let Some(name) = &self.rules[*r].skip_after {
                        // the first marker of that name after this rule; else end of phase
                        let t = markers
                            .get(name.as_str())
                            .copied()
                            .filter(|&m| m > i)
                            .unwrap_or(len);
                        *target = Some(t);
                    }
                }
            }
        }
        let mut default_disr = [Disr::Pass; 6];
        for (i, d) in self.defaults.iter().enumerate() {
            default_disr[i] = d.disruptive.unwrap_or(Disr::Pass);
        }
        // After SecRuleUpdateTargetById: final targets.
        let (mut slots, mut lists) = (0u32, HashMap::new());
        for r in self.rules.iter_mut() {
            let mut cur = Some(r);
            while let Some(rule) = cur {
                plan_rule(rule, &mut slots, &mut lists);
                cur = rule.chain.as_deref_mut();
            }
        }
        let mut tlist_words: Vec<Vec<u32>> = vec![Vec::new(); lists.len()];
        for rule in self.rules.iter().flat_map(Rule::links) {
            if let (Some(li), Some(slot)) = (rule.tlist, rule.memo) {
                tlist_words[li as usize].push(slot / 64);
            }
        }
        let tlist_words: Vec<Box<[u32]>> = tlist_words
            .into_iter()
            .map(|mut w| {
                w.sort_unstable();
                w.dedup();
                w.into_boxed_slice()
            })
            .collect();
        for r in self.rules.iter_mut() {
            let mut cur = Some(r);
            while let Some(rule) = cur {
                if let (Some(li), Some(slot)) = (rule.tlist, rule.memo) {
                    // (the words were gathered from these same rules: the slot's word is there;
                    // any other index would read another rule's misses)
                    let at = tlist_words[li as usize].binary_search(&(slot / 64));
                    rule.memo_word = at.expect("a rule's memo word is among its list's") as u32;
                }
                cur = rule.chain.as_deref_mut();
            }
        }
        let (tlist_segs, segments) = plan_segments(&self.rules, lists.len());
        let miss_entries = phases
            .each_ref()
            .map(|list| plan_miss_entries(list, &self.rules));
        let tx_selectors = crate::tx::tx_selectors(&self.rules);
        let tx_slots = crate::tx::tx_slots(&mut self.rules);
        Ok(Engine {
            tx_selectors,
            tx_slots,
            rules: self.rules,
            phases,
            settings: self.settings,
            default_disr,
            n_tchains: self.tchains.len() as u32,
            host: self.host,
            stats: self.stats,
            prefilter: self.pf.build(),
            memo: std::cell::RefCell::new(crate::memo::Memo::new(slots)),
            intern: Default::default(),
            chain_cache: Default::default(),
            list_hints: Default::default(),
            n_tlists: lists.len() as u32,
            tlist_words,
            tlist_segs,
            segments,
            miss_entries,
        })
    }
}

/// Does the operator's answer depend on its input alone (no macro, no state)?
pub(super) fn op_pure(op: &Op) -> bool {
    match op {
        Op::RxMacro(..) | Op::Unconditional | Op::NoMatch => false,
        op => op.macro_arg().is_none_or(|m| m.literal().is_some()),
    }
}

/// Can the values of `v` change while a phase runs (TX, persistent collections, MATCHED_*)?
pub(super) fn var_changes(v: V) -> bool {
    match v {
        V::Values(c) | V::Names(c) => matches!(c, Coll::Tx | Coll::Persist(_)),
        V::MatchedVar | V::MatchedVarName | V::MatchedVars | V::MatchedVarsNames | V::Nothing => {
            true
        }
        V::Scalar(_) | V::XmlText | V::XmlAttrs => false,
    }
}

/// Assigns a rule's memo slot and interned target list (see `Rule::memo`, `Rule::tlist`).
pub(super) fn plan_rule(rule: &mut Rule, slots: &mut u32, lists: &mut HashMap<String, u32>) {
    if op_pure(&rule.op) {
        rule.memo = Some(*slots);
        *slots += 1;
    }
    if !rule.targets.is_empty() && !rule.targets.iter().any(|t| var_changes(t.var)) {
        let key = format!("{:?}|{:?}", rule.targets, rule.excl);
        let n = lists.len() as u32;
        rule.tlist = Some(*lists.entry(key).or_insert(n));
    }
}

/// The segments of the `n` interned target lists of `rules` (see [`Engine::tlist_segs`]):
/// each list's targets, each with the list's exclusions of its variable, the same target
/// and exclusions in two lists being one segment.
pub(super) fn plan_segments(rules: &[Rule], n: usize) -> (Vec<Box<[u32]>>, Vec<Segment>) {
    let mut tlist_segs: Vec<Option<Box<[u32]>>> = vec![None; n];
    let (mut segments, mut ids) = (Vec::new(), HashMap::new());
    for rule in rules.iter().flat_map(Rule::links) {
        let Some(li) = rule.tlist else { continue };
        let at = &mut tlist_segs[li as usize];
        if at.is_some() {
            continue;
        }
        let segs = rule.targets.iter().map(|t| {
            let excl: Box<[Excl]> = rule
                .excl
                .iter()
                .filter(|e| e.var == t.var)
                .cloned()
                .collect();
            let key = format!("{t:?}|{excl:?}");
            *ids.entry(key).or_insert_with(|| {
                segments.push(Segment {
                    target: t.clone(),
                    excl,
                });
                segments.len() as u32 - 1
            })
        });
        *at = Some(segs.collect());
    }
    let tlist_segs = tlist_segs
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    (tlist_segs, segments)
}

/// [`Engine::miss_entries`] of a phase's `entries`.
pub(super) fn plan_miss_entries(entries: &[Entry], rules: &[Rule]) -> Box<[MissEntry]> {
    let miss = |e: &Entry| {
        let Entry::Rule(ri, _) = e else { return None };
        let r = &rules[*ri];
        Some(MissEntry {
            list: r.tlist?,
            word: r.memo_word,
            bit: 1 << (r.memo? % 64),
        })
    };
    let none = MissEntry {
        list: MissEntry::NONE,
        word: 0,
        bit: 0,
    };
    entries.iter().map(|e| miss(e).unwrap_or(none)).collect()
}
