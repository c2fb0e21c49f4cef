//! `sluice test`: runs go-ftw test files (the YAML format of the Core Rule Set's and
//! Coraza's regression tests) against a policy, in-process.
//!
//! - [`format`]: the YAML test files.
//! - [`request`]: a stage's input as raw request bytes.
//! - [`harness`]: the policy served on a loopback port, pools pointed at [`stub`].
//! - [`stub`]: the origin that echoes each request.
//! - [`exchange`]: one request sent, one response read.
//! - [`capture`]: the WAF's log lines and rule ids per request.
//! - [`live`]: a server already running (`--target`), its log read between markers.
//! - [`run`]: stages sent and checked.
//! - [`report`]: per-test lines, summary, JSON and JUnit reports.

pub mod capture;
pub mod exchange;
pub mod format;
pub mod harness;
pub mod live;
pub mod report;
pub mod request;
pub mod run;
pub mod stub;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use regex::Regex;

use capture::Store;
use live::Live;
use run::{Outcome, Runner, Source};

/// What `sluice test` was asked.
pub struct Options {
    /// The policy to test in-process (without `target`).
    pub policy: Option<PathBuf>,
    /// A server already running (`http://HOST:PORT`) to send the tests to instead.
    pub target: Option<String>,
    /// With `target`: the log it writes rule ids to (ModSecurity's error log, Sluice's
    /// log with WAF audit lines).
    pub log: Option<PathBuf>,
    /// With `target`: the header of the marker requests its marker rule logs.
    pub marker_header: String,
    /// Test files and directories of them.
    pub paths: Vec<PathBuf>,
    /// Write a JSON report here.
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report here.
    pub junit: Option<PathBuf>,
    /// Run only tests whose name matches.
    pub include: Option<Regex>,
    /// Skip tests whose name matches.
    pub exclude: Option<Regex>,
    /// Per stage: how long to wait for the response.
    pub timeout: Duration,
}

/// Runs the tests, printing a line per test and the summary to stdout and writing the
/// reports asked for. `Ok(true)` when no test failed; an error when the files or the
/// policy cannot be loaded, or a report cannot be written.
pub fn main(opts: &Options, store: Store) -> anyhow::Result<bool> {
    let files = format::load_all(&opts.paths)?;
    let selected = |name: &str| {
        opts.include.as_ref().is_none_or(|r| r.is_match(name))
            && !opts.exclude.as_ref().is_some_and(|r| r.is_match(name))
    };
    let source = match (&opts.target, &opts.policy) {
        (Some(target), _) => {
            let log = opts
                .log
                .clone()
                .context("--target needs --log: the file the server logs rule ids to")?;
            Source::Live(Live::new(target, log, &opts.marker_header, opts.timeout)?)
        }
        (None, Some(policy)) => {
            let addr =
                harness::start(policy).with_context(|| format!("starting {}", policy.display()))?;
            Source::InProcess { addr, store }
        }
        (None, None) => anyhow::bail!("either --policy or --target is needed"),
    };
    let runner = Runner {
        source,
        timeout: opts.timeout,
    };
    let mut results = Vec::new();
    for file in &files {
        for i in 0..file.file.tests.len() {
            if !selected(&file.test_name(i)) {
                continue;
            }
            let r = runner.run_test(file, i);
            println!("{}", report::line(&r));
            results.push(r);
        }
    }
    println!("{}", report::summary(&results));
    if let Some(p) = &opts.json {
        std::fs::write(p, report::json(&results))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &opts.junit {
        std::fs::write(p, report::junit(&results))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(!results.iter().any(|r| r.outcome == Outcome::Fail))
}
