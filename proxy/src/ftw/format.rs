//! The go-ftw test file format (the YAML the Core Rule Set and Coraza write their
//! regression tests in), read with serde: both the current layout (`rule_id`,
//! `tests[].test_id`, `stages[].input`) and the older one (`test_title`,
//! `stages[].stage.input`, `log_contains`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One test file.
#[derive(Debug, Deserialize)]
pub struct TestFile {
    /// Author, name, description, `enabled`.
    #[serde(default)]
    pub meta: Meta,
    /// The rule the file tests (current layout); test names are `RULE-TEST`.
    #[serde(default)]
    pub rule_id: Option<u64>,
    /// The tests, run in order.
    #[serde(default)]
    pub tests: Vec<Test>,
}

/// A file's `meta` table.
#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    /// Who wrote it.
    #[serde(default)]
    pub author: Option<String>,
    /// `false` skips the whole file.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The file's name (older layout).
    #[serde(default)]
    pub name: Option<String>,
    /// What it tests.
    #[serde(default)]
    pub description: Option<String>,
}

/// One test: stages sent in order, each checked.
#[derive(Debug, Deserialize)]
pub struct Test {
    /// Number within the file (current layout).
    #[serde(default)]
    pub test_id: Option<u64>,
    /// Full name, e.g. `942100-1` (older layout).
    #[serde(default)]
    pub test_title: Option<String>,
    /// What the test shows.
    #[serde(default, alias = "description")]
    pub desc: Option<String>,
    /// The requests.
    #[serde(default)]
    pub stages: Vec<StageEntry>,
}

/// A stage as written: inline (current layout) or under `stage:` (older layout).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StageEntry {
    /// `- stage: {input, output}`.
    Wrapped {
        /// The stage.
        stage: Stage,
    },
    /// `- {input, output}`.
    Inline(Stage),
}

impl StageEntry {
    /// The stage, whichever way it was written.
    pub fn stage(&self) -> &Stage {
        match self {
            StageEntry::Wrapped { stage } | StageEntry::Inline(stage) => stage,
        }
    }
}

/// One request and what must come of it.
#[derive(Debug, Deserialize)]
pub struct Stage {
    /// The request.
    #[serde(default)]
    pub input: Input,
    /// The expectations.
    #[serde(default)]
    pub output: Output,
}

/// A stage's request. `dest_addr`, `port` and `protocol` are read and not used: every
/// request goes to the in-process listener, in cleartext.
#[derive(Debug, Deserialize)]
pub struct Input {
    /// Where go-ftw would send it.
    #[serde(default)]
    pub dest_addr: Option<String>,
    /// Port go-ftw would use.
    #[serde(default)]
    pub port: Option<u16>,
    /// `http` or `https`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Request method (`GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request target (`/`), sent as written.
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Protocol version on the request line (`HTTP/1.1`); empty for none.
    #[serde(default = "default_version")]
    pub version: String,
    /// Header fields, in file order.
    #[serde(default)]
    pub headers: serde_yaml::Mapping,
    /// Body, as written (a list is joined with CRLF).
    #[serde(default)]
    pub data: Option<Data>,
    /// Body, base64.
    #[serde(default)]
    pub encoded_data: Option<String>,
    /// The whole request, base64: sent as is, nothing above applies.
    #[serde(default)]
    pub encoded_request: Option<String>,
    /// The whole request as text (older layout): sent as is.
    #[serde(default)]
    pub raw_request: Option<String>,
    /// Add `Content-Length` (when there is a body) and `Connection: close` if missing
    /// (default on).
    #[serde(default)]
    pub autocomplete_headers: Option<bool>,
    /// The older name of `!autocomplete_headers`.
    #[serde(default)]
    pub stop_magic: Option<bool>,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            dest_addr: None,
            port: None,
            protocol: None,
            method: default_method(),
            uri: default_uri(),
            version: default_version(),
            headers: serde_yaml::Mapping::new(),
            data: None,
            encoded_data: None,
            encoded_request: None,
            raw_request: None,
            autocomplete_headers: None,
            stop_magic: None,
        }
    }
}

fn default_method() -> String {
    "GET".into()
}
fn default_uri() -> String {
    "/".into()
}
fn default_version() -> String {
    "HTTP/1.1".into()
}

/// A body: one string, or lines joined with CRLF.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Data {
    /// As written.
    Text(String),
    /// Lines.
    Lines(Vec<String>),
}

/// What a stage expects. Every field set must hold.
#[derive(Debug, Default, Deserialize)]
pub struct Output {
    /// The response status (or one of several, older layout).
    #[serde(default)]
    pub status: Option<Status>,
    /// A regex the response (head and body) must match.
    #[serde(default)]
    pub response_contains: Option<String>,
    /// A regex the request's WAF log must match (older layout).
    #[serde(default)]
    pub log_contains: Option<String>,
    /// A regex the request's WAF log must not match (older layout).
    #[serde(default)]
    pub no_log_contains: Option<String>,
    /// Rule ids and patterns of the request's WAF log.
    #[serde(default)]
    pub log: Option<LogExpect>,
    /// The request must get no HTTP response (refused, reset, timed out).
    #[serde(default)]
    pub expect_error: Option<bool>,
}

/// Expected status: one code or a list of acceptable ones.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Status {
    /// Exactly this.
    One(u16),
    /// Any of these.
    Any(Vec<u16>),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::One(s) => write!(f, "{s}"),
            Status::Any(v) => write!(f, "one of {v:?}"),
        }
    }
}

impl Status {
    /// Whether `code` is acceptable.
    pub fn accepts(&self, code: u16) -> bool {
        match self {
            Status::One(s) => *s == code,
            Status::Any(v) => v.contains(&code),
        }
    }
}

/// The `log` table of an output.
#[derive(Debug, Default, Deserialize)]
pub struct LogExpect {
    /// Rule ids that must be logged for the request.
    #[serde(default)]
    pub expect_ids: Vec<u64>,
    /// Rule ids that must not be.
    #[serde(default)]
    pub no_expect_ids: Vec<u64>,
    /// A regex the request's log must match.
    #[serde(default)]
    pub match_regex: Option<String>,
    /// A regex it must not match.
    #[serde(default)]
    pub no_match_regex: Option<String>,
}

/// A test file read from disk.
pub struct Loaded {
    /// Where it was read.
    pub path: PathBuf,
    /// What it holds.
    pub file: TestFile,
}

impl Loaded {
    /// The rule id of the file: `rule_id`, else the leading digits of its file name.
    pub fn rule_id(&self) -> Option<u64> {
        self.file.rule_id.or_else(|| {
            let stem = self.path.file_stem()?.to_str()?;
            let digits: String = stem.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    }

    /// The name reports give test `i` (0-based) of the file: `test_title`, else
    /// `RULE-TEST`, else `FILE-N`.
    pub fn test_name(&self, i: usize) -> String {
        let t = &self.file.tests[i];
        if let Some(title) = &t.test_title {
            return title.clone();
        }
        let n = t.test_id.unwrap_or(i as u64 + 1);
        match self.rule_id() {
            Some(r) => format!("{r}-{n}"),
            None => {
                let stem = self
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{stem}-{n}")
            }
        }
    }
}

/// Reads every test file at `paths`: files as given, directories walked for `*.yaml`
/// and `*.yml` (sorted). An error names the file that does not parse.
pub fn load_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Loaded>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let file: TestFile = serde_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(Loaded { path, file })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) {
            out.push(p);
        }
    }
    Ok(())
}
