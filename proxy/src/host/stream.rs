//! Per-request data the host exposes to filters: header maps, the body buffer of the
//! phase that runs now, request facts for properties, and what filters asked for
//! (a local response, filter state). Plain data: it knows neither Pingora nor wasm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

/// An ordered header map with lowercase names, as Proxy-Wasm sees it (pseudo-headers
/// such as `:path` included).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    /// Builds a map from pairs; names are lowercased.
    pub fn from_pairs<I: IntoIterator<Item = (String, Vec<u8>)>>(pairs: I) -> Self {
        let entries = pairs
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        HeaderMap { entries }
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of names and values.
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// All values of `name` joined with ", " (how Envoy answers a multi-valued get).
    pub fn get_joined(&self, name: &str) -> Option<Vec<u8>> {
        let mut vals = self
            .entries
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let first = vals.next()?.1.clone();
        Some(vals.fold(first, |mut acc, (_, v)| {
            acc.extend_from_slice(b", ");
            acc.extend_from_slice(v);
            acc
        }))
    }

    /// Replaces every value of `name` with one value (adds it when absent).
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        let name = name.to_ascii_lowercase();
        match self.entries.iter().position(|(k, _)| *k == name) {
            Some(i) => {
                self.entries[i].1 = value;
                let mut j = 0;
                self.entries.retain(|(k, _)| {
                    j += 1;
                    j - 1 <= i || *k != name
                });
            }
            None => self.entries.push((name, value)),
        }
    }

    /// Appends a value for `name`.
    pub fn add(&mut self, name: &str, value: Vec<u8>) {
        self.entries.push((name.to_ascii_lowercase(), value));
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

/// A response a filter asked the host to send instead of (or in place of) the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u16,
    /// Reason / details the filter gave (logged, not sent).
    pub details: String,
    /// Response body.
    pub body: Vec<u8>,
    /// Extra response headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Facts about the request fixed when it starts, served as properties.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Unique id of the request (also sent as `x-request-id` when absent).
    pub id: String,
    /// Client address.
    pub source: Option<SocketAddr>,
    /// Local address the client connected to.
    pub destination: Option<SocketAddr>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// Time the request started.
    pub start: SystemTime,
    /// Name of the route the request matched.
    pub route: String,
    /// Name of the upstream pool of that route.
    pub pool: String,
    /// Generation of the policy snapshot serving the request.
    pub generation: u64,
    /// The upstream peer once chosen.
    pub upstream: Option<SocketAddr>,
    /// Response status once known.
    pub response_code: Option<u16>,
}

impl Default for RequestInfo {
    fn default() -> Self {
        RequestInfo {
            id: String::new(),
            source: None,
            destination: None,
            protocol: "HTTP/1.1",
            start: SystemTime::UNIX_EPOCH,
            route: String::new(),
            pool: String::new(),
            generation: 0,
            upstream: None,
            response_code: None,
        }
    }
}

/// Which body the buffer of the running phase holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `HTTP_REQUEST_BODY`.
    Request,
    /// `HTTP_RESPONSE_BODY`.
    Response,
}

/// Everything the host knows about one HTTP stream, shared by the filters of its chain.
#[derive(Debug, Default)]
pub struct StreamState {
    /// Request headers, with `:method`, `:path`, `:authority`, `:scheme`.
    pub request_headers: HeaderMap,
    /// Request trailers.
    pub request_trailers: HeaderMap,
    /// Response headers, with `:status`.
    pub response_headers: HeaderMap,
    /// Response trailers.
    pub response_trailers: HeaderMap,
    /// Set when a filter changed the request headers.
    pub request_headers_changed: bool,
    /// Set when a filter changed the response headers.
    pub response_headers_changed: bool,
    /// The body buffer of the running body phase (what the current filter sees).
    pub body: Vec<u8>,
    /// Which body `body` is, while a body phase runs.
    pub body_kind: Option<BodyKind>,
    /// Request facts for properties.
    pub info: RequestInfo,
    /// Values set with `proxy_set_property`, readable by later filters and phases.
    pub filter_state: HashMap<String, Vec<u8>>,
    /// A local response asked for by a filter.
    pub local_response: Option<LocalResponse>,
    /// Set when a filter called `proxy_close_stream`: the host resets the stream.
    pub closed: bool,
    /// Set when a filter called `proxy_continue_stream`.
    pub resumed: bool,
    /// HTTP calls this stream dispatched so far.
    pub calls: u32,
    /// Cap on what filters may make the host hold for this stream (headers, bodies).
    pub max_buffer_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_all_values_in_place() {
        let mut h = HeaderMap::default();
        h.add("A", b"1".to_vec());
        h.add("b", b"2".to_vec());
        h.add("a", b"3".to_vec());
        h.set("a", b"x".to_vec());
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("a", &b"x"[..]), ("b", &b"2"[..])]
        );
        assert_eq!(h.get_joined("B").unwrap(), b"2");
        h.add("b", b"4".to_vec());
        assert_eq!(h.get_joined("b").unwrap(), b"2, 4");
        h.remove("B");
        assert_eq!(h.len(), 1);
    }
}
