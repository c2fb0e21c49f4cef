//! Raw exchanges (exactly the bytes a test writes, where a client library would
//! sanitize them), `/metrics` samples, and the real WAF as the default policy runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// Sends `request` as raw bytes on a new connection (exactly these bytes, where a client
/// library would sanitize them) and reads the answer until the proxy closes it (requests
/// say `Connection: close`). The status (0 when no status line came) and the answer.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The proxy may answer and close before it has read everything: not an error here.
    let _ = c.write_all(request);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    (status_of(&out), out)
}

/// Reads a response head from `r` a byte at a time, through its empty line and not a
/// byte past it (what follows stays in `r`: a body, or an upgraded stream's bytes).
/// Panics when `r` ends or fails first.
pub fn read_head(r: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        r.read_exact(&mut byte).expect("a whole response head");
        head.push(byte[0]);
    }
    head
}

/// The fields of an HTTP/1.x answer's head, in order: names lowercase, values trimmed.
pub fn head_fields(answer: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(answer);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// The status code of an HTTP/1.x answer (0 when there is no status line).
pub fn status_of(answer: &[u8]) -> u16 {
    answer
        .strip_prefix(b"HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn metrics_text(s: &Sluice) -> String {
    client()
        .get(s.admin_url("/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The sum of the `/metrics` samples whose line starts with `prefix`, e.g. a whole
/// sample `name{label="v"}` or a metric name (0 when there is none).
pub fn metric(s: &Sluice, prefix: &str) -> f64 {
    metrics_text(s)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of the samples of metric `name` whose labels contain `labels`.
pub fn metric_with(s: &Sluice, name: &str, labels: &str) -> f64 {
    metrics_text(s)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `[filters.waf]` as policies/default.toml runs it: the OWASP CRS from Debian's
/// install paths, paranoia 1, blocking with 403.
pub fn waf_filter() -> String {
    assert!(
        std::path::Path::new(CRS_RULES).is_dir(),
        "{CRS_RULES} is missing: the test must call require(\"crs\", CRS_RULES) first"
    );
    format!(
        r#"
[filters.waf]
module = {m}
memory_mb = 256
startup_ms = 60000
files = ["/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
         "/usr/share/modsecurity-crs/rules/*.conf", "/usr/share/modsecurity-crs/rules/*.data"]
config = {{ rules = ["/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
                    "/usr/share/modsecurity-crs/rules/*.conf"], mode = "block", paranoia = 1 }}
"#,
        m = module("waf.wasm")
    )
}

/// A raw test origin on loopback: counts the connections it accepted and serves each
/// on a thread of its own with a clone of `serve` (the connection's reading and
/// writing halves).
pub fn counting_origin(
    serve: impl Fn(BufReader<TcpStream>, TcpStream) + Clone + Send + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let serve = serve.clone();
            std::thread::spawn(move || {
                let w = conn.try_clone().unwrap();
                serve(BufReader::new(conn), w);
            });
        }
    });
    (addr, accepted)
}

/// What a raw test origin reads of each request: the head (an empty line before the
/// request line is skipped) and a `Content-Length` body, from `r`; false at EOF.
pub fn read_request(r: &mut BufReader<TcpStream>) -> bool {
    let mut length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if line == "\r\n" && !first {
            break;
        }
        first = false;
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).is_ok()
}
