//! Policy files: TOML in, a typed and validated [`Policy`] out. Every problem is
//! reported with the file, the line and the reason, all of them at once. No wasm and
//! no Pingora here: compiling modules is the snapshot's job.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub mod files;

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

/// What to do when a filter fails (trap, deadline, lost VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer the request with this status.
    Closed(u16),
    /// Skip the filter for the rest of the request.
    Open,
}

/// Limits applied to filters (policy-wide defaults, overridable per filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Linear-memory cap of one VM, bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one callback, milliseconds.
    pub callback_ms: u64,
    /// CPU deadline of start-up (instantiate, `proxy_on_vm_start`, `proxy_on_configure`), milliseconds.
    pub startup_ms: u64,
    /// Most elements of one wasm table (function pointers), per VM.
    pub table_elements: usize,
}

/// A filter: a module and the configuration it is started with.
#[derive(Debug, Clone)]
pub struct FilterDef {
    /// Name (`plugin_name`).
    pub name: String,
    /// Resolved path of the `.wasm` file.
    pub module: PathBuf,
    /// Line of the `module` key, for errors found later.
    pub line: usize,
    /// Bytes for `proxy_on_configure` (tables are handed over as JSON).
    pub config: Vec<u8>,
    /// Bytes for `proxy_on_vm_start`.
    pub vm_config: Vec<u8>,
    /// Root id.
    pub root_id: String,
    /// Limits.
    pub limits: FilterLimits,
    /// Failure handling.
    pub on_failure: OnFailure,
    /// Files declared with `files`, read when the policy loaded.
    pub files: std::sync::Arc<Vec<crate::host::PluginFile>>,
}

/// An upstream pool.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Name.
    pub name: String,
    /// Peers, resolved.
    pub peers: Vec<SocketAddr>,
}

/// A route: a match and what serves it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name (for logs, metrics and the `sluice.route` property).
    pub name: String,
    /// Host to match: exact, `*.suffix`, or any when `None`.
    pub host: Option<String>,
    /// Path prefix to match.
    pub path_prefix: String,
    /// Indexes into [`Policy::filters`], in chain order.
    pub filters: Vec<usize>,
    /// Index into [`Policy::pools`].
    pub pool: usize,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// File it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// Traffic listeners.
    pub listen: Vec<SocketAddr>,
    /// Admin listener.
    pub admin: Option<SocketAddr>,
    /// Worker threads.
    pub threads: usize,
    /// Reload when the policy file or one of its modules changes.
    pub watch: bool,
    /// Where access-log lines go: `None` (off), `"stdout"` or a file path.
    pub access_log: Option<String>,
    /// The bearer token the admin API asks for (read from an env var or a file).
    pub admin_token: Option<String>,
    /// Most request or response body bytes buffered for filters.
    pub max_body_bytes: usize,
    /// Filters by definition order.
    pub filters: Vec<FilterDef>,
    /// Pools.
    pub pools: Vec<Pool>,
    /// Routes, matched in order.
    pub routes: Vec<Route>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    filters: BTreeMap<String, RawFilter>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    admin: Option<Spanned<String>>,
    threads: Option<usize>,
    #[serde(default)]
    watch: bool,
    access_log: Option<String>,
    admin_token_env: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<usize>,
    callback_ms: Option<u64>,
    startup_ms: Option<u64>,
    table_elements: Option<usize>,
    max_body_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    peers: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    module: Spanned<String>,
    files: Option<Spanned<Vec<String>>>,
    config: Option<Spanned<toml::Value>>,
    vm_config: Option<Spanned<toml::Value>>,
    root_id: Option<String>,
    memory_mb: Option<usize>,
    callback_ms: Option<u64>,
    startup_ms: Option<u64>,
    table_elements: Option<usize>,
    on_failure: Option<Spanned<String>>,
    failure_status: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    host: Option<String>,
    path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    filters: Vec<Spanned<String>>,
    pool: Spanned<String>,
}

struct Lines<'a> {
    file: &'a Path,
    text: &'a str,
    out: Vec<Diagnostic>,
}

impl Lines<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
    fn err(&mut self, span: Option<std::ops::Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| self.line_of(s.start));
        self.out.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        });
    }
}

/// Bytes handed to a filter for a config value: strings as they are, anything else
/// (tables, arrays, numbers) as JSON.
fn config_bytes(v: &toml::Value) -> Vec<u8> {
    match v {
        toml::Value::String(s) => s.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr:?} resolves to nothing"))
}

/// Default traffic listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

impl Policy {
    /// Reads and validates the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyErrors(vec![Diagnostic {
                file: path.to_path_buf(),
                line: None,
                message: format!("cannot read policy: {e}"),
            }])
        })?;
        Policy::parse(path, &text)
    }

    /// Validates policy text; `path` names it in errors and anchors relative module paths.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyErrors> {
        use sha2::Digest;
        let mut l = Lines {
            file: path,
            text,
            out: Vec::new(),
        };
        let raw: RawPolicy = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.message().to_string();
                l.err(e.span(), msg);
                return Err(PolicyErrors(l.out));
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut listen = Vec::new();
        if raw.server.listen.is_empty() {
            listen.push(DEFAULT_LISTEN.parse().expect("default address"));
        }
        for a in &raw.server.listen {
            match resolve(a.get_ref()) {
                Ok(s) => listen.push(s),
                Err(e) => l.err(Some(a.span()), e),
            }
        }
        let admin = match &raw.server.admin {
            Some(a) if a.get_ref().is_empty() || a.get_ref() == "off" => None,
            Some(a) => match resolve(a.get_ref()) {
                Ok(s) => Some(s),
                Err(e) => {
                    l.err(Some(a.span()), e);
                    None
                }
            },
            None => Some(DEFAULT_ADMIN.parse().expect("default address")),
        };
        let threads = raw.server.threads.unwrap_or(2).clamp(1, 256);
        let mut admin_token = None;
        if let Some(var) = &raw.server.admin_token_env {
            match std::env::var(var.get_ref()) {
                Ok(t) if !t.trim().is_empty() => admin_token = Some(t.trim().to_string()),
                _ => l.err(
                    Some(var.span()),
                    format!("admin token variable {} is not set", var.get_ref()),
                ),
            }
        }
        if let Some(file) = &raw.server.admin_token_file {
            match std::fs::read_to_string(base.join(file.get_ref())) {
                Ok(t) if !t.trim().is_empty() => admin_token = Some(t.trim().to_string()),
                _ => l.err(
                    Some(file.span()),
                    format!("cannot read an admin token from {}", file.get_ref()),
                ),
            }
        }
        if admin.is_some_and(|a| !a.ip().is_loopback()) && admin_token.is_none() && l.out.is_empty()
        {
            l.err(
                raw.server.admin.as_ref().map(|a| a.span()),
                "an admin listener off loopback needs admin_token_env or admin_token_file",
            );
        }
        let access_log = match raw.server.access_log.as_deref() {
            None | Some("off") | Some("") => None,
            Some("stdout") => Some("stdout".to_string()),
            Some(path) => Some(base.join(path).display().to_string()),
        };
        let default_limits = FilterLimits {
            memory_bytes: raw.limits.memory_mb.unwrap_or(64) << 20,
            callback_ms: raw.limits.callback_ms.unwrap_or(100),
            startup_ms: raw.limits.startup_ms.unwrap_or(5000),
            table_elements: raw.limits.table_elements.unwrap_or(100_000),
        };

        let mut pools = Vec::new();
        for (name, p) in &raw.pools {
            let mut peers = Vec::new();
            for a in &p.peers {
                match resolve(a.get_ref()) {
                    Ok(s) => peers.push(s),
                    Err(e) => l.err(Some(a.span()), format!("pool {name:?}: {e}")),
                }
            }
            if p.peers.is_empty() {
                l.err(None, format!("pool {name:?} has no peers"));
            }
            pools.push(Pool {
                name: name.clone(),
                peers,
            });
        }

        let mut filters = Vec::new();
        for (name, f) in &raw.filters {
            let module = base.join(f.module.get_ref());
            let line = l.line_of(f.module.span().start);
            let on_failure = match f.on_failure.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("fail_closed") => {
                    let status = f
                        .failure_status
                        .as_ref()
                        .map(|s| *s.get_ref())
                        .unwrap_or(503);
                    if !(200..=599).contains(&status) {
                        l.err(
                            f.failure_status.as_ref().map(|s| s.span()),
                            "failure_status must be 200..599",
                        );
                    }
                    OnFailure::Closed(status)
                }
                Some("fail_open") => OnFailure::Open,
                Some(other) => {
                    l.err(
                        f.on_failure.as_ref().map(|s| s.span()),
                        format!("filter {name:?}: on_failure must be \"fail_open\" or \"fail_closed\", not {other:?}"),
                    );
                    OnFailure::Open
                }
            };
            let files = match &f.files {
                Some(list) => files::load(base, list.get_ref()).unwrap_or_else(|e| {
                    l.err(Some(list.span()), format!("filter {name:?}: {e}"));
                    Vec::new()
                }),
                None => Vec::new(),
            };
            filters.push(FilterDef {
                files: std::sync::Arc::new(files),
                name: name.clone(),
                module,
                line,
                config: f
                    .config
                    .as_ref()
                    .map(|v| config_bytes(v.get_ref()))
                    .unwrap_or_default(),
                vm_config: f
                    .vm_config
                    .as_ref()
                    .map(|v| config_bytes(v.get_ref()))
                    .unwrap_or_default(),
                root_id: f.root_id.clone().unwrap_or_default(),
                limits: FilterLimits {
                    memory_bytes: f
                        .memory_mb
                        .map(|m| m << 20)
                        .unwrap_or(default_limits.memory_bytes),
                    callback_ms: f.callback_ms.unwrap_or(default_limits.callback_ms),
                    startup_ms: f.startup_ms.unwrap_or(default_limits.startup_ms),
                    table_elements: f.table_elements.unwrap_or(default_limits.table_elements),
                },
                on_failure,
            });
        }

        let mut routes = Vec::new();
        if raw.routes.is_empty() {
            l.err(None, "the policy has no [[routes]]");
        }
        for (i, r) in raw.routes.iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
            let mut chain = Vec::new();
            for f in &r.filters {
                match filters.iter().position(|d| d.name == *f.get_ref()) {
                    Some(idx) => chain.push(idx),
                    None => l.err(
                        Some(f.span()),
                        format!("route {name:?} names unknown filter {:?}", f.get_ref()),
                    ),
                }
            }
            let pool = match pools.iter().position(|p| p.name == *r.pool.get_ref()) {
                Some(p) => p,
                None => {
                    l.err(
                        Some(r.pool.span()),
                        format!("route {name:?} names unknown pool {:?}", r.pool.get_ref()),
                    );
                    0
                }
            };
            let path_prefix = match &r.path_prefix {
                Some(p) if !p.get_ref().starts_with('/') => {
                    l.err(Some(p.span()), "path_prefix must start with '/'");
                    "/".to_string()
                }
                Some(p) => p.get_ref().clone(),
                None => "/".to_string(),
            };
            routes.push(Route {
                name,
                host: r
                    .host
                    .clone()
                    .filter(|h| h != "*")
                    .map(|h| h.to_ascii_lowercase()),
                path_prefix,
                filters: chain,
                pool,
            });
        }
        if !l.out.is_empty() {
            return Err(PolicyErrors(l.out));
        }
        // Declared files are content of the policy: a changed rule file is a new policy.
        let mut hash = sha2::Sha256::new();
        hash.update(text.as_bytes());
        for file in filters.iter().flat_map(|f| f.files.iter()) {
            hash.update((file.name.len() as u64).to_le_bytes());
            hash.update(file.name.as_bytes());
            hash.update((file.data.len() as u64).to_le_bytes());
            hash.update(&file.data);
        }
        Ok(Policy {
            path: path.to_path_buf(),
            hash: hex::encode(hash.finalize()),
            listen,
            admin,
            threads,
            watch: raw.server.watch,
            access_log,
            admin_token,
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(1 << 20),
            filters,
            pools,
            routes,
        })
    }
}

impl Route {
    /// True when the route serves `host` (port stripped, lowercase) and `path`.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(h) if h.starts_with("*.") => host.ends_with(&h[1..]),
            Some(h) => h == host,
        };
        host_ok && path.starts_with(&self.path_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match Policy::parse(Path::new("p.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn reports_file_line_and_reason() {
        let e = errs("[pools.a]\npeers = [\"127.0.0.1:1\"]\n\n[[routes]]\npool = \"b\"\nfilters = [\"nope\"]\n");
        assert!(
            e.contains(&"p.toml:6: route \"route0\" names unknown filter \"nope\"".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"p.toml:5: route \"route0\" names unknown pool \"b\"".to_string()),
            "{e:?}"
        );
        let e = errs("[server]\nlisten = 5\n");
        assert!(e[0].starts_with("p.toml:2: "), "{e:?}");
        let e = errs("[bogus]\n");
        assert!(
            e[0].starts_with("p.toml:1: ") && e[0].contains("bogus"),
            "{e:?}"
        );
    }

    #[test]
    fn route_matching() {
        let r = Route {
            name: "r".into(),
            host: Some("*.example.com".into()),
            path_prefix: "/api".into(),
            filters: vec![],
            pool: 0,
        };
        assert!(r.matches("a.example.com", "/api/x"));
        assert!(!r.matches("example.org", "/api/x"));
        assert!(!r.matches("a.example.com", "/web"));
    }
}
