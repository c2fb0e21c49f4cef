//! Request input: the request line, headers and body parsed into the transaction's variables.

use super::*;
use crate::body;
use crate::transform::{form_decode, uri_decode};

/// Entries of the intern table ([`Transaction::intern`]; a power of two).
const INTERN: usize = 1024;
/// Longest value [`Transaction::intern`] keeps (at most `INTERN` of them).
const INTERN_MAX: usize = 256;

impl Transaction {
    /// A new input value (request, body or response: the shared lists of the next phase are
    /// collected again). TX values use [`Transaction::tx_kv`].
    pub(super) fn kv(&mut self, k: &[u8], v: &[u8]) -> Kv {
        self.input_gen = self.input_gen.wrapping_add(1);
        self.tx_kv(k, v)
    }

    /// A new TX value (captures, configured settings): not an input value.
    pub(super) fn tx_kv(&mut self, k: &[u8], v: &[u8]) -> Kv {
        self.next_id += 1;
        Kv {
            key: self.intern(k),
            val: self.intern(v),
            id: self.next_id * 2,
        }
    }

    /// `v` as a shared value: the one an earlier request (or this one) made when the intern
    /// table still holds it, else a new one that the table keeps. Header names and most
    /// header values, cookie names, the method, protocol and small numbers are the same from
    /// one request to the next: no allocation, copy and free for them. The table is
    /// direct-mapped on FxHash and an entry is trusted only for equal bytes, so colliding
    /// values only push each other out. One table per engine (`Engine::intern`), so the
    /// transactions a VM runs at once share it.
    #[inline]
    pub(super) fn intern(&mut self, v: &[u8]) -> Rc<[u8]> {
        if v.is_empty() {
            return self.empty.clone();
        }
        if v.len() > INTERN_MAX {
            return rc(v);
        }
        let mut h = crate::hash::Fx::default();
        std::hash::Hasher::write(&mut h, v);
        let at = (std::hash::Hasher::finish(&h) >> (64 - INTERN.trailing_zeros())) as usize;
        let mut table = self.eng.intern.borrow_mut();
        if table.is_empty() {
            *table = vec![None; INTERN];
        }
        if let Some(r) = &table[at] {
            if **r == *v {
                return r.clone();
            }
        }
        let r = rc(v);
        table[at] = Some(r.clone());
        r
    }

    pub(super) fn set_scalar(&mut self, i: u8, v: &[u8]) {
        // (`kv` with the shared empty key: no allocation for it)
        self.input_gen = self.input_gen.wrapping_add(1);
        self.next_id += 1;
        let kv = Kv {
            key: self.empty.clone(),
            val: self.intern(v),
            id: self.next_id * 2,
        };
        self.scalars[i as usize] = Some(kv);
    }

    /// Scalar value (tests, logs).
    pub fn scalar(&self, i: u8) -> Option<&[u8]> {
        self.scalars[i as usize].as_ref().map(|k| &*k.val)
    }

    /// TX variable (lowercase key).
    pub fn tx_get(&self, k: &str) -> Option<&[u8]> {
        self.tx.get(k.as_bytes()).map(|kv| &*kv.val)
    }

    /// The CRS inbound anomaly score (tx.anomaly_score, or tx.inbound_anomaly_score).
    pub fn anomaly_score(&self) -> i64 {
        let a = self.tx_get("anomaly_score").map(ops::atoi).unwrap_or(0);
        let b = self
            .tx_get("inbound_anomaly_score")
            .map(ops::atoi)
            .unwrap_or(0);
        a.max(b)
    }

    /// Sets a TX variable (config knobs such as paranoia level use it before phase 1).
    pub fn tx_set(&mut self, k: &str, v: &[u8]) {
        let kv = self.tx_kv(k.as_bytes(), v);
        self.tx.insert(rc(k.to_ascii_lowercase().as_bytes()), kv);
    }

    pub(super) fn add_arg(&mut self, post: bool, k: &[u8], v: &[u8]) {
        if self.args_get.len() + self.args_post.len() >= self.eng.settings.args_limit {
            return;
        }
        let kv = self.kv(k, v);
        if post {
            self.args_post.push(kv);
        } else {
            self.args_get.push(kv);
        }
    }

    /// Request line and headers (phase 1 input). `uri` is the raw path and query.
    pub fn set_request(
        &mut self,
        method: &str,
        uri: &str,
        protocol: &str,
        headers: &[(String, String)],
        remote_addr: &str,
        unique_id: &str,
    ) {
        let ub = uri.as_bytes();
        self.set_scalar(s::REQUEST_METHOD, method.as_bytes());
        self.set_scalar(s::REQUEST_PROTOCOL, protocol.as_bytes());
        let mut line = Vec::with_capacity(method.len() + uri.len() + protocol.len() + 2);
        for (i, part) in [method, uri, protocol].iter().enumerate() {
            if i > 0 {
                line.push(b' ');
            }
            line.extend_from_slice(part.as_bytes());
        }
        self.set_scalar(s::REQUEST_LINE, &line);
        self.set_scalar(s::REQUEST_URI_RAW, ub);
        self.set_scalar(s::REQUEST_URI, &uri_decode(ub));
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        // absolute-form (`http://host/path?q`): REQUEST_URI(_RAW) keep the whole target,
        // REQUEST_FILENAME is the path (ModSecurity 2's behaviour, which CRS's tests assume)
        let path = absolute_path(path).unwrap_or(path);
        let fname = uri_decode(path.as_bytes());
        let base = match fname.iter().rposition(|&b| b == b'/') {
            Some(p) => fname[p + 1..].to_vec(),
            None => fname.clone(),
        };
        self.set_scalar(s::REQUEST_FILENAME, &fname);
        self.set_scalar(s::REQUEST_BASENAME, &base);
        if let Some(q) = query {
            self.set_scalar(s::QUERY_STRING, q.as_bytes());
            let sep = self.eng.settings.arg_sep;
            for (k, v) in body::urlencoded(q.as_bytes(), sep) {
                self.add_arg(false, &k, &v);
            }
        } else {
            self.set_scalar(s::QUERY_STRING, b"");
        }
        let mut ctype = String::new();
        for (k, v) in headers {
            let kv = self.kv(k.as_bytes(), v.as_bytes());
            self.headers.push(kv);
            if k.eq_ignore_ascii_case("cookie") {
                for c in v.split(';') {
                    let c = c.trim();
                    if c.is_empty() {
                        continue;
                    }
                    let (ck, cv) = c.split_once('=').unwrap_or((c, ""));
                    let kv = self.kv(ck.as_bytes(), cv.as_bytes());
                    self.cookies.push(kv);
                }
            }
            if k.eq_ignore_ascii_case("content-type") {
                ctype = v.to_ascii_lowercase();
            }
        }
        if ctype.starts_with("application/x-www-form-urlencoded") {
            self.body_proc = Some(BodyProc::UrlEncoded);
        } else if ctype.starts_with("multipart/form-data") {
            self.body_proc = Some(BodyProc::Multipart);
        }
        if let Some(p) = self.body_proc {
            self.set_scalar(s::REQBODY_PROCESSOR, p.name().as_bytes());
        }
        let (addr, port) = split_addr(remote_addr);
        self.set_scalar(s::REMOTE_ADDR, addr.as_bytes());
        self.set_scalar(s::REMOTE_PORT, port.as_bytes());
        self.set_scalar(s::UNIQUE_ID, unique_id.as_bytes());
        self.set_scalar(s::DURATION, b"0");
        self.set_scalar(s::REQBODY_ERROR, b"0");
        self.set_scalar(s::REQBODY_PROCESSOR_ERROR, b"0");
        self.update_combined_size();
    }

    pub(super) fn update_combined_size(&mut self) {
        let n: usize = self
            .args_get
            .iter()
            .chain(self.args_post.iter())
            .map(|kv| kv.key.len() + kv.val.len())
            .sum();
        self.set_scalar(s::ARGS_COMBINED_SIZE, n.to_string().as_bytes());
    }

    /// Does phase 2 want the request body?
    pub fn wants_body(&self) -> bool {
        self.body_access && self.mode != Mode::Off && self.intervention.is_none() && !self.allowed
    }

    /// Body size limit for this request and what to do beyond it.
    pub fn body_limit(&self) -> (usize, LimitAction) {
        let st = &self.eng.settings;
        let lim = if self.body_proc == Some(BodyProc::Multipart) {
            st.body_limit
        } else {
            st.body_nofiles_limit.min(st.body_limit)
        };
        (lim, st.body_limit_action)
    }

    /// Feeds the (complete or truncated) request body; run before phase 2.
    pub fn process_body(&mut self, data: &[u8], content_type: Option<&str>) {
        if !self.wants_body() {
            return;
        }
        self.set_scalar(s::REQUEST_BODY_LENGTH, data.len().to_string().as_bytes());
        self.set_scalar(s::FULL_REQUEST_LENGTH, data.len().to_string().as_bytes());
        if let Some(p) = self.body_proc {
            self.set_scalar(s::REQBODY_PROCESSOR, p.name().as_bytes());
        }
        // libmodsecurity 3 keeps any buffered body in REQUEST_BODY, whichever processor parses
        // it; but a body the XML processor parses is left out unless forced
        // (`ctl:forceRequestBodyVariable=On`), as ModSecurity 2 does and CRS's tests expect:
        // rules that list XML:/* next to REQUEST_BODY judge text and attribute values, not
        // element names (libmodsecurity 3's REQUEST_BODY is a known deviation there).
        let xml = self.body_proc == Some(BodyProc::Xml);
        if self.force_body_var || (!data.is_empty() && !xml) {
            self.set_scalar(s::REQUEST_BODY, data);
        }
        let mut error: Option<String> = None;
        match self.body_proc {
            None => {}
            // no body, nothing to parse (not a JSON syntax error)
            Some(BodyProc::Json) if data.is_empty() => {}
            Some(BodyProc::UrlEncoded) => {
                let sep = self.eng.settings.arg_sep;
                for (k, v) in body::urlencoded(data, sep) {
                    self.add_arg(true, &k, &v);
                }
            }
            Some(BodyProc::Json) => match body::json(data, self.eng.settings.json_depth) {
                Ok(args) => {
                    for (k, v) in args {
                        self.add_arg(true, &k, &v);
                    }
                }
                Err(e) => error = Some(format!("JSON parsing error: {e}")),
            },
            Some(BodyProc::Xml) => match body::xml(data) {
                Ok((text, attrs)) => {
                    let kv = self.kv(b"", &text);
                    self.xml_text.push(kv);
                    for a in attrs {
                        let kv = self.kv(b"", &a);
                        self.xml_attrs.push(kv);
                    }
                }
                Err(e) => error = Some(format!("XML parsing error: {e}")),
            },
            Some(BodyProc::Multipart) => {
                let m = body::multipart(content_type.unwrap_or(""), data);
                for (k, v) in &m.args {
                    self.add_arg(true, k, v);
                }
                let mut total = 0usize;
                for f in &m.files {
                    let kv = self.kv(&f.name, &f.filename);
                    self.files.push(kv);
                    let kv = self.kv(&f.name, f.size.to_string().as_bytes());
                    self.files_sizes.push(kv);
                    total += f.size;
                }
                for (n, h) in &m.part_headers {
                    let kv = self.kv(n, h);
                    self.part_headers.push(kv);
                }
                self.set_scalar(s::FILES_COMBINED_SIZE, total.to_string().as_bytes());
                let mut strict = false;
                for i in s::MULTIPART_BOUNDARY_QUOTED..=43 {
                    let on = m.flags.contains(&i);
                    strict |= on;
                    self.set_scalar(i, if on { b"1" } else { b"0" });
                }
                self.set_scalar(
                    s::MULTIPART_UNMATCHED_BOUNDARY,
                    if m.unmatched_boundary { b"1" } else { b"0" },
                );
                if let Some(e) = &m.error {
                    error = Some(format!("Multipart parsing error: {e}"));
                    strict = true;
                }
                self.set_scalar(s::MULTIPART_STRICT_ERROR, if strict { b"1" } else { b"0" });
            }
        }
        if let Some(e) = error {
            self.set_scalar(s::REQBODY_ERROR, b"1");
            self.set_scalar(s::REQBODY_PROCESSOR_ERROR, b"1");
            self.set_scalar(s::REQBODY_ERROR_MSG, e.as_bytes());
            self.set_scalar(s::REQBODY_PROCESSOR_ERROR_MSG, e.as_bytes());
        }
        self.update_combined_size();
    }

    /// Values of a collection (tests).
    pub fn args(&self) -> Vec<(String, String)> {
        self.args_get
            .iter()
            .chain(self.args_post.iter())
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.val).into_owned(),
                )
            })
            .collect()
    }

    /// FILES (field name, file name) (tests).
    pub fn files(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.val).into_owned(),
                )
            })
            .collect()
    }
}

pub(super) fn split_addr(a: &str) -> (&str, &str) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((ip, port)) = rest.split_once("]:") {
            return (ip, port);
        }
        return (rest.trim_end_matches(']'), "");
    }
    match a.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') => (ip, port),
        _ => (a, ""),
    }
}

#[allow(dead_code)]
pub(super) fn decode_form(b: &[u8]) -> Vec<u8> {
    form_decode(b)
}

/// The path of an absolute-form target without its query (`http://h:80/a/b` -> `/a/b`,
/// `http://h` -> `/`); `None` for any other form.
fn absolute_path(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    Some(rest.find('/').map_or("/", |p| &rest[p..]))
}
