//! Policy problems, each with the file, the line and the reason ([`Diagnostic`]), and
//! the line finder that turns TOML spans into lines ([`Lines`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The policy file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in a policy.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyErrors(pub Vec<Diagnostic>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one policy text, spans turned into lines.
pub(super) struct Lines<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) out: Vec<Diagnostic>,
}

impl Lines<'_> {
    /// The 1-based line of byte `offset`.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
    /// Records a problem at `span` (no line when `None`).
    pub(super) fn err(&mut self, span: Option<std::ops::Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| self.line_of(s.start));
        self.out.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        });
    }
}
