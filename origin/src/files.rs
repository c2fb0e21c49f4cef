//! Static files: path mapping, content types, validators, and a small
//! in-memory cache of small files (revalidated against size + mtime on every
//! request, so edits under the root show up immediately).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::{simple, State};

/// Files up to this size are kept in memory after the first read.
const CACHE_MAX_FILE: u64 = 1024 * 1024;
/// At most this many files are cached (the demo root is tiny; this is a guard).
const CACHE_MAX_ENTRIES: usize = 4096;

/// What we know about one file on disk.
struct FileInfo {
    len: u64,
    mtime: SystemTime,
    content_type: HeaderValue,
    etag: HeaderValue,
    last_modified: HeaderValue,
}

struct Cached {
    info: FileInfo,
    data: Bytes,
}

#[derive(Default)]
pub struct FileCache {
    map: RwLock<HashMap<PathBuf, Arc<Cached>>>,
}

impl FileCache {
    fn get(&self, path: &Path, len: u64, mtime: SystemTime) -> Option<Arc<Cached>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(path)
            .filter(|c| c.info.len == len && c.info.mtime == mtime)
            .cloned()
    }

    fn put(&self, path: PathBuf, entry: Arc<Cached>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX_ENTRIES && !map.contains_key(&path) {
            map.clear();
        }
        map.insert(path, entry);
    }
}

/// Serves `GET`/`HEAD` of a file below the root.
///
/// Small files are read with blocking `std::fs` calls on the runtime thread:
/// they are in the page cache and this is far cheaper than a trip through
/// tokio's blocking pool; large files are streamed with `tokio::fs`.
pub async fn serve(st: &State, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut resp = simple(StatusCode::METHOD_NOT_ALLOWED);
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
    };

    let uri_path = req.uri().path();
    let Some(rel) = relative_path(uri_path) else {
        return simple(StatusCode::BAD_REQUEST);
    };
    let mut full = st.root.join(rel);

    let mut meta = match std::fs::metadata(&full) {
        Ok(m) => m,
        Err(e) => return io_error(&e),
    };
    if meta.is_dir() {
        if !uri_path.ends_with('/') {
            // Redirect so relative links inside index.html resolve.
            let mut loc = format!("{uri_path}/");
            if let Some(q) = req.uri().query() {
                loc.push('?');
                loc.push_str(q);
            }
            let mut resp = simple(StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = HeaderValue::from_str(&loc) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        full.push("index.html");
        meta = match std::fs::metadata(&full) {
            Ok(m) => m,
            Err(e) => return io_error(&e),
        };
    }
    if !meta.is_file() {
        return simple(StatusCode::NOT_FOUND);
    }
    let len = meta.len();
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);

    if let Some(c) = st.cache.get(&full, len, mtime) {
        return respond(req.headers(), &c.info, head, || Body::full(c.data.clone()));
    }

    // Cache miss: make sure symlinks do not lead out of the root.
    match std::fs::canonicalize(&full) {
        Ok(canon) if canon.starts_with(&st.root) => {}
        Ok(_) => return simple(StatusCode::NOT_FOUND),
        Err(e) => return io_error(&e),
    }

    if len <= CACHE_MAX_FILE {
        let data = match std::fs::read(&full) {
            Ok(d) => Bytes::from(d),
            Err(e) => return io_error(&e),
        };
        // Describe what we actually read, in case the file changed meanwhile.
        let entry = Arc::new(Cached {
            info: file_info(&full, data.len() as u64, mtime),
            data,
        });
        st.cache.put(full, entry.clone());
        return respond(req.headers(), &entry.info, head, || {
            Body::full(entry.data.clone())
        });
    }

    let info = file_info(&full, len, mtime);
    if head || not_modified(req.headers(), &info) {
        return respond(req.headers(), &info, head, Body::empty);
    }
    match tokio::fs::File::open(&full).await {
        Ok(file) => respond(req.headers(), &info, head, || Body::file(file, len)),
        Err(e) => io_error(&e),
    }
}

fn respond(
    req_headers: &HeaderMap,
    info: &FileInfo,
    head: bool,
    body: impl FnOnce() -> Body,
) -> Response<Body> {
    let not_modified = not_modified(req_headers, info);
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else if head {
        (StatusCode::OK, Body::empty())
    } else {
        (StatusCode::OK, body())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ETAG, info.etag.clone());
    h.insert(header::LAST_MODIFIED, info.last_modified.clone());
    if !not_modified {
        h.insert(header::CONTENT_TYPE, info.content_type.clone());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.len));
    }
    resp
}

/// RFC 9110 §13.1.2/§13.1.3: If-None-Match (weak comparison) wins; otherwise
/// If-Modified-Since.
fn not_modified(h: &HeaderMap, info: &FileInfo) -> bool {
    let mut inm = h.get_all(header::IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        let etag = info.etag.as_bytes();
        return inm.any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .map(str::trim)
                    .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == etag)
            })
        });
    }
    if let Some(ims) = h
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
    {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        return secs(info.mtime) <= secs(ims);
    }
    false
}

fn file_info(path: &Path, len: u64, mtime: SystemTime) -> FileInfo {
    let nanos = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let etag = format!("\"{len:x}-{nanos:x}\"");
    FileInfo {
        len,
        mtime,
        content_type: HeaderValue::from_static(content_type(path)),
        etag: HeaderValue::from_str(&etag).expect("hex etag is a valid header value"),
        last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(mtime))
            .expect("HTTP date is a valid header value"),
    }
}

fn io_error(e: &io::Error) -> Response<Body> {
    match e.kind() {
        io::ErrorKind::PermissionDenied => simple(StatusCode::FORBIDDEN),
        // NotFound, NotADirectory ("/hello.txt/x"), invalid names...
        _ => simple(StatusCode::NOT_FOUND),
    }
}

/// Maps the URI path to a path relative to the root. `None` (-> 400) for
/// malformed percent-encoding, non-UTF-8, NUL bytes, or any `..` segment
/// (checked after decoding, so `%2e%2e` is refused too).
fn relative_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = String::from_utf8(percent_decode(uri_path)?).ok()?;
    let mut rel = PathBuf::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s if s.contains(['\0', '\\']) => return None,
            s => rel.push(s),
        }
    }
    Some(rel)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "toml" => "application/toml",
        "yaml" | "yml" => "application/yaml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_refused() {
        assert!(relative_path("/../etc/passwd").is_none());
        assert!(relative_path("/a/../../x").is_none());
        assert!(relative_path("/%2e%2e/x").is_none());
        assert!(relative_path("/a/%2E%2E%2Fb").is_none());
        assert!(relative_path("/a%00b").is_none());
        assert!(relative_path("/bad%zz").is_none());
        assert_eq!(relative_path("/").unwrap(), PathBuf::new());
        assert_eq!(
            relative_path("/a/./b%20c.txt").unwrap(),
            PathBuf::from("a/b c.txt")
        );
        assert_eq!(relative_path("/x..y").unwrap(), PathBuf::from("x..y"));
    }

    #[test]
    fn types() {
        assert_eq!(content_type(Path::new("a/b.JSON")), "application/json");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
