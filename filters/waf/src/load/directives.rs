//! SecLang directives: includes, engine settings, default actions, rule removals and updates.

use super::*;

/// Glob match with `*`, `?` and `[...]`-free patterns (enough for rule file lists).
pub fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

pub(super) fn dir_of(file: &str) -> &str {
    match file.rfind('/') {
        Some(p) => &file[..p + 1],
        None => "",
    }
}

pub(super) fn parse_ranges(s: &str) -> Result<IdRanges, String> {
    let mut out = Vec::new();
    for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id {part:?}"))?;
        let b: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id {part:?}"))?;
        out.push((a, b));
    }
    Ok(out)
}

impl<'a> Loader<'a> {
    pub(super) fn directive(&mut self, d: Directive) -> Result<(), LoadError> {
        let loc = &d.loc;
        let arg = |n: usize| -> Result<&str, LoadError> {
            d.args
                .get(n)
                .map(String::as_str)
                .ok_or_else(|| err(loc, format!("{} needs an argument", d.name)))
        };
        let onoff = |v: &str| -> Result<bool, LoadError> {
            match v.to_ascii_lowercase().as_str() {
                "on" => Ok(true),
                "off" => Ok(false),
                _ => Err(err(
                    loc,
                    format!("{}: expected On or Off, got {v:?}", d.name),
                )),
            }
        };
        let size = |v: &str| -> Result<usize, LoadError> {
            v.parse::<usize>()
                .map_err(|_| err(loc, format!("{}: expected a number, got {v:?}", d.name)))
        };
        let limit_action = |v: &str| -> Result<LimitAction, LoadError> {
            match v.to_ascii_lowercase().as_str() {
                "reject" => Ok(LimitAction::Reject),
                "processpartial" => Ok(LimitAction::ProcessPartial),
                _ => Err(err(
                    loc,
                    format!("{}: Reject or ProcessPartial, got {v:?}", d.name),
                )),
            }
        };
        match d.name.as_str() {
            "SecRule" => {
                if d.args.len() < 2 || d.args.len() > 3 {
                    return Err(err(loc, "SecRule needs VARIABLES OPERATOR [ACTIONS]"));
                }
                let actions = parse::actions(d.args.get(2).map(String::as_str).unwrap_or(""))
                    .map_err(|e| err(loc, e))?;
                self.raw_rule(RawRule {
                    loc: d.loc.clone(),
                    targets: Some(d.args[0].clone()),
                    op: Some(d.args[1].clone()),
                    actions,
                })?;
            }
            "SecAction" => {
                let actions = parse::actions(arg(0)?).map_err(|e| err(loc, e))?;
                self.raw_rule(RawRule {
                    loc: d.loc.clone(),
                    targets: None,
                    op: None,
                    actions,
                })?;
            }
            "SecMarker" => {
                self.check_no_chain(loc)?;
                self.order.push(Item::Marker(Rc::from(arg(0)?)));
            }
            "SecDefaultAction" => {
                let actions = parse::actions(arg(0)?).map_err(|e| err(loc, e))?;
                let mut def = Defaults::default();
                let mut phase = None;
                for a in &actions {
                    let v = a.value.as_deref().unwrap_or("");
                    match a.name.as_str() {
                        "phase" => {
                            phase = Some(
                                parse_phase(v)
                                    .ok_or_else(|| err(loc, format!("bad phase {v:?}")))?,
                            )
                        }
                        "pass" => def.disruptive = Some(Disr::Pass),
                        "deny" => def.disruptive = Some(Disr::Deny),
                        "drop" => def.disruptive = Some(Disr::Drop),
                        "allow" => def.disruptive = Some(Disr::Allow),
                        "block" => {}
                        "log" => def.log = Some(true),
                        "nolog" => def.log = Some(false),
                        "status" => {
                            def.status = Some(
                                v.parse()
                                    .map_err(|_| err(loc, format!("bad status {v:?}")))?,
                            )
                        }
                        "auditlog" | "noauditlog" | "tag" | "ver" | "severity" | "msg" => {}
                        "t" => {
                            if let Some(t) = T::parse(v).map_err(|e| err(loc, e))? {
                                def.transforms.push(t);
                            } else {
                                def.transforms.clear();
                            }
                        }
                        other => {
                            return Err(err(
                                loc,
                                format!("SecDefaultAction: unsupported action {other:?}"),
                            ))
                        }
                    }
                }
                let p = phase.ok_or_else(|| err(loc, "SecDefaultAction needs a phase"))?;
                if def.disruptive.is_none() {
                    def.disruptive = Some(Disr::Pass);
                }
                if def.log.is_none() {
                    def.log = Some(true);
                }
                self.defaults[p as usize] = def;
            }
            "SecRuleRemoveById" => {
                let r = parse_ranges(&d.args.join(" ")).map_err(|e| err(loc, e))?;
                self.removals.push(Removal::Id(r));
            }
            "SecRuleRemoveByTag" => self.removals.push(Removal::Tag(arg(0)?.to_string())),
            "SecRuleRemoveByMsg" => self.removals.push(Removal::Msg(arg(0)?.to_string())),
            "SecRuleUpdateTargetById" => {
                let r = parse_ranges(arg(0)?).map_err(|e| err(loc, e))?;
                self.updates.push((d.loc.clone(), r, arg(1)?.to_string()));
            }
            "SecRuleUpdateTargetByTag" => {
                let tag = arg(0)?.to_string();
                let targets = arg(1)?.to_string();
                self.updates
                    .push((d.loc.clone(), vec![], format!("\u{0}{tag}\u{0}{targets}")));
            }
            "SecRuleEngine" => {
                self.settings.mode = Mode::parse(arg(0)?)
                    .ok_or_else(|| err(loc, "SecRuleEngine: On, Off or DetectionOnly"))?
            }
            "SecRequestBodyAccess" => self.settings.body_access = onoff(arg(0)?)?,
            "SecRequestBodyLimit" => self.settings.body_limit = size(arg(0)?)?,
            "SecRequestBodyNoFilesLimit" => self.settings.body_nofiles_limit = size(arg(0)?)?,
            "SecRequestBodyInMemoryLimit" => {}
            "SecRequestBodyLimitAction" => self.settings.body_limit_action = limit_action(arg(0)?)?,
            "SecResponseBodyAccess" => self.settings.resp_body_access = onoff(arg(0)?)?,
            "SecResponseBodyLimit" => self.settings.resp_body_limit = size(arg(0)?)?,
            "SecResponseBodyLimitAction" => {
                self.settings.resp_body_limit_action = limit_action(arg(0)?)?
            }
            "SecResponseBodyMimeType" => {
                // ModSecurity: the list replaces the default (or earlier) list
                self.settings.resp_mime = d
                    .args
                    .iter()
                    .flat_map(|a| a.split_ascii_whitespace())
                    .map(str::to_ascii_lowercase)
                    .collect();
            }
            "SecResponseBodyMimeTypesClear" => self.settings.resp_mime.clear(),
            "SecCollectionTimeout" => {
                let v = arg(0)?;
                self.settings.collection_timeout = v
                    .parse::<u32>()
                    .ok()
                    .filter(|t| (1..=86_400).contains(t))
                    .ok_or_else(|| {
                        err(
                            loc,
                            format!("SecCollectionTimeout: 1 to 86400 seconds, got {v:?}"),
                        )
                    })?;
            }
            "SecRequestBodyJsonDepthLimit" => self.settings.json_depth = size(arg(0)?)?,
            "SecArgumentsLimit" => self.settings.args_limit = size(arg(0)?)?,
            "SecArgumentSeparator" => {
                let v = arg(0)?;
                if v.len() != 1 {
                    return Err(err(loc, "SecArgumentSeparator: one character"));
                }
                self.settings.arg_sep = v.as_bytes()[0];
            }
            "SecCookieFormat" => {
                if arg(0)? != "0" {
                    return Err(err(
                        loc,
                        "SecCookieFormat: only 0 (version 0 cookies) is supported",
                    ));
                }
            }
            "SecUnicodeMapFile" => {
                let file = arg(0)?;
                let cp = arg(1)?;
                let cp: u32 = cp
                    .parse()
                    .map_err(|_| err(loc, format!("SecUnicodeMapFile: bad code page {cp:?}")))?;
                let path = if file.starts_with('/') {
                    file.to_string()
                } else {
                    format!("{}{}", dir_of(&loc.file), file)
                };
                // A map the host does not offer is a warning, not an error: policies that grant
                // only the .conf files keep loading, with urlDecodeUni's low-byte fallback.
                match self.src.read(&path) {
                    Ok(text) => {
                        let map = crate::unicode_map::UnicodeMap::parse(&text, cp)
                            .map_err(|e| err(loc, format!("SecUnicodeMapFile {path}: {e}")))?;
                        self.settings.unicode_map = Some(Rc::new(map));
                    }
                    Err(e) => self.stats.warnings.push(format!(
                        "{loc}: SecUnicodeMapFile {path} not readable ({e}); %uXXXX decodes to its low byte"
                    )),
                }
            }
            "Include" => {
                let pat = arg(0)?;
                let full = if pat.starts_with('/') {
                    pat.to_string()
                } else {
                    format!("{}{}", dir_of(&loc.file), pat)
                };
                let mut files: Vec<String> = self
                    .src
                    .list()
                    .into_iter()
                    .filter(|f| glob_match(&full, f))
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(err(
                        loc,
                        format!("Include {full}: no such file offered by the host"),
                    ));
                }
                if self.depth > 8 {
                    return Err(err(loc, "Include nested too deeply"));
                }
                self.depth += 1;
                for f in files {
                    self.load_file(&f)?;
                }
                self.depth -= 1;
            }
            // Accepted, no effect in a filter (documented in README.md):
            "SecPcreMatchLimit"
            | "SecPcreMatchLimitRecursion"
            | "SecTmpDir"
            | "SecDataDir"
            | "SecUploadDir"
            | "SecUploadKeepFiles"
            | "SecUploadFileMode"
            | "SecUploadFileLimit"
            | "SecAuditEngine"
            | "SecAuditLog"
            | "SecAuditLog2"
            | "SecAuditLogDirMode"
            | "SecAuditLogFileMode"
            | "SecAuditLogFormat"
            | "SecAuditLogParts"
            | "SecAuditLogRelevantStatus"
            | "SecAuditLogStorageDir"
            | "SecAuditLogType"
            | "SecDebugLog"
            | "SecDebugLogLevel"
            | "SecComponentSignature"
            | "SecServerSignature"
            | "SecStatusEngine"
            | "SecTmpSaveUploadedFiles"
            | "SecWebAppId"
            | "SecRequestBodyJsonDepth"
            | "SecXmlExternalEntity"
            | "SecConnEngine" => {}
            other => return Err(err(loc, format!("unsupported directive {other}"))),
        }
        Ok(())
    }

    pub(super) fn check_no_chain(&self, loc: &Loc) -> Result<(), LoadError> {
        if let Some(r) = self.chain_stack.first() {
            return Err(err(
                loc,
                format!(
                    "rule at {} has `chain` but no chained SecRule follows",
                    r.loc
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn raw_rule(&mut self, r: RawRule) -> Result<(), LoadError> {
        let chains = r.actions.iter().any(|a| a.name == "chain");
        if r.targets.is_none() && !self.chain_stack.is_empty() {
            return Err(err(&r.loc, "SecAction cannot be chained"));
        }
        self.chain_stack.push(r);
        if chains {
            return Ok(());
        }
        let stack = std::mem::take(&mut self.chain_stack);
        let mut built: Option<Box<Rule>> = None;
        let n = stack.len();
        let mut phase = 2;
        // phase comes from the chain starter
        for a in &stack[0].actions {
            if a.name == "phase" {
                let v = a.value.as_deref().unwrap_or("");
                phase =
                    parse_phase(v).ok_or_else(|| err(&stack[0].loc, format!("bad phase {v:?}")))?;
            }
        }
        for (i, raw) in stack.into_iter().enumerate().rev() {
            let mut rule = self.build_rule(raw, i == 0, phase)?;
            rule.chain = built.take();
            if i > 0 {
                self.stats.chained += 1;
            }
            built = Some(Box::new(rule));
            let _ = n;
        }
        let rule = *built.expect("non-empty chain");
        if rule.id != 0 {
            if let Some(prev) = self.ids.get(&rule.id) {
                return Err(err(
                    &rule.loc,
                    format!("duplicate rule id {} (first at {prev})", rule.id),
                ));
            }
            self.ids.insert(rule.id, rule.loc.clone());
        }
        self.stats.rules += 1;
        self.rules.push(rule);
        self.order.push(Item::Rule(self.rules.len() - 1));
        Ok(())
    }
}
