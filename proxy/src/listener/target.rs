//! Request targets with bytes clients should have percent-encoded (`"`, `<`, `>`, `\`,
//! `` ` ``), which nginx accepts and passes on. Pingora's parser reads them but its
//! URI type refuses them, so such a request used to be answered 400 before any filter
//! (the WAF) could judge it. Before Pingora reads an HTTP/1 request head, Sluice reads
//! its request line and, only when Pingora would refuse the target, percent-encodes
//! those bytes; the target as sent is kept for the filters (`sluice.request_target`).
//! The bytes read are handed to Pingora as the start of the head, so nothing is read
//! twice.
//!
//! The same look at the request line answers, before any parser or filter, the lines
//! no route can take ([`Verdict`], docs/POLICY.md "What reaches a route"): a target
//! with a space or a fragment (`#`), a target in no form HTTP/1.1 defines for its method
//! (`\`, `a/b`; `*` other than for `OPTIONS`; a bare `?query` is taken) get 400, as
//! nginx and Envoy answer;
//! `CONNECT` gets 405 when it names a `host:port` (Sluice is not a forward proxy) and
//! 400 otherwise; an HTTP/0.9 line (no version) is closed unanswered, since a 0.9 client
//! cannot read a status line.

use bytes::BytesMut;
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// The bytes that may need encoding: what `http`'s URI type refuses and httparse reads.
const ENCODE: &[u8] = b"\"<>\\`^{|}";

/// [`ENCODE`] as a table by byte value: the target is checked byte by byte per request.
static ENCODED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < ENCODE.len() {
        t[ENCODE[i] as usize] = true;
        i += 1;
    }
    t
};

/// Longest request line looked at; a longer one is left to Pingora's limits.
const MAX_LINE: usize = 16 * 1024;

/// The start of a request head, read from the connection.
pub struct HeadStart {
    /// The bytes to hand to the HTTP/1 parser (the request line rewritten if needed).
    pub bytes: BytesMut,
    /// The target as sent, when it had to be encoded.
    pub original: Option<Vec<u8>>,
    /// Set when Sluice answers the request line itself, without parsing the head.
    pub verdict: Option<Verdict>,
}

/// How Sluice answers a request line no route can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answered with this status, then the connection is closed.
    Refuse {
        /// 400 or 405.
        status: u16,
        /// The metric label (`sluice_bad_requests_total{reason}`).
        reason: &'static str,
        /// What the answer's body says.
        why: &'static str,
    },
    /// Closed without an answer (HTTP/0.9: no status line can be read).
    Close {
        /// The metric label.
        reason: &'static str,
    },
}

impl Verdict {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Refuse { reason, .. } | Verdict::Close { reason } => reason,
        }
    }

    /// The bytes written back before the connection is closed.
    pub fn answer(&self) -> Option<Vec<u8>> {
        let Verdict::Refuse { status, why, .. } = self else {
            return None;
        };
        let text = if *status == 405 {
            "Method Not Allowed"
        } else {
            "Bad Request"
        };
        let body = format!("{why}\n");
        Some(
            format!(
                "HTTP/1.1 {status} {text}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }
}

const fn bad(reason: &'static str, why: &'static str) -> Option<Verdict> {
    Some(Verdict::Refuse {
        status: 400,
        reason,
        why,
    })
}

/// What Sluice answers itself for a request line of `method` and `target` (the bytes
/// between its first and last space), or `None`: the parser and then the route take it.
pub fn judge(method: &[u8], target: &[u8]) -> Option<Verdict> {
    if target.contains(&b' ') {
        return bad("target_space", "space in the request target");
    }
    if method == b"CONNECT" {
        return if crate::paths::is_host_port(target, true) {
            Some(Verdict::Refuse {
                status: 405,
                reason: "connect",
                why: "CONNECT is not served here",
            })
        } else {
            bad("target_form", "CONNECT needs a host:port target")
        };
    }
    if target == b"*" {
        return if method == b"OPTIONS" {
            None
        } else {
            bad("target_form", "`*` is a target for OPTIONS only")
        };
    }
    let absolute = target.len() > 8
        && (target[..7].eq_ignore_ascii_case(b"http://")
            || target[..8].eq_ignore_ascii_case(b"https://"));
    // A bare query (`?id=1`) is taken, as Apache takes it: the WAF judges it.
    if !matches!(target.first(), Some(b'/' | b'?')) && !absolute {
        return bad("target_form", "the request target is not a path");
    }
    if target.contains(&b'#') {
        return bad("fragment", "fragment (#) in the request target");
    }
    None
}

/// Reads from `stream`, after the bytes already read from it (`first`, often the whole
/// head: [`super::preface::wait_readable`]), until the request line is complete (or
/// the client stops, or [`MAX_LINE`] bytes), then [`fix_line`]s it. Read errors end the
/// reading; the parser meets the same condition on its own read.
pub async fn read_line(stream: &mut Stream, first: BytesMut) -> HeadStart {
    let mut bytes = first;
    loop {
        if bytes.contains(&b'\n') || bytes.len() >= MAX_LINE {
            break;
        }
        // Room for a head when little is left. Bytes already read keep their buffer,
        // which has room left (reserving 4 KiB more on top of them reallocated and
        // copied them on every kept-alive request).
        if bytes.capacity() - bytes.len() < 1024 {
            bytes.reserve(4096);
        }
        match stream.read_buf(&mut bytes).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    fix_line(bytes)
}

/// [`judge`]s the request line, and percent-encodes the [`ENCODE`] bytes of its target
/// when Pingora would refuse it as it is (tests: `listener::target` unit tests).
pub fn fix_line(bytes: BytesMut) -> HeadStart {
    let as_is = |bytes, verdict| HeadStart {
        bytes,
        original: None,
        verdict,
    };
    let Some(eol) = memchr::memchr(b'\n', &bytes) else {
        return as_is(bytes, None);
    };
    let line = &bytes[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // METHOD SP target SP version: the target runs from the first space to the last.
    let (Some(a), Some(z)) = (
        line.iter().position(|&b| b == b' '),
        line.iter().rposition(|&b| b == b' '),
    ) else {
        return as_is(bytes, None);
    };
    let method = &line[..a];
    if a > 0 && method.iter().all(u8::is_ascii_uppercase) && (a == z || z + 1 == line.len()) {
        // `GET /path` or `GET /path ` (no version): HTTP/0.9.
        return as_is(bytes, Some(Verdict::Close { reason: "http09" }));
    }
    if z <= a + 1 {
        return as_is(bytes, None);
    }
    let target = &line[a + 1..z];
    if let Some(v) = judge(method, target) {
        return as_is(bytes, Some(v));
    }
    if !target.iter().any(|&b| ENCODED[usize::from(b)]) || accepted(method, target) {
        return as_is(bytes, None);
    }
    let mut out = BytesMut::with_capacity(bytes.len() + 32);
    out.extend_from_slice(&bytes[..=a]);
    for &b in target {
        if ENCODE.contains(&b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(&[b]);
        }
    }
    out.extend_from_slice(&bytes[z..]);
    HeadStart {
        original: Some(target.to_vec()),
        bytes: out,
        verdict: None,
    }
}

/// Whether Pingora takes `target` as it is.
fn accepted(method: &[u8], target: &[u8]) -> bool {
    let method = std::str::from_utf8(method).unwrap_or("GET");
    pingora::http::RequestHeader::build(method, target, None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(s: &str) -> (String, Option<String>) {
        let h = fix_line(BytesMut::from(s.as_bytes()));
        assert_eq!(h.verdict, None, "{s}");
        (
            String::from_utf8(h.bytes.to_vec()).unwrap(),
            h.original.map(|o| String::from_utf8(o).unwrap()),
        )
    }

    #[test]
    fn refused_bytes_are_encoded_and_the_target_kept() {
        let (line, orig) = fixed("GET /a?x=<b>\"c\\` HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            line,
            "GET /a?x=%3Cb%3E%22c%5C%60 HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        assert_eq!(orig.as_deref(), Some("/a?x=<b>\"c\\`"));
    }

    #[test]
    fn lines_no_route_can_take_are_judged() {
        let verdict = |s: &str| fix_line(BytesMut::from(s.as_bytes())).verdict;
        let reason = |s: &str| verdict(s).map(|v| v.reason());
        assert_eq!(reason("GET /a b HTTP/1.1\r\n"), Some("target_space"));
        assert_eq!(reason("GET \\ HTTP/1.1\r\n"), Some("target_form"));
        assert_eq!(reason("GET a/b HTTP/1.1\r\n"), Some("target_form"));
        assert_eq!(reason("GET * HTTP/1.1\r\n"), Some("target_form"));
        assert_eq!(reason("OPTIONS * HTTP/1.1\r\n"), None);
        assert_eq!(reason("GET /a#b HTTP/1.1\r\n"), Some("fragment"));
        assert_eq!(reason("GET http://h/a#b HTTP/1.1\r\n"), Some("fragment"));
        assert_eq!(reason("GET http://h/a HTTP/1.1\r\n"), None);
        assert_eq!(reason("GET HTTPS://h/ HTTP/1.1\r\n"), None);
        assert_eq!(reason("GET / HTTP/1.1\r\n"), None);
        assert_eq!(reason("GET ?id=1 HTTP/1.1\r\n"), None);
        let connect = |t: &str| verdict(&format!("CONNECT {t} HTTP/1.1\r\n"));
        for ok in ["1.2.3.4:80", "example.com:443", "[::1]:8080"] {
            assert!(
                matches!(connect(ok), Some(Verdict::Refuse { status: 405, .. })),
                "{ok}"
            );
        }
        for not in ["example.com", ":80", "h:", "h:123456", "h/x:80"] {
            assert!(
                matches!(connect(not), Some(Verdict::Refuse { status: 400, .. })),
                "{not}"
            );
        }
        assert_eq!(reason("GET /\r\n"), Some("http09"));
        assert_eq!(reason("GET / \r\n"), Some("http09"));
        assert_eq!(verdict("GET /\r\n").unwrap().answer(), None);
        let answer =
            String::from_utf8(verdict("GET /a b HTTP/1.1\r\n").unwrap().answer().unwrap()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\nspace in the request target\n"),
            "{answer}"
        );
    }

    #[test]
    fn accepted_targets_are_untouched() {
        for s in [
            "GET /a?x={y}|^ HTTP/1.1\r\n\r\n",
            "GET /plain?q=1 HTTP/1.1\r\n",
            "GET /partial",
            "GARBAGE\r\n",
        ] {
            assert_eq!(fixed(s), (s.to_string(), None), "{s}");
        }
    }
}
