//! Request targets with bytes clients should have percent-encoded (`"`, `<`, `>`, `\`,
//! `` ` ``), which nginx accepts and passes on. Pingora's parser reads them but its
//! URI type refuses them, so such a request used to be answered 400 before any filter
//! (the WAF) could judge it. Before Pingora reads an HTTP/1 request head, Sluice reads
//! its request line and, only when Pingora would refuse the target, percent-encodes
//! those bytes; the target as sent is kept for the filters (`sluice.request_target`).
//! The bytes read are handed to Pingora as the start of the head, so nothing is read
//! twice.

use bytes::BytesMut;
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// The bytes that may need encoding: what `http`'s URI type refuses and httparse reads.
const ENCODE: &[u8] = b"\"<>\\`^{|}";

/// Longest request line looked at; a longer one is left to Pingora's limits.
const MAX_LINE: usize = 16 * 1024;

/// The start of a request head, read from the connection.
pub struct HeadStart {
    /// The bytes to hand to the HTTP/1 parser (the request line rewritten if needed).
    pub bytes: BytesMut,
    /// The target as sent, when it had to be encoded.
    pub original: Option<Vec<u8>>,
}

/// Reads from `stream` until the request line is complete (or the client stops, or
/// [`MAX_LINE`] bytes), then [`fix_line`]s it. Read errors end the reading; the parser
/// meets the same condition on its own read.
pub async fn read_line(stream: &mut Stream) -> HeadStart {
    let mut bytes = BytesMut::with_capacity(4096);
    loop {
        if bytes.contains(&b'\n') || bytes.len() >= MAX_LINE {
            break;
        }
        match stream.read_buf(&mut bytes).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    fix_line(bytes)
}

/// Percent-encodes the [`ENCODE`] bytes of the request line's target when Pingora
/// would refuse it as it is (tests: `listener::target` unit tests).
pub fn fix_line(bytes: BytesMut) -> HeadStart {
    let Some(eol) = bytes.iter().position(|&b| b == b'\n') else {
        return HeadStart {
            bytes,
            original: None,
        };
    };
    let line = &bytes[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // METHOD SP target SP version: the target runs from the first space to the last.
    let (Some(a), Some(z)) = (
        line.iter().position(|&b| b == b' '),
        line.iter().rposition(|&b| b == b' '),
    ) else {
        return HeadStart {
            bytes,
            original: None,
        };
    };
    if z <= a + 1 {
        return HeadStart {
            bytes,
            original: None,
        };
    }
    let target = &line[a + 1..z];
    if !target.iter().any(|b| ENCODE.contains(b)) || accepted(&line[..a], target) {
        return HeadStart {
            bytes,
            original: None,
        };
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
