//! What a match does: setvar, ctl, captures, `MATCHED_VAR*` and the match log.

use super::*;
use crate::ops::Caps;
use crate::persist::FieldOp;
use collections::Expanded;

impl Transaction {
    /// Sets `name` (already lowercase) in a collection; updates in place when it exists.
    pub(super) fn set_tx_kv(&mut self, coll: SetColl, name: &[u8], val: &[u8]) {
        self.set_tx_rc(coll, name, NO_SLOT, rc(val));
    }

    /// [`Transaction::set_tx_kv`] with a value already shared (no copy); `slot`: the TX
    /// name's slot ([`NO_SLOT`]: looked up by its bytes).
    pub(super) fn set_tx_rc(&mut self, coll: SetColl, name: &[u8], slot: u32, val: Rc<[u8]>) {
        self.next_id += 1;
        let id = self.next_id * 2;
        let found = match coll {
            SetColl::Tx => self.tx.get_mut(name, slot),
            SetColl::Persist(i) => self.persist[i as usize].get_mut(name),
        };
        if let Some(kv) = found {
            kv.val = val;
            kv.id = id;
            return;
        }
        let key = self.intern(name);
        let kv = Kv {
            key: key.clone(),
            val,
            id,
        };
        match coll {
            SetColl::Tx => self.tx.insert_slot(key, slot, kv),
            SetColl::Persist(i) => {
                self.persist[i as usize].insert(key, kv);
            }
        }
    }

    pub(super) fn exec_setvar(&mut self, sv: &SetVar, rule: &Rule) {
        if let (SetColl::Persist(i), SetOp::Init(k)) = (sv.coll, &sv.op) {
            let key = self.expand(k, Some(rule)).into_owned();
            self.init_collection(i, &key);
            return;
        }
        let mut name = self.expand(&sv.name, Some(rule));
        if name.iter().any(u8::is_ascii_uppercase) {
            name.to_mut().make_ascii_lowercase();
        }
        let name: &[u8] = &name;
        // (the current value as a number: only `=+`, `=-` and `deprecatevar` read it)
        let cur = || {
            let kv = match sv.coll {
                SetColl::Tx if sv.slot != NO_SLOT => self.tx.get_slot(sv.slot),
                SetColl::Tx => self.tx.get(name),
                SetColl::Persist(i) => self.persist[i as usize].get(name),
            };
            kv.map(|kv| ops::atoi(&kv.val)).unwrap_or(0)
        };
        match &sv.op {
            SetOp::Del => {
                match sv.coll {
                    SetColl::Tx => self.tx.remove(name),
                    SetColl::Persist(i) => {
                        self.record_op(i, FieldOp::Del(name.to_vec()));
                        self.persist[i as usize].remove(name)
                    }
                };
            }
            SetOp::Set(m) => {
                let v = match self.expand_shared(m, Some(rule)) {
                    Expanded::Built(b) => self.intern(&b),
                    e => e.into_rc(),
                };
                if let SetColl::Persist(i) = sv.coll {
                    self.record_op(i, FieldOp::Set(name.to_vec(), v.to_vec()));
                }
                self.set_tx_rc(sv.coll, name, sv.slot, v);
            }
            SetOp::Init(_) => {}
            SetOp::Expire(m) => {
                let secs = ops::atoi(&self.expand(m, Some(rule))).clamp(0, 86_400) as u32;
                if let SetColl::Persist(i) = sv.coll {
                    self.record_op(i, FieldOp::Expire(name.to_vec(), secs));
                }
            }
            SetOp::Deprecate(m) => {
                let arg = self.expand(m, Some(rule)).into_owned();
                let cur = cur();
                if let SetColl::Persist(i) = sv.coll {
                    self.deprecate(i, name, &arg, cur);
                }
            }
            SetOp::Add(m) | SetOp::Sub(m) => {
                let d = ops::atoi(&self.expand_shared(m, Some(rule)));
                let d = if matches!(sv.op, SetOp::Add(_)) {
                    d
                } else {
                    d.saturating_neg()
                };
                let v = cur().saturating_add(d);
                if let SetColl::Persist(i) = sv.coll {
                    self.record_op(i, FieldOp::Add(name.to_vec(), d));
                }
                let v = self.intern(collections::decimal(&mut itoa::Buffer::new(), v));
                self.set_tx_rc(sv.coll, name, sv.slot, v);
            }
        }
    }

    pub(super) fn exec_ctl(&mut self, c: &Ctl) {
        match c {
            Ctl::RemoveById(r) => self.removed_ids.extend_from_slice(r),
            Ctl::RemoveByTag(t) => self.removed_tags.push(t.clone()),
            Ctl::RemoveTargetById(r, e) => self.excl_by_id.push((r.clone(), e.clone())),
            Ctl::RemoveTargetByTag(t, e) => self.excl_by_tag.push((t.clone(), e.clone())),
            Ctl::Engine(m) => self.mode = *m,
            Ctl::BodyProcessor(p) => {
                // libmodsecurity sets REQBODY_PROCESSOR with the choice, body or not
                self.body_proc = Some(*p);
                self.set_scalar(s::REQBODY_PROCESSOR, p.name().as_bytes());
            }
            Ctl::ForceBodyVar(b) => self.force_body_var = *b,
            Ctl::BodyAccess(b) => self.body_access = *b,
            Ctl::ResponseBodyAccess(b) => self.resp_body_access = *b,
            Ctl::Ignored => {}
        }
    }

    pub(super) fn exec_actions(&mut self, rule: &Rule) {
        for sv in &rule.setvars {
            self.exec_setvar(sv, rule);
        }
        for c in &rule.ctls {
            self.exec_ctl(c);
        }
    }

    pub(super) fn log_match(&mut self, top: &Rule, ri: usize) {
        if !top.log {
            return;
        }
        let msg = top
            .msg
            .as_ref()
            .map(|m| String::from_utf8_lossy(&self.expand(m, Some(top))).into_owned())
            .unwrap_or_default();
        // logdata holds request bytes: shown as ModSecurity's audit log shows them, bytes outside
        // printable ASCII as `\xHH` (CR/LF, DEL, C1 controls, UTF-8), first 256 bytes
        let data = top
            .logdata
            .as_ref()
            .map(|m| {
                let d = self.expand(m, Some(top));
                hex_if_needed(&d[..d.len().min(256)])
            })
            .unwrap_or_default();
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

    pub(super) fn set_captures(&mut self, caps: Caps) {
        for (i, c) in caps.into_iter().enumerate().take(10) {
            let k = [b'0' + i as u8];
            match c {
                Some(v) => {
                    let kv = self.tx_kv(&k, &v);
                    self.tx.insert(kv.key.clone(), kv);
                }
                None => {
                    self.tx.remove(&k[..]);
                }
            }
        }
    }

    /// `MATCHED_VAR_NAME` of `v` (`ARGS:id`), cached per value id and variable; a name that is
    /// the variable's alone (no key: `REQUEST_URI`, `MATCHED_VARS`, a count) per variable.
    pub(super) fn matched_name(&mut self, v: &Val) -> Rc<[u8]> {
        if v.var == V::Nothing
            || v.key.is_empty()
            || matches!(v.var, V::MatchedVars | V::MatchedVarsNames)
        {
            if let Some(n) = self.var_names.get(&v.var) {
                return n.clone();
            }
            let n = if v.var == V::Nothing {
                self.empty.clone()
            } else {
                rc(var_name(v.var).as_bytes())
            };
            self.var_names.insert(v.var, n.clone());
            return n;
        }
        // `VAR:key` from the intern table (the same names come back on every request), built
        // on the stack when short
        let build = |t: &mut Self, v: &Val| -> Rc<[u8]> {
            let n = var_name(v.var).as_bytes();
            let len = n.len() + 1 + v.key.len();
            let mut stack = [0u8; 128];
            let mut heap = Vec::new();
            let b: &mut [u8] = if len <= stack.len() {
                &mut stack[..len]
            } else {
                heap.resize(len, 0);
                &mut heap
            };
            b[..n.len()].copy_from_slice(n);
            b[n.len()] = b':';
            b[n.len() + 1..].copy_from_slice(&v.key);
            t.intern(b)
        };
        if v.id == NOCACHE {
            return build(self, v);
        }
        if let Some(n) = self.names.get(&(v.id, v.var)) {
            return n.clone();
        }
        let n = build(self, v);
        self.names.insert((v.id, v.var), n.clone());
        n
    }
}

/// Bytes outside printable ASCII (0x20-0x7E) as `\xHH`, the rest as is: how ModSecurity writes
/// matched data into its audit log. The result is ASCII, so a log line stays one line and valid
/// JSON through any log formatter.
fn hex_if_needed(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("\\x{c:02x}"));
        }
    }
    out
}
