//! Variables: a rule's targets resolved against the collections (with exclusions), and
//! macro expansion.

use super::*;
use std::borrow::Cow;

impl Transaction {
    pub(super) fn coll(&self, c: Coll) -> (&[Kv], &[Kv]) {
        match c {
            Coll::Args => (&self.args_get, &self.args_post),
            Coll::ArgsGet => (&self.args_get, &[]),
            Coll::ArgsPost => (&self.args_post, &[]),
            Coll::Headers => (&self.headers, &[]),
            Coll::Cookies => (&self.cookies, &[]),
            Coll::Files => (&self.files, &[]),
            Coll::FilesSizes => (&self.files_sizes, &[]),
            Coll::PartHeaders => (&self.part_headers, &[]),
            Coll::RespHeaders => (&self.resp_headers, &[]),
            Coll::Tx | Coll::Persist(_) | Coll::Empty => (&[], &[]),
        }
    }

    /// A persistent collection's map (TX is [`TxMap`], read through `self.tx`).
    pub(super) fn map(&self, c: Coll) -> Option<&FxMap<Rc<[u8]>, Kv>> {
        match c {
            Coll::Persist(i) => Some(&self.persist[i as usize]),
            _ => None,
        }
    }

    pub(super) fn collect(&self, t: &Target, excl: &[Excl], dyn_excl: &[Excl], out: &mut Vec<Val>) {
        let start = out.len();
        // exclusions are only asked about `t.var`: no exclusion of that variable, nothing to test
        let no_ex = !excl.iter().chain(dyn_excl.iter()).any(|e| e.var == t.var);
        let all = matches!(t.sel, Sel::All);
        // (the exclusions to test, when one names this variable)
        let exs = (!no_ex).then_some((excl, dyn_excl));
        // a variable without keys (REQUEST_FILENAME, XML:/*, MATCHED_VAR) is removed whole by any
        // exclusion that names it (`!REQUEST_FILENAME`, `ctl:ruleRemoveTargetById=ID;REQUEST_FILENAME`)
        let removed = !no_ex
            && !matches!(
                t.var,
                V::Values(_) | V::Names(_) | V::MatchedVars | V::MatchedVarsNames
            );
        match t.var {
            _ if removed => {}
            V::Values(c) | V::Names(c) => {
                let names = matches!(t.var, V::Names(_));
                /// Pushes `kv` when the target selects its key (`all`: no selector to test;
                /// also a key found by an exact lookup in a map: its entries are keyed by their
                /// key lowercased, as selectors are) and no exclusion in `exs` removes it.
                /// Inline: a collection is walked for every target list of every phase, one
                /// call per key otherwise (in wasm a call costs an interruption check too).
                #[inline(always)]
                fn take(
                    t: &Target,
                    names: bool,
                    all: bool,
                    exs: Option<(&[Excl], &[Excl])>,
                    kv: &Kv,
                    out: &mut Vec<Val>,
                ) {
                    if !(all || selects(&t.sel, &kv.key)) {
                        return;
                    }
                    if excluded(exs, t.var, &kv.key) {
                        return;
                    }
                    let (val, id) = if names {
                        (kv.key.clone(), kv.id | 1)
                    } else {
                        (kv.val.clone(), kv.id)
                    };
                    out.push(Val {
                        var: t.var,
                        key: kv.key.clone(),
                        val,
                        id,
                    });
                }
                let push =
                    |kv: &Kv, out: &mut Vec<Val>, all: bool| take(t, names, all, exs, kv, out);
                if c == Coll::Tx {
                    if let Sel::Key(k) = &t.sel {
                        // (a literal key has a slot: found by index, no hashing)
                        let kv = match t.tx_slot {
                            NO_SLOT => self.tx.get(k.as_slice()),
                            s => self.tx.get_slot(s),
                        };
                        if let Some(kv) = kv {
                            debug_assert!(t.sel.matches(&kv.key));
                            push(kv, out, true);
                        }
                    } else if all || self.tx.may_hold(&t.sel) {
                        // (a TX selector no key matches now walks nothing: `TxMap`)
                        for kv in self.tx.values() {
                            push(kv, out, all);
                        }
                    }
                } else if let Some(m) = self.map(c) {
                    if let Sel::Key(k) = &t.sel {
                        if let Some(kv) = m.get(k.as_slice()) {
                            debug_assert!(t.sel.matches(&kv.key));
                            push(kv, out, true);
                        }
                    } else {
                        for kv in m.values() {
                            push(kv, out, all);
                        }
                    }
                } else {
                    let (a, b) = self.coll(c);
                    for kv in a.iter().chain(b.iter()) {
                        push(kv, out, all);
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
                    if (all || t.sel.matches(&kv.key)) && !excluded(exs, t.var, &kv.key) {
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
                val: count_value(n),
                id: NOCACHE,
            });
        }
    }

    /// [`Transaction::first`] of a macro's `%{tx.key}` whose key has slot `slot`
    /// ([`NO_SLOT`]: none, looked up by its bytes).
    #[inline]
    pub(super) fn first_slot(&self, v: V, key: Option<&[u8]>, slot: u32) -> Option<Rc<[u8]>> {
        match (v, slot) {
            (V::Values(Coll::Tx), s) if s != NO_SLOT => {
                self.tx.get_slot(s).map(|kv| kv.val.clone())
            }
            _ => self.first(v, key),
        }
    }

    /// The first value of `v` (of its key `key`): what a macro `%{v.key}` expands to.
    pub(super) fn first(&self, v: V, key: Option<&[u8]>) -> Option<Rc<[u8]>> {
        match v {
            V::Values(Coll::Tx) => self.tx.get(key?).map(|kv| kv.val.clone()),
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

    /// [`Transaction::expand`] without copying where it can: a literal is borrowed and a macro
    /// that is one variable alone (`%{tx.critical_anomaly_score}`, `%{tx.allowed_methods}`)
    /// shares that variable's value (the same bytes `expand` would copy out, or none).
    pub(super) fn expand_shared<'m>(&self, m: &'m Macro, rule: Option<&Rule>) -> Expanded<'m> {
        match m.parts.as_slice() {
            // (a literal shares the rule's bytes: a `setvar` stores it without a copy)
            [] => return Expanded::Shared(self.empty.clone()),
            [Part::Lit(l)] => return Expanded::Shared(l.clone()),
            [Part::Var(v, k, slot)] => {
                return Expanded::Shared(
                    self.first_slot(*v, k.as_deref(), *slot)
                        .unwrap_or_else(|| self.empty.clone()),
                )
            }
            _ => {}
        }
        Expanded::Built(self.expand_d(m, rule, 0).into_owned())
    }

    pub(super) fn expand_d<'m>(
        &self,
        m: &'m Macro,
        rule: Option<&Rule>,
        depth: u8,
    ) -> Cow<'m, [u8]> {
        if let Some(l) = m.literal() {
            return Cow::Borrowed(l);
        }
        let mut out = Vec::with_capacity(64);
        for p in &m.parts {
            match p {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Var(v, k, slot) => {
                    if let Some(x) = self.first_slot(*v, k.as_deref(), *slot) {
                        out.extend_from_slice(&x);
                    }
                }
                Part::Rule(f) => {
                    let Some(r) = rule else { continue };
                    match f {
                        RuleField::Id => push_decimal(&mut out, u64::from(r.id)),
                        RuleField::Severity => {
                            if let Some(s) = r.severity {
                                push_decimal(&mut out, u64::from(s));
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
}

/// Whether selector `sel` takes `key`: [`Sel::matches`], with the common cases inline (a
/// collection is walked for every target of every list a phase reads, one call per key
/// otherwise; in wasm a call costs an interruption check too).
#[inline(always)]
pub(super) fn selects(sel: &Sel, key: &[u8]) -> bool {
    match sel {
        Sel::All => true,
        // most keys differ in length: no call for them
        Sel::Key(k) => k.len() == key.len() && k.eq_ignore_ascii_case(key),
        // (a key shorter than the literal, no call)
        Sel::Prefix(p) => key.len() >= p.len() && key[..p.len()].eq_ignore_ascii_case(p),
        Sel::Contains(c) => c.len() <= key.len() && sel.matches(key),
        s => s.matches(key),
    }
}

/// Whether an exclusion of `exs` (a rule's static and dynamic ones; `None` when none
/// names the variable collected) removes value `key` of `var`. Inline: asked once per
/// collected key.
#[inline(always)]
fn excluded(exs: Option<(&[Excl], &[Excl])>, var: V, key: &[u8]) -> bool {
    exs.is_some_and(|(a, b)| a.iter().chain(b.iter()).any(|e| e.hits(var, key)))
}

/// A macro expanded by [`Transaction::expand_shared`] (also an operator's argument,
/// [`Transaction::arg`]).
pub(super) enum Expanded<'m> {
    /// The macro is literal.
    Lit(&'m [u8]),
    /// One variable's value, or an expansion kept for the rest of a rule's evaluation: shared.
    Shared(Rc<[u8]>),
    /// Built from several parts.
    Built(Vec<u8>),
}

impl Expanded<'_> {
    /// The bytes as a shared value (no copy for [`Expanded::Shared`]).
    pub(super) fn into_rc(self) -> Rc<[u8]> {
        match self {
            Expanded::Lit(l) => rc(l),
            Expanded::Shared(r) => r,
            Expanded::Built(b) => Rc::from(b),
        }
    }
}

impl std::ops::Deref for Expanded<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Expanded::Lit(l) => l,
            Expanded::Shared(r) => r,
            Expanded::Built(b) => b,
        }
    }
}

/// Appends `n` in decimal (what `n.to_string()` gives, without a `String`: `itoa`).
pub(super) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` in decimal (what `n.to_string()` gives), written in `buf`.
pub(super) fn decimal(buf: &mut itoa::Buffer, n: i64) -> &[u8] {
    buf.format(n).as_bytes()
}

/// `&VAR`'s value: the decimal count, small ones shared (counted targets are evaluated on
/// every request: `&REQUEST_HEADERS:Host`, `&ARGS`, ...).
fn count_value(n: usize) -> Rc<[u8]> {
    const SHARED: usize = 64;
    thread_local! {
        static SMALL: Vec<Rc<[u8]>> = (0..SHARED).map(|i| rc(i.to_string().as_bytes())).collect();
    }
    if n < SHARED {
        SMALL.with(|s| s[n].clone())
    } else {
        rc(n.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_to_string() {
        for n in [
            0i64,
            1,
            -1,
            9,
            10,
            -10,
            42,
            99,
            100,
            12345,
            i64::MAX,
            i64::MIN,
            -9_999_999_999,
        ] {
            assert_eq!(
                decimal(&mut itoa::Buffer::new(), n),
                n.to_string().as_bytes(),
                "{n}"
            );
        }
        for n in [0u64, 7, 10, 920_100, u64::from(u32::MAX), u64::MAX] {
            let mut out = b"id:".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("id:{n}").into_bytes());
        }
    }
}
