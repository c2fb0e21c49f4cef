//! `sluice ctl status` as text: the generation and its swaps, then routes with their
//! chains, filters with their limits and failures, each filter's phases with calls and
//! p99, and the pools' peers, as aligned columns.

use std::fmt::Write as _;

use serde_json::Value;

/// Aligned columns under a header row, two spaces apart.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn ms(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(x) if x < 1.0 => format!("{:.0}us", x * 1e3),
        Some(x) => format!("{x:.2}ms"),
    }
}

fn mib(v: &Value) -> String {
    v.as_u64()
        .map(|b| format!("{}MiB", b / (1024 * 1024)))
        .unwrap_or_else(|| "-".into())
}

/// The whole status as text.
pub fn render(st: &Value) -> String {
    let mut out = String::new();
    let hash = st["hash"].as_str().unwrap_or("");
    let _ = writeln!(
        out,
        "generation {}  hash {}  policy {}",
        s(&st["generation"]),
        &hash[..hash.len().min(12)],
        s(&st["policy"])
    );
    let sw = &st["swaps"];
    let back: Vec<String> = sw["rollback_generations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let _ = writeln!(
        out,
        "swaps {} ok, {} failed; last reload {}; rollback to {}; live snapshots {}",
        s(&sw["successes"]),
        s(&sw["failures"]),
        ms(&sw["last_reload_ms"]),
        if back.is_empty() {
            "-".to_string()
        } else {
            back.join(", ")
        },
        s(&st["live_snapshots"]),
    );
    if let Some(e) = sw["last_error"].as_str() {
        let _ = writeln!(out, "last rejected policy: {e}");
    }
    if !st["bundle"].is_null() {
        let _ = writeln!(out, "bundle {}", st["bundle"]);
    }
    out.push('\n');
    let routes: Vec<Vec<String>> = st["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            // Proxy-Wasm filters, then component middleware (their order on the request).
            let chain: Vec<String> = r["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(r["components"].as_array().into_iter().flatten())
                .map(s)
                .collect();
            vec![
                s(&r["name"]),
                format!(
                    "{}{}",
                    r["host"].as_str().unwrap_or("*"),
                    r["path_prefix"].as_str().unwrap_or("/")
                ),
                match r["function"].as_str() {
                    Some(f) => format!("fn {f}"),
                    None => s(&r["pool"]),
                },
                if chain.is_empty() {
                    "(none)".into()
                } else {
                    chain.join(" -> ")
                },
            ]
        })
        .collect();
    out.push_str(&columns(&["ROUTE", "MATCH", "POOL", "CHAIN"], &routes));
    out.push('\n');
    let mut filters = Vec::new();
    let mut phases = Vec::new();
    for f in st["filters"].as_array().into_iter().flatten() {
        let fl = &f["failures"];
        filters.push(vec![
            s(&f["name"]),
            mib(&f["memory_limit_bytes"]),
            format!("{}ms", s(&f["callback_deadline_ms"])),
            format!(
                "{}/{}/{}",
                s(&fl["traps"]),
                s(&fl["deadlines"]),
                s(&fl["memory"])
            ),
            s(&fl["vms_replaced"]),
            s(&fl["crash_loop_trips"]),
            f["module_sha256"]
                .as_str()
                .map(|h| h[..h.len().min(12)].to_string())
                .unwrap_or_default(),
        ]);
        // Phases the filter never ran in (no callbacks yet) are left out.
        let ran = f["phases"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, p)| p["calls"].as_u64().unwrap_or(0) > 0);
        for (phase, p) in ran {
            phases.push(vec![
                s(&f["name"]),
                phase.clone(),
                s(&p["calls"]),
                ms(&p["p99_ms"]),
                ms(&p["mean_ms"]),
            ]);
        }
    }
    out.push_str(&columns(
        &[
            "FILTER",
            "MEMORY",
            "DEADLINE",
            "TRAPS/DEADLINES/MEMORY",
            "VMS REPLACED",
            "CRASH LOOPS",
            "MODULE",
        ],
        &filters,
    ));
    if !phases.is_empty() {
        out.push('\n');
        out.push_str(&columns(
            &["FILTER", "PHASE", "CALLS", "P99", "MEAN"],
            &phases,
        ));
    }
    let mut peers = Vec::new();
    for p in st["pools"].as_array().into_iter().flatten() {
        for peer in p["peers"].as_array().into_iter().flatten() {
            peers.push(vec![
                s(&p["name"]),
                s(&peer["peer"]),
                if peer["healthy"].as_bool() == Some(true) {
                    "healthy".into()
                } else {
                    "DOWN".into()
                },
                s(&peer["errors"]),
                s(&peer["ejections"]),
            ]);
        }
    }
    if !peers.is_empty() {
        out.push('\n');
        out.push_str(&columns(
            &["POOL", "PEER", "HEALTH", "ERRORS", "EJECTIONS"],
            &peers,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::columns;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let t = columns(
            &["A", "LONG HEADER", "C"],
            &[vec!["wide cell".into(), "x".into(), "last".into()]],
        );
        assert_eq!(
            t,
            "A          LONG HEADER  C\nwide cell  x            last\n"
        );
    }
}
