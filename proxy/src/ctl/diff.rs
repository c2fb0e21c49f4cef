//! `sluice ctl diff --policy FILE`: what a reload of FILE would change, section by
//! section (routes, filters, modules, certificates, pools): the running policy's
//! summary (from `/admin/status`) against FILE's, computed here the same way
//! ([`crate::admin::summary`]).

use std::fmt::Write as _;

use serde_json::Value;

/// The sections compared, in the order shown.
pub const SECTIONS: &[&str] = &["routes", "filters", "modules", "certificates", "pools"];

/// One change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    /// The section (`routes`, ...).
    pub section: String,
    /// The name (route, filter, pool) or file (module, certificate).
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
    /// For `changed`: each field that differs, running and new.
    pub fields: Vec<(String, Value, Value)>,
}

/// The changes from `running` to `next` (two summaries).
pub fn changes(running: &Value, next: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    for section in SECTIONS {
        let a = running[section].as_object().unwrap_or(&empty);
        let b = next[section].as_object().unwrap_or(&empty);
        let change = |name: &str, kind, fields| Change {
            section: section.to_string(),
            name: name.to_string(),
            kind,
            fields,
        };
        for (name, old) in a {
            match b.get(name) {
                None => out.push(change(name, "removed", Vec::new())),
                Some(new) if new != old => {
                    let fields = match (old.as_object(), new.as_object()) {
                        (Some(o), Some(n)) => o
                            .keys()
                            .chain(n.keys().filter(|k| !o.contains_key(*k)))
                            .filter(|k| o.get(*k) != n.get(*k))
                            .map(|k| {
                                (
                                    k.clone(),
                                    o.get(k).cloned().unwrap_or(Value::Null),
                                    n.get(k).cloned().unwrap_or(Value::Null),
                                )
                            })
                            .collect(),
                        _ => vec![(String::new(), old.clone(), new.clone())],
                    };
                    out.push(change(name, "changed", fields));
                }
                Some(_) => {}
            }
        }
        for name in b.keys().filter(|k| !a.contains_key(*k)) {
            out.push(change(name, "added", Vec::new()));
        }
    }
    out
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            s[..12].to_string()
        }
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The changes as text, one line per name and one per changed field.
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes: a reload would serve the same routes, filters, modules, certificates and pools\n".into();
    }
    let mut out = String::new();
    let mut section = "";
    for c in changes {
        if c.section != section {
            section = &c.section;
            let _ = writeln!(out, "{section}:");
        }
        let mark = match c.kind {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        let _ = writeln!(out, "  {mark} {} ({})", c.name, c.kind);
        for (field, old, new) in &c.fields {
            let _ = writeln!(out, "      {field}: {} -> {}", short(old), short(new));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn added_removed_and_changed_fields_are_told_apart() {
        let a = json!({"routes": {"r": {"pool": "a", "filters": ["x"]}, "gone": {}}, "pools": {}});
        let b =
            json!({"routes": {"r": {"pool": "a", "filters": ["x", "y"]}, "new": {}}, "pools": {}});
        let c = changes(&a, &b);
        assert_eq!(c.len(), 3, "{c:?}");
        // Names in order, additions after.
        assert_eq!((c[0].name.as_str(), c[0].kind), ("gone", "removed"));
        assert_eq!((c[1].name.as_str(), c[1].kind), ("r", "changed"));
        assert_eq!(
            c[1].fields,
            vec![("filters".into(), json!(["x"]), json!(["x", "y"]))]
        );
        assert_eq!((c[2].name.as_str(), c[2].kind), ("new", "added"));
        assert!(changes(&a, &a).is_empty());
        assert!(render(&c).contains("~ r (changed)\n      filters: [\"x\"] -> [\"x\",\"y\"]"));
    }
}
