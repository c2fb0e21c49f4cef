//! `sluice test --target URL --log FILE`: the tests sent to a server already running
//! (Sluice, nginx + ModSecurity, anything that logs rule ids), scored as go-ftw scores
//! them. Each stage is bracketed by two marker requests carrying a unique value in a
//! marker header (`X-CRS-Test` by default); a test-only rule in the server's rules logs
//! that value, and the stage's lines are those logged between the two markers.
//!
//! Rule ids are read from each line in either format:
//! - ModSecurity's (nginx `error.log`, Apache): every `[id "942100"]` of the line;
//! - Sluice's WAF audit line (`waf: {json}` in its log): the `rules[].id` of the JSON.
//!
//! The server's rules need the marker rule, e.g. (phase 1, before the rule set, removing
//! every other rule for the marker request so it logs nothing else):
//! `SecRule REQUEST_HEADERS:X-CRS-Test "@rx ^.*$" "id:999999,phase:1,pass,t:none,log,msg:'%{MATCHED_VAR}',ctl:ruleRemoveById=1-999998"`

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use rand::Rng as _;

use super::capture::{self, Line};
use super::exchange::{self, Response};

/// A running server and the log it writes rule ids to.
pub struct Live {
    /// Where requests go.
    pub addr: SocketAddr,
    /// The `Host` of marker requests (the target's authority).
    host: String,
    /// The marker header's name.
    marker: String,
    /// How long to wait for a marker to show in the log.
    wait: Duration,
    /// The log, read from where the last marker was found.
    tail: Mutex<Tail>,
}

impl Live {
    /// Points at `target` (`http://HOST:PORT`, or `HOST:PORT`), reading `log` from its
    /// current end.
    pub fn new(target: &str, log: PathBuf, marker: &str, wait: Duration) -> anyhow::Result<Self> {
        let authority = target
            .strip_prefix("http://")
            .unwrap_or(target)
            .trim_end_matches('/');
        if authority.contains('/') || target.starts_with("https://") {
            return Err(anyhow!(
                "--target: expected http://HOST:PORT, got {target:?}"
            ));
        }
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("--target {target:?}"))?
            .next()
            .ok_or_else(|| anyhow!("--target {target:?}: no address"))?;
        let pos = std::fs::metadata(&log)
            .with_context(|| format!("--log {}", log.display()))?
            .len();
        Ok(Live {
            addr,
            host: authority.to_string(),
            marker: marker.to_string(),
            wait,
            tail: Mutex::new(Tail {
                path: log,
                pos,
                partial: Vec::new(),
            }),
        })
    }

    /// Sends `request` between two markers; its response and the lines logged for it.
    /// An error when a marker never shows in the log (the marker rule is missing, or
    /// the log is not the server's).
    pub fn exchange(
        &self,
        request: &[u8],
        head_only: bool,
        timeout: Duration,
    ) -> anyhow::Result<(std::io::Result<Response>, Vec<Line>)> {
        let mut tail = self
            .tail
            .lock()
            .map_err(|_| anyhow!("log reader poisoned"))?;
        let start = self.mark(&mut tail, timeout)?;
        drop(start);
        let res = exchange::send(self.addr, request, head_only, timeout);
        let mut lines = self.mark(&mut tail, timeout)?;
        // The last line is the end marker's own.
        lines.pop();
        Ok((res, lines.into_iter().map(parse).collect()))
    }

    /// Sends a marker request and reads the log up to the line naming it (included).
    fn mark(&self, tail: &mut Tail, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let value = format!("sluice-test-{:032x}", rand::thread_rng().gen::<u128>());
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice test marker\r\nAccept: */*\r\n{}: {value}\r\nConnection: close\r\n\r\n",
            self.host, self.marker
        );
        exchange::send(self.addr, req.as_bytes(), false, timeout)
            .with_context(|| format!("marker request to {}", self.addr))?;
        tail.until(&value, self.wait).with_context(|| {
            format!(
                "marker {value} not in {} within {}s: does the server log the {} header (a marker rule)?",
                tail.path.display(),
                self.wait.as_secs_f64(),
                self.marker
            )
        })
    }
}

/// A log file read forward, whole lines at a time.
struct Tail {
    path: PathBuf,
    pos: u64,
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
}

impl Tail {
    /// The lines from here to the first one containing `needle` (included); waits up
    /// to `wait` for it.
    fn until(&mut self, needle: &str, wait: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        loop {
            let mut f = File::open(&self.path)?;
            let len = f.metadata()?.len();
            if len < self.pos {
                // Rotated or truncated: start over.
                self.pos = 0;
                self.partial.clear();
            }
            f.seek(SeekFrom::Start(self.pos))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            self.pos += buf.len() as u64;
            self.partial.extend_from_slice(&buf);
            while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.partial.drain(..=i).collect();
                let line = String::from_utf8_lossy(&raw[..i]).into_owned();
                let found = line.contains(needle);
                lines.push(line);
                if found {
                    return Ok(lines);
                }
            }
            if Instant::now() >= deadline {
                return Err(anyhow!("not found"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Reads a log line's rule ids: Sluice's audit JSON when the line holds one, else
/// ModSecurity's `[id "N"]` fields.
pub fn parse(text: String) -> Line {
    if let Some(i) = text.find("waf: {") {
        // The JSON runs to its closing brace; the log format may put fields after it.
        let json = &text[i + 5..];
        let mut it = serde_json::Deserializer::from_str(json).into_iter::<serde_json::Value>();
        if let Some(Ok(v)) = it.next() {
            let mut line = capture::parse("waf".into(), format!("waf: {v}"));
            line.text = text;
            return line;
        }
    }
    let mut ids = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("[id \"") {
        rest = &rest[i + 5..];
        let end = rest.find('"').unwrap_or(rest.len());
        if let Ok(id) = rest[..end].parse::<u64>() {
            if id != 0 && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Line {
        plugin: String::new(),
        text,
        request_id: None,
        ids,
        modsec: Vec::new(),
    }
}
