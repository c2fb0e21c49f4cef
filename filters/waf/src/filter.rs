//! The Proxy-Wasm glue: configuration, host files and matchers, request phases, decisions,
//! audit log lines and metrics.

use crate::config::{audit_json, build, report_ids, Config, Waf};
use crate::load::{FileSource, LimitAction};
use crate::ops::{Caps, HostError, HostMatch};
use crate::persist::{self, CollectionStore, FieldOp, Loaded, LocalStore};
use crate::tx::Transaction;
use kit::log;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(WafRoot::default()) });
}}

/// Files offered by the host (`sluice.file.list` / `sluice.file.read`).
struct HostFiles {
    list: Vec<String>,
}

impl HostFiles {
    fn probe() -> Option<HostFiles> {
        match hostcalls::call_foreign_function("sluice.file.list", Some(&[])) {
            Ok(b) => {
                let text = String::from_utf8_lossy(&b.unwrap_or_default()).into_owned();
                Some(HostFiles {
                    list: text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                })
            }
            Err(_) => None,
        }
    }
}

impl FileSource for HostFiles {
    fn list(&self) -> Vec<String> {
        self.list.clone()
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        match hostcalls::call_foreign_function("sluice.file.read", Some(path.as_bytes())) {
            Ok(b) => Ok(b.unwrap_or_default()),
            Err(Status::NotFound) => Err("sluice.file.read: NOT_FOUND".into()),
            Err(s) => Err(format!("sluice.file.read refused ({s:?})")),
        }
    }
}

/// Host matchers (`sluice.regex.*`, `sluice.pm.*`; see /work/notes/waf-contract.md §3).
struct HostMatcher;

fn le32(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4)
        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

fn list_args<T: AsRef<[u8]>>(items: &[T]) -> Vec<u8> {
    let mut v = (items.len() as u32).to_le_bytes().to_vec();
    for i in items {
        let i = i.as_ref();
        v.extend_from_slice(&(i.len() as u32).to_le_bytes());
        v.extend_from_slice(i);
    }
    v
}

impl HostMatcher {
    fn compile(func: &str, args: &[u8]) -> Option<u32> {
        let b = hostcalls::call_foreign_function(func, Some(args)).ok()??;
        le32(&b, 0)
    }

    fn call(func: &str, pre: &[u32], input: &[u8]) -> Result<Vec<u8>, HostError> {
        let mut args = Vec::with_capacity(4 * pre.len() + input.len());
        for p in pre {
            args.extend_from_slice(&p.to_le_bytes());
        }
        args.extend_from_slice(input);
        Ok(hostcalls::call_foreign_function(func, Some(&args))
            .map_err(|_| HostError)?
            .unwrap_or_default())
    }
}

impl HostMatch for HostMatcher {
    fn compile_rx(&self, pattern: &str) -> Option<u32> {
        Self::compile("sluice.regex.compile", &list_args(&[pattern.as_bytes()]))
    }

    fn compile_pm(&self, words: &[Vec<u8>]) -> Option<u32> {
        Self::compile("sluice.pm.compile", &list_args(words))
    }

    fn run_rx(&self, handle: u32, captures: bool, input: &[u8]) -> Result<Option<Caps>, HostError> {
        if !captures {
            let out = Self::call("sluice.regex.match", &[handle], input)?;
            return Ok((le32(&out, 0).ok_or(HostError)? > 0).then(Vec::new));
        }
        let out = Self::call("sluice.regex.captures", &[handle, 0], input)?;
        let n = le32(&out, 0).ok_or(HostError)? as usize;
        if n == 0 {
            return Ok(None);
        }
        let mut caps = Vec::with_capacity(n.min(10));
        for g in 0..n.min(10) {
            let (s, e) = (
                le32(&out, 4 + 8 * g).ok_or(HostError)?,
                le32(&out, 8 + 8 * g).ok_or(HostError)?,
            );
            if s == u32::MAX {
                caps.push(None);
            } else {
                caps.push(Some(
                    input.get(s as usize..e as usize).ok_or(HostError)?.to_vec(),
                ));
            }
        }
        Ok(Some(caps))
    }

    fn run_pm(&self, handle: u32, input: &[u8]) -> Result<Option<Caps>, HostError> {
        let out = Self::call("sluice.pm.match", &[handle], input)?;
        if le32(&out, 0).ok_or(HostError)? == 0 {
            return Ok(None);
        }
        let (s, e) = (
            le32(&out, 8).ok_or(HostError)?,
            le32(&out, 12).ok_or(HostError)?,
        );
        Ok(Some(vec![Some(
            input.get(s as usize..e as usize).ok_or(HostError)?.to_vec(),
        )]))
    }
}

/// Metric ids, defined lazily (names per /work/notes/waf-contract.md).
#[derive(Default)]
struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
    /// `waf_requests_total`'s id, counted on every request.
    requests: std::cell::Cell<Option<u32>>,
}

impl Metrics {
    /// Counts one inspected request (`waf_requests_total`), its id looked up once.
    fn inc_requests(&self) {
        let id = match self.requests.get() {
            Some(id) => id,
            None => match hostcalls::define_metric(MetricType::Counter, "waf_requests_total") {
                Ok(id) => {
                    self.requests.set(Some(id));
                    id
                }
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    }

    fn inc(&self, name: &str) {
        let mut ids = self.ids.borrow_mut();
        let id = match ids.get(name) {
            Some(id) => *id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => {
                    ids.insert(name.to_string(), id);
                    id
                }
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// The host's persistent collections (`sluice.collection.*`): process-wide, and shared
/// by the fleet when the policy has a `[fleet]` store.
struct HostCollections;

impl HostCollections {
    /// `Some` when the host offers them.
    fn probe() -> Option<HostCollections> {
        hostcalls::call_foreign_function("sluice.collection.read", Some(b"IP=probe"))
            .ok()
            .map(|_| HostCollections)
    }
}

/// Does the host keep Info lines (`proxy_get_log_level` at Info or more verbose)? The audit
/// line of a flagged or blocked request (a JSON document) is not built for a host that
/// drops it (`SLUICE_LOG=warn`, as bench/waf.sh runs Sluice).
fn info_enabled() -> bool {
    hostcalls::get_log_level().map_or(true, |l| l as u32 <= LogLevel::Info as u32)
}

fn now_s() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

impl CollectionStore for HostCollections {
    fn read(&self, key: &[u8]) -> Loaded {
        hostcalls::call_foreign_function("sluice.collection.read", Some(key))
            .ok()
            .flatten()
            .and_then(|b| persist::decode_record(&b))
            .unwrap_or_default()
    }
    fn apply(&self, key: &[u8], timeout_s: u32, ops: &[FieldOp]) {
        let args = persist::encode_apply(key, timeout_s, ops);
        if let Err(e) = hostcalls::call_foreign_function("sluice.collection.apply", Some(&args)) {
            log(
                LogLevel::Warn,
                &format!("waf: sluice.collection.apply refused ({e:?})"),
            );
        }
    }
    fn now_s(&self) -> u64 {
        now_s()
    }
}

/// Starts loading a record from the fleet store (`sluice.fleet.load`): the token its
/// completion (`proxy_on_foreign_function`) carries.
fn start_load(key: &[u8]) -> Option<u32> {
    match hostcalls::call_foreign_function("sluice.fleet.load", Some(key)) {
        Ok(Some(t)) if t.len() == 4 => Some(u32::from_le_bytes([t[0], t[1], t[2], t[3]])),
        _ => None,
    }
}

#[derive(Default)]
struct WafRoot {
    waf: Option<Rc<Waf>>,
    metrics: Rc<Metrics>,
    /// Where `initcol` records live (set at configure).
    store: Option<Rc<dyn CollectionStore>>,
}

impl Context for WafRoot {}

impl RootContext for WafRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let cfg = match Config::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Error, &format!("waf: {e}"));
                return false;
            }
        };
        let files = HostFiles::probe();
        if files.is_none() && !cfg.rules.is_empty() {
            log(
                LogLevel::Error,
                "waf: config names rule files but the host has no sluice.file.list; use \"inline\"",
            );
            return false;
        }
        let host: Option<Rc<dyn HostMatch>> = match cfg.matchers.as_deref().unwrap_or("wasm") {
            "wasm" => None,
            m @ ("auto" | "host") => {
                let probe = HostMatcher.compile_rx("(?sm-u)^a$");
                match probe {
                    Some(_) => Some(Rc::new(HostMatcher)),
                    None if m == "host" => {
                        log(
                            LogLevel::Error,
                            "waf: matchers = \"host\" but the host has no sluice.regex.compile",
                        );
                        return false;
                    }
                    None => None,
                }
            }
            other => {
                log(
                    LogLevel::Error,
                    &format!("waf: matchers: expected auto, wasm or host, got {other:?}"),
                );
                return false;
            }
        };
        let with_host = host.is_some();
        match build(&cfg, files.as_ref().map(|f| f as &dyn FileSource), host) {
            Ok(w) => {
                // Key the memo's hash with what an attacker cannot know: this VM's start time
                // and where its heap put an allocation.
                let nanos = self
                    .get_current_time()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                let probe = Box::new(0u8);
                let addr = &*probe as *const u8 as u64;
                w.engine.memo.borrow_mut().seed(
                    nanos,
                    nanos.rotate_left(29) ^ addr.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let st = &w.engine.stats;
                log(
                    LogLevel::Info,
                    &format!(
                        "waf: loaded {} rules (+{} chained) from {} files; @rx: {} regex, {} fancy-regex; matchers: {} ({} on host)",
                        st.rules,
                        st.chained,
                        st.files.len(),
                        st.rx_bytes,
                        st.rx_fancy,
                        if with_host { "host" } else { "wasm" },
                        st.host_matchers
                    ),
                );
                for warning in &st.warnings {
                    log(LogLevel::Warn, &format!("waf: {warning}"));
                }
                self.waf = Some(Rc::new(w));
                self.store = Some(match HostCollections::probe() {
                    Some(h) => Rc::new(h),
                    None => Rc::new(LocalStore::new(Box::new(now_s))),
                });
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("waf: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WafHttp {
            waf: self.waf.clone(),
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            loading: None,
            loaded: Vec::new(),
            headers_eos: false,
            body_seen: None,
            tx: None,
            ctype: None,
            request_id: String::new(),
            done: false,
            buffering: false,
            report: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct WafHttp {
    waf: Option<Rc<Waf>>,
    metrics: Rc<Metrics>,
    store: Option<Rc<dyn CollectionStore>>,
    /// A record being loaded from the fleet store (its token): phase 1 runs again when it
    /// comes, with the records in `loaded` read as they are.
    loading: Option<u32>,
    loaded: Vec<Vec<u8>>,
    /// The request headers ended the stream.
    headers_eos: bool,
    /// The body that arrived while a record was loading (size, end of stream).
    body_seen: Option<(usize, bool)>,
    /// The request's transaction: until the request decision, then (when phases 3 and 4
    /// have rules) until the response decision.
    tx: Option<Transaction>,
    ctype: Option<String>,
    request_id: String,
    /// The request side is decided (phase 2 ran, or nothing is inspected).
    done: bool,
    /// The response body is being buffered for phase 4 (the response head is held).
    buffering: bool,
    /// `report_header` value for the response.
    report: Option<String>,
}

impl Context for WafHttp {
    fn on_foreign_function(&mut self, token: u32, _size: usize) {
        if self.loading != Some(token) {
            return;
        }
        // Loaded (or failed: the local copy is used): the request's phase 1 again.
        self.loading = None;
        let mut a = self.request_headers(self.headers_eos);
        if a == Action::Pause && !self.done && self.loading.is_none() {
            if let Some((size, eos)) = self.body_seen.take() {
                a = self.on_http_request_body(size, eos);
            }
        }
        if a == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl WafHttp {
    /// A property as text; bytes that are not UTF-8 become U+FFFD (as
    /// `String::from_utf8_lossy`), valid text is taken without a copy.
    fn prop(&self, path: Vec<&str>) -> Option<String> {
        self.get_property(path).map(|b| {
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    }

    /// Runs phase 2 (after the body, if any), reports, and answers.
    fn finish(&mut self) -> Action {
        self.done = true;
        let Some(mut tx) = self.tx.take() else {
            return Action::Continue;
        };
        tx.run_phase(2);
        self.decide(tx)
    }

    /// The request decision: a block answers now; otherwise, when response rules will run,
    /// the transaction waits for the response (phase 5 and the audit line come after them).
    fn decide(&mut self, tx: Transaction) -> Action {
        self.done = true;
        if tx.intervention.is_none() && tx.wants_response() {
            self.tx = Some(tx);
            return Action::Continue;
        }
        self.close(tx)
    }

    /// Phase 5, metrics, the audit line, and the local reply of a block (request or
    /// response phase: its status replaces the origin's response).
    fn close(&mut self, mut tx: Transaction) -> Action {
        tx.run_phase(5);
        tx.commit();
        self.done = true;
        self.buffering = false;
        let m = &self.metrics;
        m.inc_requests();
        if !tx.logs.is_empty() || tx.intervention.is_some() || tx.would_block.is_some() {
            let eng = tx.engine().clone();
            for l in &tx.logs {
                if l.id != 0 {
                    m.inc(&format!("waf_rule_matches_total_rule_{}", l.id));
                }
                m.inc(&format!(
                    "waf_category_matches_total_category_{}",
                    eng.rules[l.rule].category
                ));
            }
            if tx.intervention.is_some() {
                m.inc("waf_blocked_total");
            } else {
                m.inc("waf_flagged_total");
            }
            // the audit line is built only when the host keeps Info lines
            if info_enabled() {
                log(
                    LogLevel::Info,
                    &format!("waf: {}", audit_json(&tx, &self.request_id)),
                );
            }
        }
        let header = self.waf.as_ref().and_then(|w| w.report_header.clone());
        if header.is_some() {
            self.report = report_ids(&tx);
        }
        if let Some(iv) = tx.intervention {
            let body = format!(
                "Request blocked by the Sluice WAF.\nRequest id: {}\n",
                self.request_id
            );
            // the local reply carries the report; do not add it again in on_http_response_headers
            let report = self.report.take();
            let mut headers = vec![
                ("content-type", "text/plain; charset=utf-8"),
                ("x-request-id", self.request_id.as_str()),
            ];
            if let (Some(h), Some(r)) = (header.as_deref(), report.as_deref()) {
                headers.push((h, r));
            }
            self.send_http_response(u32::from(iv.status), headers, Some(body.as_bytes()));
            return Action::Pause;
        }
        Action::Continue
    }

    /// Adds the `report_header` to the response, once.
    fn add_report(&mut self) {
        if let (Some(r), Some(h)) = (
            self.report.take(),
            self.waf.as_ref().and_then(|w| w.report_header.clone()),
        ) {
            self.add_http_response_header(&h, &r);
        }
    }

    /// Phase 4 over the buffered body (whole, or its first bytes when `truncated`), then
    /// the response decision.
    fn inspect_body(&mut self, data: &[u8], truncated: bool) -> Action {
        let Some(mut tx) = self.tx.take() else {
            return Action::Continue;
        };
        tx.process_response_body(data, truncated);
        tx.run_phase(4);
        self.close(tx)
    }

    /// `SecResponseBodyLimitAction Reject` (engine On): answers 500, as ModSecurity does.
    fn reject_body(&mut self, limit: usize) -> Action {
        self.buffering = false;
        self.refuse_oversize(
            500,
            Some(4),
            "response",
            limit,
            b"Response body too large for inspection.\n",
        );
        Action::Pause
    }

    /// A body over its limit with `Sec*BodyLimitAction Reject`: the transaction ends with a
    /// block (its audit line, the counters) and `status` answers.
    fn refuse_oversize(
        &mut self,
        status: u32,
        phase: Option<u8>,
        what: &str,
        limit: usize,
        body: &[u8],
    ) {
        self.tx = None;
        self.metrics.inc_requests();
        self.metrics.inc("waf_blocked_total");
        let phase = phase.map(|p| format!(",\"phase\":{p}")).unwrap_or_default();
        log(
            LogLevel::Info,
            &format!(
                "waf: {{\"request_id\":{},\"action\":\"block\",\"status\":{status}{phase},\"reason\":\"{what} body larger than {limit} bytes\"}}",
                serde_json::Value::String(self.request_id.clone())
            ),
        );
        self.send_http_response(
            status,
            vec![("x-request-id", self.request_id.as_str())],
            Some(body),
        );
    }
}

impl HttpContext for WafHttp {
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !self.done {
            return Action::Continue;
        }
        let Some(mut tx) = self.tx.take() else {
            self.add_report();
            return Action::Continue;
        };
        let mut status = 0u16;
        let mut headers = Vec::new();
        for (k, v) in self.get_http_response_headers() {
            if k == ":status" {
                status = v.trim().parse().unwrap_or(0);
            } else if !k.starts_with(':') {
                headers.push((k, v));
            }
        }
        let protocol = self
            .prop(vec!["request", "protocol"])
            .unwrap_or_else(|| "HTTP/1.1".into());
        tx.set_response(status, &protocol, &headers);
        tx.run_phase(3);
        let head = tx.scalar(crate::model::s::REQUEST_METHOD) == Some(&b"HEAD"[..]);
        if tx.intervention.is_none() && !end_of_stream && !head && tx.wants_response_body() {
            // Phase 4 reads the body: hold the head until it is decided (the host sends
            // nothing of the response while a response-headers callback pauses with a
            // body to follow, as Envoy's StopIteration).
            // The head is final now: the report carries the ids logged so far.
            if self.waf.as_ref().is_some_and(|w| w.report_header.is_some()) {
                self.report = report_ids(&tx);
                self.add_report();
            }
            self.tx = Some(tx);
            self.buffering = true;
            return Action::Pause;
        }
        // Not inspected: phase 4 runs now on the headers alone (its status and score
        // rules), the body streams through untouched.
        tx.run_phase(4);
        let a = self.close(tx);
        if a == Action::Continue {
            self.add_report();
        }
        a
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.buffering {
            return Action::Continue;
        }
        let Some(tx) = self.tx.as_ref() else {
            self.buffering = false;
            return Action::Continue;
        };
        let (limit, action) = tx.response_body_limit();
        if body_size > limit {
            if action == LimitAction::Reject && tx.mode == crate::model::Mode::On {
                return self.reject_body(limit);
            }
            // ProcessPartial: the first `limit` bytes are inspected, the rest streams.
            let data = self.get_http_response_body(0, limit).unwrap_or_default();
            return self.inspect_body(&data, true);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let data = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        self.inspect_body(&data, false)
    }

    fn on_log(&mut self) {
        // The response never came (upstream failure) or ended while being buffered:
        // the transaction still gets its phase 5 and audit line.
        // (No block can be pending here: a decision closes the transaction at once.)
        if self.done {
            if let Some(tx) = self.tx.take() {
                self.close(tx);
            }
        }
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.headers_eos = end_of_stream;
        self.request_headers(end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.loading.is_some() {
            // phase 1 waits for a record: the body waits with it
            self.body_seen = Some((body_size, end_of_stream));
            return Action::Pause;
        }
        self.request_body(body_size, end_of_stream)
    }
}

impl WafHttp {
    /// Phase 1 on the request head (again after a record was loaded).
    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(waf) = self.waf.clone() else {
            return Action::Continue;
        };
        if end_of_stream && waf.idle() {
            // No rule runs on requests and no body follows: nothing to read or evaluate,
            // the request is only counted (as `decide` would).
            self.done = true;
            self.metrics.inc_requests();
            return Action::Continue;
        }
        let head = crate::request::RequestHead::from_head_or_host(
            || self.get_http_request_headers(),
            self.prop(vec!["sluice", "request_target"]),
            self.prop(vec!["sluice", "request_head"]),
        );
        self.ctype = head.content_type.clone();
        let protocol = self
            .prop(vec!["request", "protocol"])
            .unwrap_or_else(|| "HTTP/1.1".into());
        let remote = self.prop(vec!["source", "address"]).unwrap_or_default();
        self.request_id = self
            .prop(vec!["request", "id"])
            .or_else(|| self.get_http_request_header("x-request-id"))
            .unwrap_or_default();
        let mut tx = waf.transaction();
        if let Some(store) = &self.store {
            tx.set_store(store.clone(), true);
            tx.set_loaded(self.loaded.clone());
        }
        tx.set_request(
            &head.method,
            &head.target,
            &protocol,
            &head.headers,
            &remote,
            &self.request_id,
        );
        tx.run_phase(1);
        if let Some(key) = tx.load.take() {
            // A record the fleet may know better: load it, then run phase 1 again (the
            // request waits at most the store's timeout; a failed load reads the local copy).
            drop(tx);
            match start_load(&key) {
                Some(token) => {
                    self.loaded.push(key);
                    self.loading = Some(token);
                    return Action::Pause;
                }
                None => {
                    self.loaded.push(key);
                    return self.request_headers(end_of_stream);
                }
            }
        }
        if tx.intervention.is_some() {
            return self.decide(tx);
        }
        let wants = tx.wants_body();
        self.tx = Some(tx);
        if end_of_stream || !wants {
            // No body callback will come (GET), or the body is not inspected: phase 2 now.
            return self.finish();
        }
        // Hold the headers until the body is inspected.
        Action::Pause
    }

    /// The request body: phase 2 once it is whole (or at its inspection limit).
    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.done {
            return Action::Continue;
        }
        let Some(tx) = self.tx.as_mut() else {
            return Action::Continue;
        };
        let (limit, action) = tx.body_limit();
        if body_size > limit {
            match action {
                LimitAction::Reject if tx.mode == crate::model::Mode::On => {
                    self.done = true;
                    self.refuse_oversize(413, None, "request", limit, b"Request body too large.\n");
                    return Action::Pause;
                }
                _ => {
                    let data = self.get_http_request_body(0, limit).unwrap_or_default();
                    let ct = self.ctype.clone();
                    if let Some(tx) = self.tx.as_mut() {
                        tx.process_body(&data, ct.as_deref());
                    }
                    return self.finish();
                }
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let data = self.get_http_request_body(0, body_size).unwrap_or_default();
        let ct = self.ctype.clone();
        if let Some(tx) = self.tx.as_mut() {
            tx.process_body(&data, ct.as_deref());
        }
        self.finish()
    }
}
