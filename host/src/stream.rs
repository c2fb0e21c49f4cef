//! Per-request data the host exposes to filters: header maps, the body buffer of the
//! phase that runs now, request facts for properties, and what filters asked for
//! (a local response, filter state). Plain data: it knows neither Pingora nor wasm.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// An ordered header map with lowercase names, as Proxy-Wasm sees it (pseudo-headers
/// such as `:path` included).
///
/// Names live back to back in one string and values in one buffer, so building the map
/// of a request costs a few allocations, not two per header, and a name reads back as
/// `&str` without a UTF-8 check. Edits append; the space they free is reclaimed once it
/// outgrows what the map holds.
///
/// The map remembers which names were edited ([`HeaderMap::add`], [`HeaderMap::set`],
/// [`HeaderMap::remove`]; building it with [`HeaderMap::append`] is not editing), so
/// that writing it back into the head it was built from touches only those
/// ([`HeaderMap::edited`]).
#[derive(Default, Clone)]
pub struct HeaderMap {
    /// Names (lowercase); `entries` point into it.
    names: String,
    /// Values; `entries` point into it.
    buf: Vec<u8>,
    /// The entries in order.
    entries: Vec<Entry>,
    /// Bytes of `names` and `buf` no entry points to any more.
    garbage: usize,
    /// Edited names (lowercase).
    edited: NameList,
    /// The whole map was replaced ([`HeaderMap::mark_replaced`]): any name may differ.
    replaced: bool,
}

/// The names a map's edits touched, lowercase, back to back in one string, with where
/// each ends.
#[derive(Clone, Default)]
struct NameList {
    names: String,
    ends: Vec<usize>,
}

impl NameList {
    /// The names, in the order they were first edited.
    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut at = 0;
        self.ends.iter().map(move |&end| {
            let n = &self.names[at..end];
            at = end;
            n
        })
    }

    /// Appends `name`, lowercased.
    fn push(&mut self, name: &str) {
        let at = self.names.len();
        self.names.push_str(name);
        self.names[at..].make_ascii_lowercase();
        self.ends.push(self.names.len());
    }

    fn clear(&mut self) {
        self.names.clear();
        self.ends.clear();
    }
}

/// Where one entry's name (in [`HeaderMap::names`]) and value (in [`HeaderMap::buf`]) are.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: usize,
    name_len: usize,
    value: usize,
    value_len: usize,
}

/// A name looked up in a map. The names a map holds (and its edited names) are
/// lowercase, so only the looked-up side is folded when comparing: the same answer as
/// `eq_ignore_ascii_case`, which folded both sides of every comparison.
#[derive(Clone, Copy)]
struct Query<'a> {
    name: &'a [u8],
}

impl<'a> Query<'a> {
    #[inline]
    fn new(name: &'a str) -> Self {
        Query {
            name: name.as_bytes(),
        }
    }

    /// True when `stored` (a lowercase name) is this name, ASCII case aside.
    #[inline]
    fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == self.name.len()
            && stored
                .iter()
                .zip(self.name)
                .all(|(s, q)| *s == q.to_ascii_lowercase())
    }
}

/// How many maps' buffers a thread keeps for the next requests ([`HeaderMap::with_capacity`]).
const SPARE_MAPS: usize = 16;
/// Buffers larger than this are freed, not kept.
const SPARE_BYTES: usize = 16 << 10;

/// The buffers of a dropped map, emptied.
type Spare = (String, Vec<u8>, Vec<Entry>, NameList);

thread_local! {
    /// Buffers of dropped maps, reused by the next maps built on this thread: a request's
    /// maps (and the lists of the names filters edit in them) then cost no allocation
    /// once the thread has served a few.
    static SPARE: RefCell<Vec<Spare>> = const { RefCell::new(Vec::new()) };
}

impl HeaderMap {
    /// An empty map with room for `entries` entries of `bytes` bytes in all (in buffers
    /// a dropped map of this thread left, when there is one).
    pub fn with_capacity(entries: usize, bytes: usize) -> Self {
        let (mut names, mut buf, mut list, edited) = SPARE
            .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten()
            .unwrap_or_default();
        // Names are the smaller part of a head: a quarter of its bytes for them.
        names.reserve(bytes / 4);
        buf.reserve(bytes);
        list.reserve(entries);
        HeaderMap {
            names,
            buf,
            entries: list,
            garbage: 0,
            edited,
            replaced: false,
        }
    }

    /// Records an edit of `name`.
    fn touch(&mut self, name: &str) {
        if self.replaced {
            return;
        }
        let q = Query::new(name);
        if self.edited.iter().any(|n| q.matches(n.as_bytes())) {
            return;
        }
        self.edited.push(name);
    }

    /// The names edited since the map was built (lowercase, each once), or `None` when
    /// the whole map was replaced: then any name may differ from what it was built from.
    pub fn edited(&self) -> Option<impl Iterator<Item = &str>> {
        (!self.replaced).then(|| self.edited.iter())
    }

    /// Marks the whole map replaced (`proxy_set_header_map_pairs`).
    pub fn mark_replaced(&mut self) {
        self.replaced = true;
        self.edited.clear();
    }

    /// Builds a map from pairs; names are lowercased.
    pub fn from_pairs<I: IntoIterator<Item = (String, Vec<u8>)>>(pairs: I) -> Self {
        let mut map = HeaderMap::default();
        for (k, v) in pairs {
            map.append(&k, &v);
        }
        map
    }

    /// Appends a value for `name` (lowercased), copying both: building the map, not an
    /// edit ([`HeaderMap::add`]).
    pub fn append(&mut self, name: &str, value: &[u8]) {
        let entry = self.store(name, value);
        self.entries.push(entry);
    }

    /// Appends a value for `name`, a name of the `http` crate (lowercase already, so
    /// copied without folding its case): building the map from a head.
    pub fn append_name(&mut self, name: &http::HeaderName, value: &[u8]) {
        self.append_lowercase(name.as_str(), value);
    }

    /// Appends a value for `name`, which the caller knows is lowercase (a pseudo-header,
    /// a field name Sluice adds): copied without folding its case, as
    /// [`HeaderMap::append`] would store it.
    pub fn append_lowercase(&mut self, name: &str, value: &[u8]) {
        debug_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name}");
        let entry = self.store_as_is(name, value);
        self.entries.push(entry);
    }

    /// Copies `name` (lowercased) and `value` to the ends of the buffers.
    fn store(&mut self, name: &str, value: &[u8]) -> Entry {
        let at = self.names.len();
        let entry = self.store_as_is(name, value);
        self.names[at..].make_ascii_lowercase();
        entry
    }

    /// Copies `name` (lowercase already) and `value` to the ends of the buffers.
    fn store_as_is(&mut self, name: &str, value: &[u8]) -> Entry {
        let at = self.names.len();
        self.names.push_str(name);
        let value_at = self.buf.len();
        self.buf.extend_from_slice(value);
        Entry {
            name: at,
            name_len: name.len(),
            value: value_at,
            value_len: value.len(),
        }
    }

    #[inline]
    fn name_of(&self, e: &Entry) -> &str {
        // Entries start and end on the names' boundaries, so the slice is never split
        // inside a character.
        self.names
            .get(e.name..e.name + e.name_len)
            .unwrap_or_default()
    }

    #[inline]
    fn name_bytes(&self, e: &Entry) -> &[u8] {
        &self.names.as_bytes()[e.name..e.name + e.name_len]
    }

    /// True when entry `e` is named `q` (names are stored lowercase).
    #[inline]
    fn is_named(&self, e: &Entry, q: &Query<'_>) -> bool {
        e.name_len == q.name.len() && q.matches(self.name_bytes(e))
    }

    #[inline]
    fn value_of(&self, e: &Entry) -> &[u8] {
        &self.buf[e.value..e.value + e.value_len]
    }

    /// Counts the space of dropped entries, and compacts the buffers when that space
    /// outgrows what the map holds.
    fn dropped(&mut self, bytes: usize) {
        self.garbage += bytes;
        let held = self.names.len() + self.buf.len();
        if self.garbage > 4096 && self.garbage > held / 2 {
            let mut names = String::with_capacity(self.names.len());
            let mut buf = Vec::with_capacity(held - self.garbage);
            for e in &mut self.entries {
                let at = names.len();
                names.push_str(&self.names[e.name..e.name + e.name_len]);
                e.name = at;
                let at = buf.len();
                buf.extend_from_slice(&self.buf[e.value..e.value + e.value_len]);
                e.value = at;
            }
            self.names = names;
            self.buf = buf;
            self.garbage = 0;
        }
    }

    /// All entries in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone {
        self.entries
            .iter()
            .map(|e| (self.name_of(e), self.value_of(e)))
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of names and values.
    #[inline]
    pub fn byte_size(&self) -> usize {
        self.names.len() + self.buf.len() - self.garbage
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let q = Query::new(name);
        self.entries
            .iter()
            .find(|e| self.is_named(e, &q))
            .map(|e| self.value_of(e))
    }

    /// The values of `name`, in order.
    #[inline]
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        let q = Query::new(name);
        self.entries
            .iter()
            .filter(move |e| self.is_named(e, &q))
            .map(|e| self.value_of(e))
    }

    /// The values of `name`, in order, where `name` is lowercase (as every name the map
    /// holds, and every name [`HeaderMap::edited`] gives): compared byte for byte.
    #[inline]
    pub fn get_all_lowercase<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        self.entries
            .iter()
            .filter(move |e| e.name_len == name.len() && self.name_bytes(e) == name.as_bytes())
            .map(|e| self.value_of(e))
    }

    /// Length of all values of `name` joined with ", " ([`HeaderMap::get_joined`]), if any.
    pub fn joined_len(&self, name: &str) -> Option<usize> {
        let mut vals = self.get_all(name);
        let first = vals.next()?.len();
        Some(vals.fold(first, |n, v| n + 2 + v.len()))
    }

    /// Writes all values of `name` joined with ", " into `out`, which is
    /// [`HeaderMap::joined_len`] bytes long.
    pub fn write_joined(&self, name: &str, out: &mut [u8]) {
        let mut at = 0;
        for (i, v) in self.get_all(name).enumerate() {
            if i > 0 {
                out[at..at + 2].copy_from_slice(b", ");
                at += 2;
            }
            out[at..at + v.len()].copy_from_slice(v);
            at += v.len();
        }
    }

    /// All values of `name` joined with ", " (how Envoy answers a multi-valued get).
    pub fn get_joined(&self, name: &str) -> Option<Vec<u8>> {
        let mut out = vec![0; self.joined_len(name)?];
        self.write_joined(name, &mut out);
        Some(out)
    }

    /// Replaces every value of `name` with one value (adds it when absent).
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        self.set_bytes(name, &value);
    }

    /// Replaces every value of `name` with `value` (adds it when absent): the first
    /// entry keeps its place, the others go.
    pub fn set_bytes(&mut self, name: &str, value: &[u8]) {
        self.touch(name);
        let q = Query::new(name);
        let Some(i) = self.entries.iter().position(|e| self.is_named(e, &q)) else {
            self.append(name, value);
            return;
        };
        let at = self.buf.len();
        self.buf.extend_from_slice(value);
        let mut freed = self.entries[i].value_len;
        self.entries[i].value = at;
        self.entries[i].value_len = value.len();
        // Most names have one value: the others are looked for, and only then removed.
        if self.entries[i + 1..].iter().any(|e| self.is_named(e, &q)) {
            let (names, entries) = (self.names.as_bytes(), &mut self.entries);
            let mut j = 0;
            entries.retain(|e| {
                j += 1;
                let same = j - 1 > i && q.matches(&names[e.name..e.name + e.name_len]);
                if same {
                    freed += e.name_len + e.value_len;
                }
                !same
            });
        }
        self.dropped(freed);
    }

    /// Appends a value for `name` (an edit).
    pub fn add(&mut self, name: &str, value: Vec<u8>) {
        self.add_bytes(name, &value);
    }

    /// Appends a value for `name` (an edit).
    pub fn add_bytes(&mut self, name: &str, value: &[u8]) {
        self.touch(name);
        self.append(name, value);
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.touch(name);
        let q = Query::new(name);
        let mut freed = 0;
        let (names, entries) = (self.names.as_bytes(), &mut self.entries);
        entries.retain(|e| {
            let same = q.matches(&names[e.name..e.name + e.name_len]);
            if same {
                freed += e.name_len + e.value_len;
            }
            !same
        });
        if freed > 0 {
            self.dropped(freed);
        }
    }
}

impl Drop for HeaderMap {
    fn drop(&mut self) {
        let cap = self.buf.capacity() + self.names.capacity();
        if cap == 0
            || cap > SPARE_BYTES
            || self.entries.capacity() > SPARE_BYTES / 16
            || self.edited.names.capacity() > SPARE_BYTES / 4
        {
            return;
        }
        let mut names = std::mem::take(&mut self.names);
        let mut buf = std::mem::take(&mut self.buf);
        let mut list = std::mem::take(&mut self.entries);
        let mut edited = std::mem::take(&mut self.edited);
        names.clear();
        buf.clear();
        list.clear();
        edited.clear();
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.len() < SPARE_MAPS {
                    s.push((names, buf, list, edited));
                }
            }
        });
    }
}

impl PartialEq for HeaderMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for HeaderMap {}

impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
            .finish()
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
    /// Name of the route the request matched (shared with the snapshot's route).
    pub route: Arc<str>,
    /// Name of the upstream pool of that route.
    pub pool: Arc<str>,
    /// The route's `metadata` (namespace, key, value).
    pub route_metadata: Arc<[(String, String, String)]>,
    /// Generation of the policy snapshot serving the request.
    pub generation: u64,
    /// The upstream peer once chosen.
    pub upstream: Option<SocketAddr>,
    /// Response status once known.
    pub response_code: Option<u16>,
    /// The request target as the client sent it, when it was absolute-form
    /// (`http://host/path?q`): filters see it as property `sluice.request_target`
    /// (`:path` is origin-form).
    pub absolute_target: Option<Vec<u8>>,
    /// The HTTP/1 request head as received (request line and header lines, names in
    /// the client's case, hop-by-hop headers included): property `sluice.request_head`.
    pub received_head: Option<bytes::Bytes>,
}

thread_local! {
    /// The empty route metadata every [`RequestInfo::default`] shares on a thread: a
    /// clone is a count, where `Arc::from([])` would allocate per request.
    static NO_METADATA: Arc<[(String, String, String)]> = Arc::from([]);
    /// The empty name, shared likewise.
    static NO_NAME: Arc<str> = Arc::from("");
}

impl Default for RequestInfo {
    fn default() -> Self {
        RequestInfo {
            id: String::new(),
            source: None,
            destination: None,
            protocol: "HTTP/1.1",
            start: SystemTime::UNIX_EPOCH,
            route: NO_NAME.with(Arc::clone),
            pool: NO_NAME.with(Arc::clone),
            route_metadata: NO_METADATA.with(Arc::clone),
            generation: 0,
            upstream: None,
            response_code: None,
            absolute_target: None,
            received_head: None,
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
        assert_eq!(h.byte_size(), 2);
    }

    #[test]
    fn edits_are_remembered_by_name() {
        let mut h = HeaderMap::default();
        h.append("a", b"1");
        h.append("b", b"2");
        assert_eq!(h.edited().unwrap().count(), 0);
        h.set("B", b"3".to_vec());
        h.add("c", b"4".to_vec());
        h.remove("b");
        h.set_bytes("C", b"5");
        assert_eq!(h.edited().unwrap().collect::<Vec<_>>(), vec!["b", "c"]);
        h.mark_replaced();
        assert!(h.edited().is_none());
        h.add("d", b"6".to_vec());
        assert!(h.edited().is_none());
    }

    #[test]
    fn maps_built_after_a_drop_start_empty() {
        let mut a = HeaderMap::with_capacity(4, 64);
        a.append("x-old", b"stale");
        a.set("y-old", b"edited".to_vec());
        let ptr = a.buf.as_ptr();
        drop(a);
        let mut b = HeaderMap::with_capacity(2, 32);
        // The dropped map's buffer serves again, emptied.
        assert_eq!(b.buf.as_ptr(), ptr);
        assert!(b.is_empty());
        assert_eq!(b.byte_size(), 0);
        assert_eq!(b.edited().unwrap().count(), 0);
        b.append("k", b"v");
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![("k", &b"v"[..])]);
        assert_eq!(b.get("x-old"), None);
    }

    #[test]
    fn many_edited_names_are_all_remembered() {
        let mut h = HeaderMap::default();
        let names: Vec<String> = (0..40).map(|i| format!("X-Long-Header-Name-{i}")).collect();
        for n in &names {
            h.set(n, b"v".to_vec());
            h.add(n, b"w".to_vec());
        }
        let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        assert_eq!(h.edited().unwrap().collect::<Vec<_>>(), lower);
        let mut c = h.clone();
        c.remove("x-other");
        assert_eq!(c.edited().unwrap().count(), 41);
        assert_eq!(h.edited().unwrap().count(), 40);
    }

    #[test]
    fn names_beyond_ascii_read_back_whole() {
        // Names live in their own string: slices of it must come back whole, whatever
        // the characters, through edits and compaction.
        let mut h = HeaderMap::with_capacity(2, 16);
        h.append("X-Ünï", b"1");
        h.add("ÄB-c", b"2".to_vec());
        h.set("x-Ünï", b"3".to_vec());
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("x-Ünï", &b"3"[..]), ("Äb-c", &b"2"[..])]
        );
        assert_eq!(
            h.edited().unwrap().collect::<Vec<_>>(),
            vec!["Äb-c", "x-Ünï"]
        );
        for i in 0..2_000 {
            h.set("Äb-c", vec![b'v'; 10 + i % 3]);
        }
        assert_eq!(h.get_all("äb-c").count(), 0);
        assert_eq!(h.get("Äb-C").map(<[u8]>::len), Some(10 + 1999 % 3));
        assert_eq!(
            h.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["x-Ünï", "Äb-c"]
        );
        assert_eq!(
            h.byte_size(),
            "x-Ünï".len() + 1 + "Äb-c".len() + 10 + 1999 % 3
        );
    }

    #[test]
    fn names_of_a_head_and_lowercase_lookups_match_the_folding_ones() {
        let mut h = HeaderMap::with_capacity(4, 64);
        h.append_name(&http::header::CONTENT_TYPE, b"text/plain");
        h.append_name(&http::HeaderName::from_static("x-dup"), b"1");
        h.append("X-Dup", b"2");
        h.add("x-DUP", b"3".to_vec());
        for name in ["content-type", "x-dup", "x-absent"] {
            assert_eq!(
                h.get_all_lowercase(name).collect::<Vec<_>>(),
                h.get_all(&name.to_ascii_uppercase()).collect::<Vec<_>>(),
                "{name}"
            );
        }
        assert_eq!(h.get_all_lowercase("x-dup").count(), 3);
        assert_eq!(
            h.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["content-type", "x-dup", "x-dup", "x-dup"]
        );
        assert_eq!(h.edited().unwrap().collect::<Vec<_>>(), vec!["x-dup"]);
        h.remove("X-DUP");
        assert_eq!(h.get_all_lowercase("x-dup").count(), 0);
    }

    #[test]
    fn look_ups_fold_ascii_case_only_short_names_and_long_alike() {
        // The looked-up name is folded against the stored lowercase names, short and
        // long names alike.
        let long = format!("X-{}", "Long-".repeat(20));
        let mut h = HeaderMap::default();
        h.append("Content-Type", b"a");
        h.append(&long, b"b");
        h.append("x-Ünï", b"c");
        h.add("X-ÜNï", b"d".to_vec());
        assert_eq!(h.get("CONTENT-type"), Some(&b"a"[..]));
        assert_eq!(h.get(&long.to_ascii_lowercase()), Some(&b"b"[..]));
        assert_eq!(h.get(&long.to_ascii_uppercase()), Some(&b"b"[..]));
        // Only ASCII folds: `Ü` and `ü` are different names.
        assert_eq!(
            h.get_all("X-ÜNï").collect::<Vec<_>>(),
            vec![&b"c"[..], &b"d"[..]]
        );
        assert_eq!(h.get_all("x-üNï").count(), 0);
        assert_eq!(h.get_all("x-ÜnÏ").count(), 0);
        assert_eq!(h.get("content-typ"), None);
        assert_eq!(h.get("content-typex"), None);
        h.set(&long.to_ascii_uppercase(), b"B".to_vec());
        h.add(&long, b"B2".to_vec());
        h.set("X-ÜnÏ", b"X".to_vec());
        h.set("X-ÜNï", b"C".to_vec());
        assert_eq!(h.get_joined(&long).unwrap(), b"B, B2");
        assert_eq!(h.get_joined("x-Ünï").unwrap(), b"C");
        assert_eq!(h.get_joined("x-ÜnÏ").unwrap(), b"X");
        h.remove(&long.to_ascii_uppercase());
        h.remove("absent");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![
                ("content-type", &b"a"[..]),
                ("x-Ünï", &b"C"[..]),
                ("x-ÜnÏ", &b"X"[..])
            ]
        );
        let lower = long.to_ascii_lowercase();
        assert_eq!(
            h.edited().unwrap().collect::<Vec<_>>(),
            vec!["x-Ünï", lower.as_str(), "x-ÜnÏ", "absent"]
        );
    }

    #[test]
    fn edits_reclaim_their_space() {
        let mut h = HeaderMap::from_pairs([("X-A".to_string(), b"1".to_vec())]);
        h.add("b", b"2".to_vec());
        for i in 0..10_000 {
            h.set("x-a", vec![b'v'; 100 + i % 7]);
            h.add("c", b"3".to_vec());
            h.remove("C");
        }
        assert!(h.buf.len() < 16 << 10, "{} bytes", h.buf.len());
        assert_eq!(h.byte_size(), 3 + 100 + 9999 % 7 + 2);
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("x-a", &vec![b'v'; 100 + 9999 % 7][..]), ("b", &b"2"[..])]
        );
        assert_eq!(h, h.clone());
        assert_eq!(h.get("X-A").map(<[u8]>::len), Some(100 + 9999 % 7));
    }
}
