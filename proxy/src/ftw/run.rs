//! Runs tests: each stage's request sent, its response and WAF log lines checked
//! against the stage's `output` as go-ftw checks them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use regex::bytes::Regex;

use super::capture::{Line, Store};
use super::exchange::{self, Response};
use super::format::{Loaded, Stage};
use super::live::Live;
use super::request;

/// Where a stage's log lines come from.
pub enum Source {
    /// Sluice in this process: its filters' lines, picked by request id.
    InProcess {
        /// The traffic listener.
        addr: SocketAddr,
        /// The filters' log lines.
        store: Store,
    },
    /// A server already running: the lines its log holds between two marker requests.
    Live(Live),
}

/// How a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every stage held.
    Pass,
    /// A stage did not.
    Fail,
    /// The file is `enabled: false`.
    Skip,
}

/// One test's result.
#[derive(Debug)]
pub struct TestResult {
    /// `RULE-TEST` (or `test_title`).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Its description, if any.
    pub desc: Option<String>,
    /// Pass, fail or skip.
    pub outcome: Outcome,
    /// Rule ids logged for its requests, in order, without repeats.
    pub ids: Vec<u64>,
    /// What did not hold, `stage N: ...`.
    pub failures: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

/// Sends stages to a server and reads the rule ids it logged.
pub struct Runner {
    /// Where stages go and their log lines come from.
    pub source: Source,
    /// Per stage: connect, and idle time between bytes of the response.
    pub timeout: Duration,
}

impl Runner {
    /// Runs test `i` of `file`.
    pub fn run_test(&self, file: &Loaded, i: usize) -> TestResult {
        let start = Instant::now();
        let test = &file.file.tests[i];
        let mut ids = Vec::new();
        let mut failures = Vec::new();
        let skip = file.file.meta.enabled == Some(false);
        if !skip {
            for (n, entry) in test.stages.iter().enumerate() {
                for f in self.run_stage(entry.stage(), &mut ids) {
                    failures.push(format!("stage {}: {f}", n + 1));
                }
            }
        }
        TestResult {
            name: file.test_name(i),
            file: file.path.clone(),
            desc: test.desc.clone(),
            outcome: if skip {
                Outcome::Skip
            } else if failures.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            ids,
            failures,
            duration: start.elapsed(),
        }
    }

    /// Sends one stage; what did not hold (empty: it passed). Adds the ids logged to `ids`.
    fn run_stage(&self, stage: &Stage, ids: &mut Vec<u64>) -> Vec<String> {
        let mut fail = Vec::new();
        let bytes = match request::build(&stage.input) {
            Ok(b) => b,
            Err(e) => return vec![e.to_string()],
        };
        let head_only = stage.input.method.eq_ignore_ascii_case("HEAD");
        let (res, lines) = match &self.source {
            Source::InProcess { addr, store } => {
                let mark = store.mark();
                let res = exchange::send(*addr, &bytes, head_only, self.timeout);
                if res.is_err() {
                    // No response to wait for: give a late log line a moment.
                    std::thread::sleep(Duration::from_millis(50));
                }
                let lines = stage_lines(store.since(mark), res.as_ref().ok());
                (res, lines)
            }
            Source::Live(live) => match live.exchange(&bytes, head_only, self.timeout) {
                Ok(got) => got,
                Err(e) => return vec![format!("{e:#}")],
            },
        };
        for l in &lines {
            for id in &l.ids {
                if !ids.contains(id) {
                    ids.push(*id);
                }
            }
        }
        let log: String = lines
            .iter()
            .flat_map(|l| std::iter::once(l.text.clone()).chain(l.modsec.iter().cloned()))
            .collect::<Vec<_>>()
            .join("\n");
        let logged = |id: &u64| lines.iter().any(|l| l.ids.contains(id));
        let out = &stage.output;
        let expect_error = out.expect_error.unwrap_or(false);
        match (&res, expect_error) {
            (Err(e), false) => fail.push(match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "no response within {}s (--timeout)",
                    self.timeout.as_secs_f64()
                ),
                _ => format!("no response: {e}"),
            }),
            (Ok(r), true) => fail.push(format!("expected an error, got status {}", r.status)),
            _ => {}
        }
        if let Ok(r) = &res {
            if let Some(s) = &out.status {
                if !s.accepts(r.status) {
                    fail.push(format!("status {}, expected {s}", r.status));
                }
            }
            if let Some(p) = &out.response_contains {
                check(&mut fail, "response_contains", p, r.text.as_bytes(), true);
            }
        }
        if let Some(p) = &out.log_contains {
            check(&mut fail, "log_contains", p, log.as_bytes(), true);
        }
        if let Some(p) = &out.no_log_contains {
            check(&mut fail, "no_log_contains", p, log.as_bytes(), false);
        }
        if let Some(l) = &out.log {
            let missing: Vec<_> = l.expect_ids.iter().filter(|i| !logged(i)).collect();
            if !missing.is_empty() {
                fail.push(format!("expected ids not logged: {missing:?}"));
            }
            let unwanted: Vec<_> = l.no_expect_ids.iter().filter(|i| logged(i)).collect();
            if !unwanted.is_empty() {
                fail.push(format!("unexpected ids logged: {unwanted:?}"));
            }
            if let Some(p) = &l.match_regex {
                check(&mut fail, "match_regex", p, log.as_bytes(), true);
            }
            if let Some(p) = &l.no_match_regex {
                check(&mut fail, "no_match_regex", p, log.as_bytes(), false);
            }
        }
        fail
    }
}

/// The lines of the stage whose response is `res`: those naming its request id, and
/// the ones naming no request; all lines of the window when it has no id.
fn stage_lines(window: Vec<Line>, res: Option<&Response>) -> Vec<Line> {
    match res.and_then(|r| r.header("x-request-id")) {
        Some(id) => window
            .into_iter()
            .filter(|l| l.request_id.as_deref().is_none_or(|r| r == id))
            .collect(),
        None => window,
    }
}

/// Checks that pattern `p` matches (or, `want` false, does not match) `text`.
fn check(fail: &mut Vec<String>, field: &str, p: &str, text: &[u8], want: bool) {
    match Regex::new(p) {
        Err(e) => fail.push(format!("{field}: bad regex: {e}")),
        Ok(re) if re.is_match(text) != want => fail.push(if want {
            format!("{field} {p:?} did not match")
        } else {
            format!("{field} {p:?} matched")
        }),
        Ok(_) => {}
    }
}
