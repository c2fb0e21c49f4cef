//! The actions with their own syntax: `setvar` and `ctl`.

use super::*;

impl<'a> Loader<'a> {
    pub(super) fn setvar(&self, loc: &Loc, v: &str) -> Result<SetVar, LoadError> {
        let (del, v) = match v.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, v),
        };
        let (lhs, rhs) = match v.split_once('=') {
            Some((l, r)) => (l, Some(r)),
            None => (v, None),
        };
        let (coll, name) = lhs
            .split_once('.')
            .ok_or_else(|| err(loc, format!("setvar: expected COLLECTION.name in {v:?}")))?;
        let coll = if coll.eq_ignore_ascii_case("tx") {
            SetColl::Tx
        } else {
            let up = coll.to_ascii_uppercase();
            match PERSIST.iter().position(|p| *p == up) {
                Some(p) => SetColl::Persist(p as u8),
                None => return Err(err(loc, format!("setvar: unsupported collection {coll}"))),
            }
        };
        let name = parse_macro(&name.to_ascii_lowercase()).map_err(|e| err(loc, e))?;
        let op = if del {
            SetOp::Del
        } else {
            match rhs {
                None => SetOp::Set(parse_macro("1").map_err(|e| err(loc, e))?),
                Some(r) => {
                    if let Some(x) = r.strip_prefix('+') {
                        SetOp::Add(parse_macro(x).map_err(|e| err(loc, e))?)
                    } else if let Some(x) = r.strip_prefix('-') {
                        SetOp::Sub(parse_macro(x).map_err(|e| err(loc, e))?)
                    } else {
                        SetOp::Set(parse_macro(r).map_err(|e| err(loc, e))?)
                    }
                }
            }
        };
        Ok(SetVar {
            coll,
            name,
            op,
            slot: crate::tx::NO_SLOT,
        })
    }

    /// `initcol:COLL=KEY`: a [`SetOp::Init`] on a persistent collection.
    pub(super) fn initcol(&self, loc: &Loc, v: &str) -> Result<SetVar, LoadError> {
        let (coll, key) = v
            .split_once('=')
            .ok_or_else(|| err(loc, format!("initcol: expected COLLECTION=key in {v:?}")))?;
        let up = coll.trim().to_ascii_uppercase();
        let p = PERSIST
            .iter()
            .position(|p| *p == up)
            .ok_or_else(|| err(loc, format!("initcol: unsupported collection {coll}")))?;
        if key.is_empty() {
            return Err(err(loc, "initcol: empty key"));
        }
        Ok(SetVar {
            coll: SetColl::Persist(p as u8),
            name: Macro::default(),
            op: SetOp::Init(parse_macro(key).map_err(|e| err(loc, e))?),
            slot: crate::tx::NO_SLOT,
        })
    }

    /// `expirevar:COLL.name=SECONDS` / `deprecatevar:COLL.name=N/SECONDS`; `None` on TX
    /// (a transaction ends before any expiry).
    pub(super) fn expirevar(
        &self,
        loc: &Loc,
        action: &str,
        v: &str,
    ) -> Result<Option<SetVar>, LoadError> {
        let sv = self.setvar(loc, v)?;
        let arg = match sv.op {
            SetOp::Set(m) if v.contains('=') => m,
            _ => {
                return Err(err(
                    loc,
                    format!("{action}: expected COLLECTION.name=VALUE in {v:?}"),
                ))
            }
        };
        if sv.coll == SetColl::Tx {
            return Ok(None);
        }
        let op = if action == "expirevar" {
            SetOp::Expire(arg)
        } else {
            SetOp::Deprecate(arg)
        };
        Ok(Some(SetVar { op, ..sv }))
    }

    pub(super) fn ctl(&self, loc: &Loc, v: &str) -> Result<Ctl, LoadError> {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| err(loc, format!("ctl: expected name=value in {v:?}")))?;
        let target_excl = |t: &str| -> Result<Excl, LoadError> {
            let (_, tg) = self.target(t).map_err(|e| err(loc, e))?;
            Ok(Excl {
                var: tg.var,
                sel: tg.sel,
            })
        };
        Ok(match k {
            "ruleRemoveById" => Ctl::RemoveById(parse_ranges(val).map_err(|e| err(loc, e))?),
            "ruleRemoveByTag" => Ctl::RemoveByTag(val.to_string()),
            "ruleRemoveTargetById" => {
                let (ids, t) = val
                    .split_once(';')
                    .ok_or_else(|| err(loc, "ctl:ruleRemoveTargetById=ID;TARGET"))?;
                Ctl::RemoveTargetById(parse_ranges(ids).map_err(|e| err(loc, e))?, target_excl(t)?)
            }
            "ruleRemoveTargetByTag" => {
                let (tag, t) = val
                    .split_once(';')
                    .ok_or_else(|| err(loc, "ctl:ruleRemoveTargetByTag=TAG;TARGET"))?;
                Ctl::RemoveTargetByTag(tag.to_string(), target_excl(t)?)
            }
            "ruleEngine" => Ctl::Engine(
                Mode::parse(val).ok_or_else(|| err(loc, format!("ctl:ruleEngine {val:?}")))?,
            ),
            "requestBodyProcessor" => Ctl::BodyProcessor(match val.to_ascii_uppercase().as_str() {
                "URLENCODED" => BodyProc::UrlEncoded,
                "MULTIPART" => BodyProc::Multipart,
                "JSON" => BodyProc::Json,
                "XML" => BodyProc::Xml,
                _ => {
                    return Err(err(
                        loc,
                        format!("ctl:requestBodyProcessor {val:?} unsupported"),
                    ))
                }
            }),
            "forceRequestBodyVariable" => Ctl::ForceBodyVar(val.eq_ignore_ascii_case("on")),
            "requestBodyAccess" => Ctl::BodyAccess(val.eq_ignore_ascii_case("on")),
            "responseBodyAccess" => Ctl::ResponseBodyAccess(val.eq_ignore_ascii_case("on")),
            "auditEngine" | "auditLogParts" | "debugLogLevel" | "hashEngine"
            | "hashEnforcement" => Ctl::Ignored,
            other => return Err(err(loc, format!("unsupported ctl:{other}"))),
        })
    }
}
