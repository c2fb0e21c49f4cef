//! Variables and macros: a rule's targets and `%{...}` expansions, parsed.

use super::*;

/// Parses a macro string (`%{tx.x}`).
pub fn parse_macro(s: &str) -> Result<Macro, String> {
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && b.get(i + 1) == Some(&b'{') {
            if let Some(end) = s[i + 2..].find('}') {
                let inner = &s[i + 2..i + 2 + end];
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit).into()));
                }
                parts.push(macro_part(inner)?);
                i += 2 + end + 1;
                continue;
            }
        }
        lit.push(b[i]);
        i += 1;
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit.into()));
    }
    Ok(Macro { parts })
}

pub(super) fn macro_part(inner: &str) -> Result<Part, String> {
    let (name, key) = match inner.split_once(['.', ':']) {
        Some((n, k)) => (n, Some(k)),
        None => (inner, None),
    };
    if name.eq_ignore_ascii_case("rule") {
        let f = match key.unwrap_or("").to_ascii_lowercase().as_str() {
            "id" => RuleField::Id,
            "msg" => RuleField::Msg,
            "severity" => RuleField::Severity,
            "logdata" => RuleField::Logdata,
            _ => RuleField::Other,
        };
        return Ok(Part::Rule(f));
    }
    let v = parse_var(name).ok_or_else(|| format!("unknown variable in macro %{{{inner}}}"))?;
    Ok(Part::Var(
        v,
        key.map(|k| k.to_ascii_lowercase().into_bytes()),
        crate::tx::NO_SLOT,
    ))
}

impl<'a> Loader<'a> {
    pub(super) fn intern(&mut self, t: &[T]) -> u32 {
        let n = self.tchains.len() as u32;
        *self.tchains.entry(t.to_vec()).or_insert(n)
    }

    /// Parses one target (`!ARGS:foo`, `&TX:x`, `ARGS:/re/`, `XML:/*`).
    pub(super) fn target(&self, s: &str) -> Result<(bool, Target), String> {
        let (excl, s) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (count, s) = match s.strip_prefix('&') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (name, key) = match s.split_once(':') {
            Some((n, k)) => (n, Some(k)),
            None => (s, None),
        };
        let mut var = parse_var(name).ok_or_else(|| format!("unsupported variable {name}"))?;
        let sel = match key {
            None => Sel::All,
            Some(k) if var == V::XmlText => {
                var = match k {
                    "/*" => V::XmlText,
                    "//@*" => V::XmlAttrs,
                    _ => {
                        return Err(format!(
                            "unsupported XPath {k:?} (only XML:/* and XML://@*)"
                        ))
                    }
                };
                Sel::All
            }
            Some(k) if k.len() >= 2 && k.starts_with('/') && k.ends_with('/') => {
                let pat = format!("(?i){}", &k[1..k.len() - 1]);
                let tr = crate::pcre::translate(&pat, false);
                let re =
                    regex::bytes::Regex::new(&tr).map_err(|e| format!("bad key regex {k}: {e}"))?;
                crate::model::simple_key_regex(&k[1..k.len() - 1]).unwrap_or(Sel::Re(Rc::new(re)))
            }
            Some(k) => Sel::Key(parse::unquote(k).to_ascii_lowercase().into_bytes()),
        };
        if matches!(var, V::Scalar(_) | V::MatchedVar | V::MatchedVarName)
            && !matches!(sel, Sel::All)
        {
            // ModSecurity tolerates keys on scalars; ignore the key.
        }
        Ok((
            excl,
            Target {
                var,
                sel,
                count,
                name: Rc::from(name.to_ascii_uppercase()),
                tx_slot: crate::tx::NO_SLOT,
            },
        ))
    }
}
