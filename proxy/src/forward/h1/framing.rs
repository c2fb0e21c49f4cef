//! What an HTTP/1 response head says about its body and its connection: how the body
//! is framed (RFC 9112 §6.3) and whether the connection may carry another request once
//! the body is read (RFC 9112 §9.3).

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::{HMap, ResponseHeader};
use pingora::prelude::*;
use pingora::ErrorType;

use super::raw_head::{Name, RawHead};
use super::response_body::Decoder;

/// The body framing and connection persistence of a final response.
pub struct Framing {
    /// The body's decoder.
    pub body: Decoder,
    /// The connection may be reused after the body (when it is read whole and nothing
    /// follows it).
    pub keep_alive: bool,
}

/// What the framing reads of a response head, and the one edit it makes: a head built
/// into Pingora's maps, or kept as the bytes read.
pub trait Head {
    /// The status code.
    fn status(&self) -> http::StatusCode;
    /// The version.
    fn version(&self) -> http::Version;
    /// Whether a field of class `name` is in the head.
    fn has(&self, name: Name) -> bool;
    /// The values of the fields of class `name` (not [`Name::Other`]), in order.
    fn values(&self, name: Name) -> impl DoubleEndedIterator<Item = &[u8]>;
    /// Removes the fields of class `name`.
    fn remove(&mut self, name: Name);
}

impl Head for RawHead {
    fn status(&self) -> http::StatusCode {
        self.status
    }
    fn version(&self) -> http::Version {
        self.version
    }
    fn has(&self, name: Name) -> bool {
        self.contains(name)
    }
    fn values(&self, name: Name) -> impl DoubleEndedIterator<Item = &[u8]> {
        RawHead::values(self, name)
    }
    fn remove(&mut self, name: Name) {
        RawHead::remove(self, name)
    }
}

impl Head for ResponseHeader {
    fn status(&self) -> http::StatusCode {
        self.status
    }
    fn version(&self) -> http::Version {
        self.version
    }
    fn has(&self, name: Name) -> bool {
        self.headers.contains_key(header_name(name))
    }
    fn values(&self, name: Name) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.headers
            .get_all(header_name(name))
            .into_iter()
            .map(|v| v.as_bytes())
    }
    fn remove(&mut self, name: Name) {
        self.remove_header(&header_name(name));
    }
}

/// The field name of class `name`.
fn header_name(name: Name) -> http::HeaderName {
    match name {
        Name::ContentLength => CONTENT_LENGTH,
        Name::TransferEncoding => TRANSFER_ENCODING,
        Name::Connection => CONNECTION,
        Name::Date => http::header::DATE,
        Name::Other => unreachable!("a field name of no class"),
    }
}

/// The framing of `head` (a final, non-101 response) to a request that was a `HEAD`
/// when `head_request`, on a connection the request asked to close when `close_asked`.
///
/// `Content-Length` and `Transfer-Encoding` together: the transfer coding wins and
/// `Content-Length` is removed (RFC 9112 §6.3, as Pingora does), and the connection is
/// not reused (the RFC calls such a message a possible smuggling attempt). Differing
/// or malformed `Content-Length` values are an error (502), as in Pingora and nginx.
pub fn of(head: &mut impl Head, head_request: bool, close_asked: bool) -> Result<Framing> {
    let has_te = head.has(Name::TransferEncoding);
    let both = has_te && head.has(Name::ContentLength);
    if both {
        head.remove(Name::ContentLength);
    }
    let mut keep_alive = !close_asked && !both && persistent(head);
    if has_te && head.version() == http::Version::HTTP_10 {
        // RFC 9112 §6.1: a transfer coding in an HTTP/1.0 message: close after it.
        keep_alive = false;
    }
    // Checked for every response, with a body or not (a lying value is a framing
    // error upstream either way); a transfer coding makes it irrelevant.
    let length = if has_te {
        None
    } else {
        length_of(head.values(Name::ContentLength))?
    };
    let status = head.status().as_u16();
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Decoder::length(0)
    } else if has_te {
        if chunked_last(head.values(Name::TransferEncoding)) {
            Decoder::chunked()
        } else {
            keep_alive = false;
            Decoder::until_close()
        }
    } else {
        match length {
            Some(n) => Decoder::length(n),
            None => {
                keep_alive = false;
                Decoder::until_close()
            }
        }
    };
    Ok(Framing { body, keep_alive })
}

/// Whether `headers` (a request's) ask to close the connection.
pub fn asks_close(headers: &HMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")))
}

/// The response's `Connection` tokens and version: `close` ends it, `keep-alive`
/// keeps it (also in HTTP/1.0), else HTTP/1.1 persists and HTTP/1.0 does not.
fn persistent(head: &impl Head) -> bool {
    let mut keep = None;
    for v in head.values(Name::Connection) {
        for t in tokens(v) {
            if t.eq_ignore_ascii_case(b"close") {
                return false;
            }
            if t.eq_ignore_ascii_case(b"keep-alive") {
                keep = Some(true);
            }
        }
    }
    keep.unwrap_or(head.version() == http::Version::HTTP_11)
}

/// The comma-separated tokens of a field value, trimmed.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether the last transfer coding (of the last `Transfer-Encoding` line) is chunked
/// (a request's or a response's).
pub fn last_coding_is_chunked(headers: &HMap) -> bool {
    chunked_last(
        headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// [`last_coding_is_chunked`] over the `Transfer-Encoding` values of a head.
pub fn chunked_last<'a>(mut values: impl DoubleEndedIterator<Item = &'a [u8]>) -> bool {
    values
        .next_back()
        .and_then(|v| v.rsplit(|b| *b == b',').next())
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The `Content-Length`: every value (of every line, comma lists included) must be
/// digits and all equal; none is `None`. A response's or a request's (the downstream
/// session checks requests with it: `crate::downstream::h1`).
pub fn content_length(headers: &HMap) -> Result<Option<u64>> {
    length_of(headers.get_all(CONTENT_LENGTH).iter().map(|v| v.as_bytes()))
}

/// [`content_length`] over the `Content-Length` values of a head.
pub fn length_of<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>> {
    let mut length = None;
    for v in values {
        for t in v.split(|b| *b == b',') {
            let n = digits(t.trim_ascii()).ok_or_else(|| {
                Error::explain(ErrorType::InvalidHTTPHeader, "invalid Content-Length")
            })?;
            match length {
                Some(prev) if prev != n => {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "conflicting Content-Length values",
                    ))
                }
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// A decimal number of ASCII digits only (no sign), without overflow.
fn digits(t: &[u8]) -> Option<u64> {
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: http::Version, status: u16, fields: &[(&str, &str)]) -> RawHead {
        let v = if version == V10 { "1.0" } else { "1.1" };
        let mut bytes = format!("HTTP/{v} {status} X\r\n");
        for (n, v) in fields {
            bytes.push_str(&format!("{n}: {v}\r\n"));
        }
        bytes.push_str("\r\n");
        let mut buf = bytes::BytesMut::from(bytes.as_bytes());
        super::super::response_head::parse_raw(&mut buf)
            .unwrap()
            .unwrap()
    }

    const V11: http::Version = http::Version::HTTP_11;
    const V10: http::Version = http::Version::HTTP_10;

    #[test]
    fn keep_alive_by_version_and_connection() {
        let cl = ("content-length", "1");
        assert!(
            of(&mut head(V11, 200, &[cl]), false, false)
                .unwrap()
                .keep_alive
        );
        assert!(
            !of(&mut head(V11, 200, &[cl]), false, true)
                .unwrap()
                .keep_alive
        );
        assert!(
            !of(&mut head(V10, 200, &[cl]), false, false)
                .unwrap()
                .keep_alive
        );
        let ka = ("connection", "Keep-Alive");
        assert!(
            of(&mut head(V10, 200, &[cl, ka]), false, false)
                .unwrap()
                .keep_alive
        );
        let close = ("connection", "foo, close");
        assert!(
            !of(&mut head(V11, 200, &[cl, close]), false, false)
                .unwrap()
                .keep_alive
        );
        // No length: close-delimited, never reused.
        let f = of(&mut head(V11, 200, &[]), false, false).unwrap();
        assert!(!f.keep_alive && f.body.close_delimited());
    }

    #[test]
    fn chunked_wins_over_content_length_and_closes() {
        let mut h = head(
            V11,
            200,
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
        );
        let f = of(&mut h, false, false).unwrap();
        assert!(!f.keep_alive);
        assert!(!f.body.done() && !f.body.close_delimited());
        assert!(!h.contains(Name::ContentLength));
        assert!(h.contains(Name::TransferEncoding));
    }

    #[test]
    fn conflicting_or_bad_lengths_fail() {
        for v in [
            &["1", "2"][..],
            &["1, 2"],
            &["-1"],
            &["+1"],
            &["1x"],
            &[""],
            &["99999999999999999999999"],
        ] {
            let fields: Vec<_> = v.iter().map(|v| ("content-length", *v)).collect();
            assert!(
                of(&mut head(V11, 200, &fields), false, false).is_err(),
                "{v:?}"
            );
        }
        let same = [("content-length", "2"), ("content-length", "2, 2")];
        assert!(of(&mut head(V11, 200, &same), false, false).is_ok());
    }

    #[test]
    fn a_built_head_is_framed_as_the_same_head_kept_raw() {
        use super::super::response_head::{parse, Case};
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: a\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
            b"HTTP/1.1 304 OK\r\nContent-Length: 9\r\n\r\n",
        ] {
            let mut raw_buf = bytes::BytesMut::from(bytes);
            let mut raw = super::super::response_head::parse_raw(&mut raw_buf)
                .unwrap()
                .unwrap();
            let mut built = parse(&mut bytes::BytesMut::from(bytes), Case::Kept)
                .unwrap()
                .unwrap();
            let (a, b) = (
                of(&mut raw, false, false).unwrap(),
                of(&mut *built, false, false).unwrap(),
            );
            assert_eq!(a.keep_alive, b.keep_alive, "{bytes:?}");
            assert_eq!(a.body.done(), b.body.done(), "{bytes:?}");
            assert_eq!(
                a.body.close_delimited(),
                b.body.close_delimited(),
                "{bytes:?}"
            );
            assert_eq!(
                raw.has(Name::ContentLength),
                built.has(Name::ContentLength),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn bodiless_responses() {
        let cl = ("content-length", "10");
        assert!(of(&mut head(V11, 200, &[cl]), true, false)
            .unwrap()
            .body
            .done());
        assert!(of(&mut head(V11, 204, &[]), false, false)
            .unwrap()
            .body
            .done());
        assert!(of(&mut head(V11, 304, &[cl]), false, false)
            .unwrap()
            .body
            .done());
    }

    #[test]
    fn transfer_coding_not_chunked_is_close_delimited() {
        let f = of(
            &mut head(V11, 200, &[("transfer-encoding", "chunked, gzip")]),
            false,
            false,
        )
        .unwrap();
        assert!(f.body.close_delimited() && !f.keep_alive);
        let f = of(
            &mut head(V10, 200, &[("transfer-encoding", "chunked")]),
            false,
            false,
        )
        .unwrap();
        assert!(!f.keep_alive);
    }
}
