//! `sluice ctl tail`: the access log or the WAF's audit log as it happens, read from
//! `/admin/tail` with a cursor (long polls), filtered here by route, status and rule id.

use std::io::Write as _;

use serde_json::Value;

use super::client::{Client, CtlError};

/// What lines to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this route.
    pub route: Option<String>,
    /// Only this status (`403`) or class (`4xx`).
    pub status: Option<String>,
    /// Only WAF lines that matched this rule id.
    pub rule: Option<u64>,
}

impl Filter {
    /// Checks a `--status` value: three digits, or a digit and `xx`.
    pub fn check_status(s: &str) -> Result<(), String> {
        let b = s.as_bytes();
        let ok = b.len() == 3
            && b[0].is_ascii_digit()
            && ((b[1].is_ascii_digit() && b[2].is_ascii_digit())
                || s[1..].eq_ignore_ascii_case("xx"));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "--status {s}: expected a status (403) or a class (4xx)"
            ))
        }
    }

    /// Whether `line` passes. A WAF line's status is the response's (or its own block's).
    pub fn keep(&self, line: &Value) -> bool {
        if let Some(r) = &self.route {
            if line["route"].as_str() != Some(r.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.status {
            let status = line["response_status"]
                .as_u64()
                .or_else(|| line["status"].as_u64())
                .map(|s| s.to_string())
                .unwrap_or_default();
            let class = want.len() == 3 && want[1..].eq_ignore_ascii_case("xx");
            let ok = if class {
                status.len() == 3 && status[..1] == want[..1]
            } else {
                status == *want
            };
            if !ok {
                return false;
            }
        }
        if let Some(id) = self.rule {
            let matched = line["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["id"].as_u64() == Some(id));
            if !matched {
                return false;
            }
        }
        true
    }
}

fn time(v: &Value) -> String {
    let Some(t) = v.as_f64() else {
        return "-".into();
    };
    let secs = t as u64 % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        (t.fract() * 1e3) as u64
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// One line as text (UTC time of day first).
pub fn format(log: &str, l: &Value) -> String {
    if log == "waf" {
        let rules: Vec<String> = l["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_u64())
            .filter(|id| *id != 0)
            .map(|id| id.to_string())
            .collect();
        format!(
            "{} {} {} route={} {} {} score={} rules={} id={}",
            time(&l["time_unix"]),
            text(&l["action"]),
            text(&l["response_status"]),
            text(&l["route"]),
            text(&l["method"]),
            text(&l["path"]),
            text(&l["anomaly_score"]),
            rules.join(","),
            text(&l["request_id"]),
        )
    } else {
        format!(
            "{} {} {} route={} {} {:.1}ms upstream={} id={}",
            time(&l["time_unix"]),
            text(&l["status"]),
            text(&l["method"]),
            text(&l["route"]),
            text(&l["path"]),
            l["duration_us"].as_f64().unwrap_or(0.0) / 1e3,
            text(&l["upstream"]),
            text(&l["request_id"]),
        )
    }
}

/// Follows `log` (`access` or `waf`), printing the lines `filter` keeps, as text or
/// JSON; stops after `count` lines when given.
pub fn follow(
    client: &Client,
    log: &str,
    filter: &Filter,
    json: bool,
    count: Option<usize>,
) -> Result<(), CtlError> {
    let start = client.get(&format!("/admin/tail?log={log}"))?;
    let mut after = start["next"].as_u64().unwrap_or(0);
    eprintln!("following the {log} log (Ctrl-C to stop)");
    let mut shown = 0usize;
    let mut out = std::io::stdout().lock();
    loop {
        let page = client.get(&format!(
            "/admin/tail?log={log}&after={after}&wait_ms=20000"
        ))?;
        let missed = page["missed"].as_u64().unwrap_or(0);
        if missed > 0 {
            eprintln!(
                "({missed} lines missed: the server keeps the last {} per log)",
                crate::admin::feed::CAPACITY
            );
        }
        after = page["next"].as_u64().unwrap_or(after);
        for l in page["lines"].as_array().into_iter().flatten() {
            if !filter.keep(l) {
                continue;
            }
            let shown_line = if json { l.to_string() } else { format(log, l) };
            if writeln!(out, "{shown_line}")
                .and_then(|_| out.flush())
                .is_err()
            {
                return Ok(()); // the reader went away (a closed pipe)
            }
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_take_routes_statuses_classes_and_rule_ids() {
        let l = json!({"route": "api", "status": 403, "rules": [{"id": 942100}]});
        let f = |route: Option<&str>, status: Option<&str>, rule| Filter {
            route: route.map(str::to_string),
            status: status.map(str::to_string),
            rule,
        };
        assert!(f(None, None, None).keep(&l));
        assert!(f(Some("api"), Some("4xx"), Some(942100)).keep(&l));
        assert!(f(None, Some("403"), None).keep(&l));
        assert!(!f(Some("web"), None, None).keep(&l));
        assert!(!f(None, Some("5xx"), None).keep(&l));
        assert!(!f(None, None, Some(941100)).keep(&l));
        assert!(Filter::check_status("4xx").is_ok());
        assert!(Filter::check_status("404").is_ok());
        assert!(Filter::check_status("4x").is_err());
        assert!(Filter::check_status("abc").is_err());
    }
}
