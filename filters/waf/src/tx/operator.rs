//! One value through a rule: its transformations (cached per value) and the operator.

use super::*;
use crate::ops::Caps;
use collections::Expanded;

impl Transaction {
    pub(super) fn transformed(&mut self, rule: &Rule, v: &Val) -> Rc<[u8]> {
        if rule.transforms.is_empty() {
            return v.val.clone();
        }
        // short values: the engine's table, kept across transactions (and within this one);
        // longer ones: this transaction's cache
        let short = v.val.len() <= crate::tcache::MAX_INPUT;
        if short {
            if let Some(x) = self.eng.chain_cache.borrow().get(rule.tchain, &v.val) {
                return x;
            }
        }
        let key = (u64::from(v.id) << 32) | u64::from(rule.tchain);
        if !short && v.id != NOCACHE {
            if let Some(x) = self.cache.get(&key) {
                return x.clone();
            }
        }
        let mut a = std::mem::take(&mut self.buf_a);
        let mut b = std::mem::take(&mut self.buf_b);
        let mut owned = false;
        // the byte classes of the current value, scanned once for the chain's no-op tests
        // (again after a transformation changed it)
        let mut classes = None;
        for t in rule.transforms.iter() {
            let src: &[u8] = if owned { &a } else { &v.val };
            let c = *classes.get_or_insert_with(|| crate::transform::classes(src));
            if t.noop_in(c, src) {
                continue;
            }
            t.apply_with(src, &mut b, self.eng.settings.unicode_map.as_deref());
            std::mem::swap(&mut a, &mut b);
            owned = true;
            classes = None;
        }
        let out = if !owned || *a == *v.val {
            v.val.clone()
        } else {
            rc(&a)
        };
        self.buf_a = a;
        self.buf_b = b;
        if short {
            self.eng
                .chain_cache
                .borrow_mut()
                .put(rule.tchain, &v.val, &out);
        } else if v.id != NOCACHE {
            self.cache.insert(key, out.clone());
        }
        out
    }

    /// The operator's argument: a literal, or the macro expanded on first use within a
    /// rule evaluation and reused (shared) for its other values; `eval_one` drops it when
    /// it starts and after actions run (they may change what the macro reads).
    pub(super) fn arg<'m>(&self, m: &'m Macro, rule: &Rule) -> Expanded<'m> {
        if let Some(l) = m.literal() {
            return Expanded::Lit(l);
        }
        let mut cached = self.op_arg.borrow_mut();
        if let Some(e) = &*cached {
            return Expanded::Shared(e.clone());
        }
        let e: Rc<[u8]> = self.expand_shared(m, Some(rule)).into_rc();
        *cached = Some(e.clone());
        Expanded::Shared(e)
    }

    pub(super) fn op_eval(&self, rule: &Rule, input: &[u8], caps: bool) -> (bool, Option<Caps>) {
        let num = |m: &Macro| ops::atoi(&self.arg(m, rule));
        let r = match &rule.op {
            Op::Rx(rx) => {
                if crate::prefilter::Need::rules_out(rx.need.as_ref(), input) {
                    return (false, None);
                }
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
                if crate::prefilter::Need::rules_out(pm.need.as_ref(), input) {
                    return (false, None);
                }
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
}
