//! What `sluice test` prints and writes: a line per test, a summary line, and the
//! JSON or JUnit XML report CI reads.

use std::fmt::Write as _;

use super::run::{Outcome, TestResult};

/// The line printed for a test: `PASS name [ids]`, `FAIL name [ids] reasons`.
pub fn line(r: &TestResult) -> String {
    let tag = match r.outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "SKIP",
    };
    let ids: Vec<String> = r.ids.iter().map(u64::to_string).collect();
    let mut s = format!("{tag} {} [{}]", r.name, ids.join(" "));
    if !r.failures.is_empty() {
        let _ = write!(s, " {}", r.failures.join("; "));
    }
    s
}

/// Passed, failed, skipped counts.
pub fn counts(results: &[TestResult]) -> (usize, usize, usize) {
    let n = |o| results.iter().filter(|r| r.outcome == o).count();
    (n(Outcome::Pass), n(Outcome::Fail), n(Outcome::Skip))
}

/// `sluice test: P passed, F failed, S skipped, T total`.
pub fn summary(results: &[TestResult]) -> String {
    let (p, f, s) = counts(results);
    format!(
        "sluice test: {p} passed, {f} failed, {s} skipped, {} total",
        results.len()
    )
}

/// The JSON report: counts and every test with its ids and failures.
pub fn json(results: &[TestResult]) -> String {
    let (p, f, s) = counts(results);
    let tests: Vec<_> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "file": r.file.display().to_string(),
                "description": r.desc,
                "result": match r.outcome { Outcome::Pass => "pass", Outcome::Fail => "fail", Outcome::Skip => "skip" },
                "ids": r.ids,
                "failures": r.failures,
                "duration_ms": r.duration.as_secs_f64() * 1000.0,
            })
        })
        .collect();
    let v = serde_json::json!({
        "passed": p, "failed": f, "skipped": s, "total": results.len(), "tests": tests,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The JUnit XML report: one `testsuite` per file, one `testcase` per test.
pub fn junit(results: &[TestResult]) -> String {
    let (_, f, s) = counts(results);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"sluice test\" tests=\"{}\" failures=\"{f}\" skipped=\"{s}\">",
        results.len()
    );
    let mut files: Vec<&std::path::Path> = Vec::new();
    for r in results {
        if !files.contains(&r.file.as_path()) {
            files.push(&r.file);
        }
    }
    for file in files {
        let of: Vec<&TestResult> = results.iter().filter(|r| r.file == file).collect();
        let (fails, skips) = (
            of.iter().filter(|r| r.outcome == Outcome::Fail).count(),
            of.iter().filter(|r| r.outcome == Outcome::Skip).count(),
        );
        let time: f64 = of.iter().map(|r| r.duration.as_secs_f64()).sum();
        let name = xml(&file.display().to_string());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{fails}\" skipped=\"{skips}\" time=\"{time:.3}\">",
            of.len()
        );
        for r in of {
            let ids: Vec<String> = r.ids.iter().map(u64::to_string).collect();
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{name}\" time=\"{:.3}\">",
                xml(&r.name),
                r.duration.as_secs_f64()
            );
            match r.outcome {
                Outcome::Pass => {}
                Outcome::Skip => out.push_str("<skipped/>"),
                Outcome::Fail => {
                    let _ = write!(
                        out,
                        "<failure message=\"{}\">{}</failure>",
                        xml(&r.failures.join("; ")),
                        xml(&r.failures.join("\n"))
                    );
                }
            }
            let _ = writeln!(
                out,
                "<system-out>ids: {}</system-out></testcase>",
                ids.join(" ")
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// `s` escaped for XML text and attributes (control characters dropped).
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' | '\t' => o.push(c),
            c if (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    o
}
