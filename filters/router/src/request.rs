//! The request as the rule engine sees it: plain data, filled by the
//! Proxy-Wasm glue from the request headers (or by a unit test), plus the
//! parsers for what rules look into (host, path, cookies, query).

use std::cell::OnceCell;

/// One request's routing inputs.
#[derive(Debug, Default)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:authority` (or `host`), as sent: port and case are normalized here.
    pub authority: String,
    /// `:path`, with its query string.
    pub path: String,
    /// Regular headers (lowercase names, pseudo-headers excluded), in order.
    pub headers: Vec<(String, String)>,
    /// The `source.address` property (`ip:port` or `[v6]:port`), if known.
    pub source: Option<String>,
    /// Random bits for choices without a key (a split with no sticky key).
    pub entropy: u64,
    cookies: OnceCell<Vec<(String, String)>>,
    query: OnceCell<Vec<(String, String)>>,
    host: OnceCell<String>,
}

impl Request {
    /// A request with the given pseudo-headers and headers.
    pub fn new(method: &str, authority: &str, path: &str, headers: Vec<(String, String)>) -> Self {
        Request {
            method: method.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
            headers,
            ..Request::default()
        }
    }

    /// The host name: lowercase, without port or IPv6 brackets.
    pub fn host(&self) -> &str {
        self.host.get_or_init(|| normalize_host(&self.authority))
    }

    /// The path without its query string.
    pub fn url_path(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p)
    }

    /// The raw query string (after `?`), if any.
    pub fn raw_query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// Every value of header `name` (lowercase), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of cookie `name` (the first one if repeated).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        let all = self.cookies.get_or_init(|| {
            self.header_values("cookie")
                .flat_map(parse_cookie_header)
                .collect()
        });
        all.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value of query argument `name`, percent-decoded (the first one if repeated).
    pub fn query_arg(&self, name: &str) -> Option<&str> {
        let all = self
            .query
            .get_or_init(|| self.raw_query().map(parse_query).unwrap_or_default());
        all.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The client IP of `source.address` (port and brackets removed).
    pub fn source_ip(&self) -> Option<&str> {
        let s = self.source.as_deref()?;
        let ip = if let Some(v6) = s.strip_prefix('[') {
            v6.split(']').next().unwrap_or(v6)
        } else {
            match s.rsplit_once(':') {
                // `ip:port`; a bare IPv6 address has more than one colon.
                Some((ip, port))
                    if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    ip
                }
                _ => s,
            }
        };
        (!ip.is_empty()).then_some(ip)
    }
}

/// `Example.COM:8080` -> `example.com`, `[::1]:8080` -> `::1`.
pub fn normalize_host(raw: &str) -> String {
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        match raw.rsplit_once(':') {
            // `name:port`; an unbracketed IPv6 address has more than one colon.
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `a=1; b=2` -> `[(a, 1), (b, 2)]`. Pairs without `=` are skipped; a value in
/// double quotes loses its quotes (RFC 6265 `cookie-value`).
fn parse_cookie_header(h: &str) -> Vec<(String, String)> {
    h.split(';')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// `a=1&b=x%20y&c` -> `[(a, 1), (b, "x y"), (c, "")]`; `+` is a space.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Form-style percent-decoding; invalid escapes stay as they are, invalid
/// UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
