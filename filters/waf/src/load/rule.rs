//! A rule built from its parsed parts: phase, severity, category, actions and defaults.

use super::*;

pub(super) fn parse_severity(v: &str) -> Option<u8> {
    if let Ok(n) = v.parse::<u8>() {
        return (n <= 7).then_some(n);
    }
    let names = [
        "EMERGENCY",
        "ALERT",
        "CRITICAL",
        "ERROR",
        "WARNING",
        "NOTICE",
        "INFO",
        "DEBUG",
    ];
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(v))
        .map(|p| p as u8)
}

pub(super) fn parse_phase(v: &str) -> Option<u8> {
    match v.to_ascii_lowercase().as_str() {
        "1" => Some(1),
        "2" | "request" => Some(2),
        "3" => Some(3),
        "4" | "response" => Some(4),
        "5" | "logging" => Some(5),
        _ => None,
    }
}

pub(super) fn category_of(id: u32, tags: &[Rc<str>]) -> Rc<str> {
    for t in tags {
        if let Some(c) = t.strip_prefix("attack-") {
            return Rc::from(c.replace('-', "_"));
        }
    }
    let c = match id / 1000 {
        911 => "method",
        913 => "scanner",
        920 | 921 => "protocol",
        930 => "lfi",
        931 => "rfi",
        932 => "rce",
        933 => "php",
        934 => "generic",
        941 => "xss",
        942 => "sqli",
        943 => "fixation",
        944 => "java",
        949 | 959 => "blocking",
        _ => "other",
    };
    Rc::from(c)
}

impl<'a> Loader<'a> {
    pub(super) fn build_rule(
        &mut self,
        raw: RawRule,
        starter: bool,
        phase: u8,
    ) -> Result<Rule, LoadError> {
        let loc = raw.loc.clone();
        let mut targets = Vec::new();
        let mut excl = Vec::new();
        if let Some(t) = &raw.targets {
            for v in parse::split_vars(t) {
                let (is_excl, tg) = self.target(&v).map_err(|e| err(&loc, e))?;
                if is_excl {
                    excl.push(Excl {
                        var: tg.var,
                        sel: tg.sel,
                    });
                } else {
                    targets.push(tg);
                }
            }
        } else {
            targets.push(Target {
                var: V::Nothing,
                sel: Sel::All,
                count: false,
                name: Rc::from(""),
                tx_slot: crate::tx::NO_SLOT,
            });
        }
        let (op, negated) = match &raw.op {
            Some(o) => self.operator(&loc, o)?,
            None => (Op::Unconditional, false),
        };
        let defaults = self.defaults[phase as usize].clone();
        let mut rule = Rule {
            id: 0,
            phase,
            loc: loc.clone(),
            targets,
            excl,
            op,
            negated,
            tchain: 0,
            memo: None,
            tlist: None,
            memo_word: 0,
            transforms: Rc::from(Vec::new()),
            multi_match: false,
            capture: false,
            setvars: Vec::new(),
            ctls: Vec::new(),
            disruptive: None,
            status: None,
            log: defaults.log.unwrap_or(true),
            msg: None,
            logdata: None,
            tags: Vec::new(),
            severity: None,
            skip_after: None,
            skip: 0,
            chain: None,
            category: Rc::from("other"),
            pf: None,
        };
        let mut transforms = defaults.transforms.clone();
        let mut log_set = false;
        let mut noaudit = false;
        for a in &raw.actions {
            let v = a.value.as_deref().unwrap_or("");
            let need = || -> Result<&str, LoadError> {
                a.value
                    .as_deref()
                    .ok_or_else(|| err(&loc, format!("action {} needs a value", a.name)))
            };
            match a.name.as_str() {
                "id" => {
                    if starter {
                        rule.id = need()?
                            .trim()
                            .parse()
                            .map_err(|_| err(&loc, format!("bad id {v:?}")))?;
                    }
                }
                "phase" => {}
                "chain" => {}
                "msg" => rule.msg = Some(parse_macro(v).map_err(|e| err(&loc, e))?),
                "logdata" => rule.logdata = Some(parse_macro(v).map_err(|e| err(&loc, e))?),
                "tag" => rule.tags.push(Rc::from(v)),
                "severity" => {
                    rule.severity = Some(
                        parse_severity(v)
                            .ok_or_else(|| err(&loc, format!("bad severity {v:?}")))?,
                    )
                }
                "capture" => rule.capture = true,
                "multiMatch" => rule.multi_match = true,
                "t" => match T::parse(v).map_err(|e| err(&loc, e))? {
                    Some(t) => transforms.push(t),
                    None => transforms.clear(),
                },
                "setvar" => rule.setvars.push(self.setvar(&loc, need()?)?),
                "initcol" => rule.setvars.push(self.initcol(&loc, need()?)?),
                "setsid" => rule
                    .setvars
                    .push(self.initcol(&loc, &format!("session={}", need()?))?),
                "setuid" => rule
                    .setvars
                    .push(self.initcol(&loc, &format!("user={}", need()?))?),
                "setrsc" => rule
                    .setvars
                    .push(self.initcol(&loc, &format!("resource={}", need()?))?),
                "expirevar" | "deprecatevar" => {
                    if let Some(sv) = self.expirevar(&loc, &a.name, need()?)? {
                        rule.setvars.push(sv);
                    }
                }
                "ctl" => rule.ctls.push(self.ctl(&loc, need()?)?),
                "skipAfter" => rule.skip_after = Some(need()?.to_string()),
                "skip" => {
                    rule.skip = v
                        .parse()
                        .map_err(|_| err(&loc, format!("bad skip {v:?}")))?
                }
                "pass" => rule.disruptive = Some(Disr::Pass),
                "deny" => rule.disruptive = Some(Disr::Deny),
                "drop" => rule.disruptive = Some(Disr::Drop),
                "allow" => rule.disruptive = Some(Disr::Allow),
                "block" => rule.disruptive = Some(Disr::Block),
                "status" => {
                    rule.status = Some(
                        v.parse()
                            .map_err(|_| err(&loc, format!("bad status {v:?}")))?,
                    )
                }
                "log" => {
                    rule.log = true;
                    log_set = true;
                }
                "nolog" => {
                    rule.log = false;
                    log_set = true;
                }
                "noauditlog" => noaudit = true,
                "auditlog"
                | "ver"
                | "rev"
                | "maturity"
                | "accuracy"
                | "setenv"
                | "sanitiseArg"
                | "sanitiseMatched"
                | "sanitiseMatchedBytes"
                | "sanitiseRequestHeader"
                | "sanitiseResponseHeader"
                | "xmlns" => {}
                other => return Err(err(&loc, format!("unsupported action {other}"))),
            }
        }
        let _ = log_set;
        // The audit line lists what ModSecurity's audit log would: logged, not `noauditlog`.
        rule.log &= !noaudit;
        if !starter && rule.disruptive.is_some() {
            rule.disruptive = None;
        }
        if starter && rule.status.is_none() && matches!(rule.disruptive, Some(Disr::Block) | None) {
            rule.status = defaults.status;
        }
        if let (Op::Rx(rx), false, false) = (&rule.op, rule.negated, rule.multi_match) {
            if let ops::Rx::Bytes(r) = &rx.rx {
                let pat = r.as_str().to_string();
                let lits = self
                    .pf_cache
                    .entry(pat.clone())
                    .or_insert_with(|| crate::prefilter::literals(&pat))
                    .clone();
                if let Some(l) = lits {
                    rule.pf = Some(self.pf.add(l));
                    self.stats.prefiltered += 1;
                }
            }
        }
        rule.tchain = self.intern(&transforms);
        rule.transforms = Rc::from(transforms);
        rule.category = category_of(rule.id, &rule.tags);
        Ok(rule)
    }
}
