//! The request head: read from the connection, parsed with `httparse` as Pingora's
//! session parses it (default settings, at most [`MAX_HEADERS`] fields, a head longer
//! than [`MAX_HEAD`] refused), built into Pingora's [`RequestHeader`] once (names with
//! their case, values sharing the bytes read, no copy), then checked once for what
//! Pingora's `validate_request` refuses: an ambiguous authority, conflicting or
//! malformed `Content-Length` values, `Transfer-Encoding` on HTTP/1.0 or with a final
//! coding that is not `chunked`. Everything to answer 400 to is `InvalidHTTPHeader`.

use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderValue;
use pingora::http::{IntoCaseHeaderName, RequestHeader};
use pingora::prelude::*;
use pingora::protocols::http::authority::validate_request_authority;
use pingora::protocols::http::v1::common::is_upgrade_req;
use pingora::ErrorType;

use super::{requested_keepalive, Session};
use crate::forward::h1::framing;
use crate::forward::h1::response_body::Decoder;
use crate::forward::h1::response_head::{span, Span};

/// Most header lines a request head may carry (as Pingora's session).
pub const MAX_HEADERS: usize = 256;

/// Largest request head read (as Pingora's session): once more bytes than this are
/// buffered without a complete head, it is refused.
pub const MAX_HEAD: usize = 1_048_575;

/// Room made in the read buffer before a read of the head.
const HEAD_READ: usize = 4 * 1024;

/// Longest request line shown in a log line about a refused head.
const LOGGED: usize = 256;

impl Session {
    /// Reads and checks the request head. Ok(false): the client closed before sending a byte.
    /// Errors are `ErrorType::InvalidHTTPHeader` for everything the caller must answer 400 to.
    ///
    /// Each read waits at most: `s` seconds when keep-alive was set to `Some(s)` (`s > 0`)
    /// before it, and the end of that wait is a quiet close (`Ok(false)`); no limit for
    /// `Some(0)`; else the read timeout (`ReadTimedout`). A client that closes or
    /// fails mid-head: `ConnectionClosed` / `ReadError` (as Pingora's session).
    pub async fn read_request(&mut self) -> Result<bool> {
        let (limit, quiet) = match self.keepalive {
            Some(0) => (None, false),
            Some(s) => (Some(Duration::from_secs(s)), true),
            None => (self.read_timeout, false),
        };
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse(&mut self.buf)? {
                    self.take_head(head)?;
                    return Ok(true);
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        format!("request head larger than {MAX_HEAD} bytes"),
                    ));
                }
            }
            let room = if self.buf.capacity() - self.buf.len() < HEAD_READ / 4 {
                HEAD_READ
            } else {
                self.buf.capacity() - self.buf.len()
            };
            let read = self.read_some(room, limit).await;
            let already = self.buf.len();
            match read {
                None if quiet => {
                    tracing::debug!("keep-alive wait for a request head ended");
                    return Ok(false);
                }
                None => {
                    return Err(Error::explain(
                        ErrorType::ReadTimedout,
                        "reading the request head",
                    ))
                }
                Some(Ok(0)) if already == 0 => return Ok(false),
                Some(Ok(0)) => {
                    return Err(Error::explain(
                        ErrorType::ConnectionClosed,
                        format!(
                            "client closed while the request head was read ({already} bytes read)"
                        ),
                    ))
                }
                Some(Ok(_)) => {}
                // Nothing read yet: as a close (a reset idle keep-alive connection).
                Some(Err(_)) if already == 0 => return Ok(false),
                Some(Err(e)) => {
                    return Err(Error::because(
                        ErrorType::ReadError,
                        "reading the request head",
                        e,
                    ))
                }
            }
        }
    }

    /// Takes a parsed head as the request's, as Pingora's session does: with both
    /// framings, `Content-Length` is dropped and the connection closed after the
    /// request (RFC 9112 §6.1); keep-alive as the request asks; then the checks. The
    /// head is kept when a check fails, so that the 400 knows its request.
    fn take_head(&mut self, head: Head) -> Result<()> {
        let Head { mut header, raw } = head;
        let both = header.headers.contains_key(TRANSFER_ENCODING)
            && header.headers.contains_key(CONTENT_LENGTH);
        if both {
            header.remove_header(&CONTENT_LENGTH);
        }
        self.keepalive = if both {
            None
        } else {
            requested_keepalive(&header)
        };
        self.raw_head = raw;
        let body = body_framing(&header);
        self.request = Some(header);
        self.body.decoder = body?;
        Ok(())
    }

    /// The request head (panics before [`Self::read_request`] read one, as Pingora's
    /// session).
    pub fn req_header(&self) -> &RequestHeader {
        self.request.as_ref().expect("request head not read yet")
    }

    /// The request head, to edit (panics before [`Self::read_request`] read one).
    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        self.request.as_mut().expect("request head not read yet")
    }

    /// The request head's bytes as read (Pingora's `get_headers_raw_bytes`): empty
    /// before one is read.
    pub fn raw_head(&self) -> &Bytes {
        &self.raw_head
    }

    /// Whether the request asks for a protocol upgrade (as Pingora's: HTTP/1.1 with an
    /// `Upgrade` field).
    pub fn is_upgrade_req(&self) -> bool {
        self.request.as_ref().is_some_and(is_upgrade_req)
    }
}

/// A request head parsed off the buffer.
pub(super) struct Head {
    /// As Pingora's session builds it.
    pub header: RequestHeader,
    /// Its bytes.
    pub raw: Bytes,
}

/// The request head at the start of `buf`, when it is complete: split off `buf` (what
/// follows stays there, the body's start) and built. `Ok(None)`: more bytes needed.
pub(super) fn parse(buf: &mut BytesMut) -> Result<Option<Head>> {
    loop {
        match parse_once(buf)? {
            Ok(head) => return Ok(head),
            Err(e) => {
                // Pingora's session percent-encodes a request line's target when the
                // parser refuses a byte of it (a token or version error) and parses
                // again. Sluice's listener (`listener::target`) already refuses targets
                // with a space and encodes the bytes the URI type refuses, before the
                // session sees them; what is left to encode here is control bytes and
                // non-ASCII bytes in the target, as Pingora would.
                if matches!(e, httparse::Error::Token | httparse::Error::Version) {
                    if let Some(escaped) = escape_target(buf) {
                        *buf = escaped;
                        continue;
                    }
                }
                let shown = &buf[..buf.len().min(LOGGED)];
                tracing::debug!(error = %e, head = %shown.escape_ascii(), "request head refused");
                return Err(Error::because(
                    ErrorType::InvalidHTTPHeader,
                    "malformed request head",
                    e,
                ));
            }
        }
    }
}

/// One parse of the buffer: the head (`None`: more bytes needed), or what the parser
/// refused (the outer error: the head parsed but could not be built).
fn parse_once(buf: &mut BytesMut) -> Result<std::result::Result<Option<Head>, httparse::Error>> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Ok(None)),
        Err(e) => return Ok(Err(e)),
    };
    let fields: smallvec::SmallVec<[(Span, Span); 24]> = req
        .headers
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| (span(buf, h.name.as_bytes()), span(buf, h.value)))
        .collect();
    // As Pingora's session: the path as raw bytes (it may be other than UTF-8), the
    // number of fields as the maps' size hint.
    let mut header = RequestHeader::build(
        req.method.unwrap_or(""),
        req.path.unwrap_or("").as_bytes(),
        Some(req.headers.len()),
    )?;
    header.set_version(match req.version {
        Some(1) => http::Version::HTTP_11,
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_09,
    });
    let raw = buf.split_to(len).freeze();
    for ((ns, ne), (vs, ve)) in fields {
        let name = raw.slice(ns..ne).into_case_header_name();
        // SAFETY: `httparse` accepted this value with its default settings, which refuse
        // obs-folds in requests and every control byte but HTAB: its bytes are HTAB,
        // SP, visible ASCII or obs-text, the bytes `HeaderValue` allows (Pingora's
        // session takes them unchecked the same way).
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(raw.slice(vs..ve)) };
        header.append_header(name, value)?;
    }
    Ok(Ok(Some(Head { header, raw })))
}

/// `buf` with its request line's target percent-encoded where the parser refuses it
/// (control bytes, space, `"`, `<`, `>`, and non-ASCII bytes, as Pingora's session
/// encodes them), or `None` when the first line is no `METHOD target HTTP/d[.d]` line
/// or has nothing to encode.
fn escape_target(buf: &[u8]) -> Option<BytesMut> {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = &buf[..line_end];
    let method_end = line.iter().position(|&b| b == b' ')?;
    if method_end == 0
        || !line[..method_end]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    // The target runs to the last ` HTTP/<digit>` of the line.
    let rest = &line[method_end + 1..];
    let target_len = memchr::memmem::rfind_iter(rest, b" HTTP/")
        .find(|&at| rest.get(at + 6).is_some_and(u8::is_ascii_digit))?;
    if target_len == 0 {
        return None;
    }
    let target = &rest[..target_len];
    let refused = |b: u8| !(0x20..0x7f).contains(&b) || matches!(b, b' ' | b'"' | b'<' | b'>');
    if !target.iter().any(|&b| refused(b)) {
        return None;
    }
    let mut out = BytesMut::with_capacity(buf.len() + 32);
    out.extend_from_slice(&buf[..=method_end]);
    for &b in target {
        if refused(b) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.extend_from_slice(&[b]);
        }
    }
    out.extend_from_slice(&buf[method_end + 1 + target_len..]);
    Some(out)
}

/// The request body's framing, once the head passes Pingora's `validate_request`
/// checks: chunked when the final transfer coding is (any other is refused, as is a
/// transfer coding on HTTP/1.0), else its `Content-Length` (identical values, also in
/// comma lists, are one; differing or malformed ones are refused), else none (requests
/// are never close-delimited).
fn body_framing(req: &RequestHeader) -> Result<Decoder> {
    validate_request_authority(req)?;
    if req.headers.contains_key(TRANSFER_ENCODING) {
        if req.version == http::Version::HTTP_10 {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "HTTP/1.0 request with Transfer-Encoding",
            ));
        }
        if !framing::last_coding_is_chunked(&req.headers) {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "final Transfer-Encoding of the request is not chunked",
            ));
        }
        return Ok(Decoder::chunked());
    }
    Ok(Decoder::length(
        framing::content_length(&req.headers)?.unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn parsed(bytes: &[u8]) -> Result<Option<Head>> {
        parse(&mut BytesMut::from(bytes))
    }

    /// The error `read_request` gives for `request`, if any.
    async fn read_error(request: &[u8]) -> Option<ErrorType> {
        let (mut s, _c) = sent(request).await;
        s.set_read_timeout(Some(Duration::from_millis(300)));
        s.read_request().await.err().map(|e| e.etype().clone())
    }

    #[test]
    fn names_keep_case_and_values_are_shared() {
        let mut buf = BytesMut::from(
            &b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: a\r\nx-mixed-case: b\r\n\r\nbody"[..],
        );
        let head = parse(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"body");
        assert_eq!(head.header.method, http::Method::POST);
        assert_eq!(head.header.raw_path(), b"/p?q=1");
        assert_eq!(head.header.version, http::Version::HTTP_11);
        let mut wire = Vec::new();
        head.header.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"Host: h\r\nX-Mixed-Case: a\r\nx-mixed-case: b\r\n");
        assert_eq!(
            &head.raw[..],
            &b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: a\r\nx-mixed-case: b\r\n\r\n"[..]
        );
    }

    #[test]
    fn partial_heads_wait() {
        assert!(parsed(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
        assert!(parsed(b"GET / HT").unwrap().is_none());
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/3.0\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"\x01GET / HTTP/1.1\r\n\r\n",
        ] {
            let e = parsed(bad).err().unwrap_or_else(|| panic!("{bad:?}"));
            assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader, "{bad:?}");
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(parsed(&many).is_err());
    }

    #[test]
    fn control_bytes_in_the_target_are_encoded_as_pingora_does() {
        let head = parsed(b"GET /a\x01b\x7f HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.header.raw_path(), b"/a%01b%7F");
        assert!(head.raw.starts_with(b"GET /a%01b%7F HTTP/1.1\r\n"));
        // Nothing the parser refuses in the target: refused as it is.
        assert!(parsed(b"GET / HTTP/1.1 x\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn framing_errors_are_bad_heads() {
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert_eq!(
                read_error(bad).await,
                Some(ErrorType::InvalidHTTPHeader),
                "{}",
                bad.escape_ascii()
            );
        }
        // The head is kept for the 400.
        let (mut s, _c) = sent(b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").await;
        assert!(s.read_request().await.is_err());
        assert_eq!(s.req_header().raw_path(), b"/x");
    }

    #[tokio::test]
    async fn identical_lengths_are_one() {
        for ok in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
        ] {
            let (mut s, _c) = sent(ok).await;
            assert!(s.read_request().await.unwrap());
            assert!(!s.is_body_empty());
            assert_eq!(s.read_body().await.unwrap().unwrap(), "abc");
            assert_eq!(s.read_body().await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn both_framings_read_by_transfer_encoding_and_close() {
        let (mut s, _c) = sent(
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
        assert!(s.read_request().await.unwrap());
        assert!(!s.req_header().headers.contains_key(CONTENT_LENGTH));
        assert!(!s.will_keepalive());
        assert_eq!(s.read_body().await.unwrap().unwrap(), "abc");
        assert_eq!(s.read_body().await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_heads_are_refused() {
        let (mut s, mut c) = pair().await;
        let writer = tokio::spawn(async move {
            let _ = c.write_all(b"GET / HTTP/1.1\r\n").await;
            let line = [b"X-Filler: ".as_slice(), &[b'a'; 1000], b"\r\n"].concat();
            for _ in 0..1100 {
                if c.write_all(&line).await.is_err() {
                    break;
                }
            }
            c
        });
        let e = s.read_request().await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::InvalidHTTPHeader);
        drop(s);
        let _ = writer.await;
    }

    #[tokio::test]
    async fn closes_timeouts_and_the_keep_alive_wait() {
        // Closed before a byte: no request, no error.
        let (mut s, c) = pair().await;
        drop(c);
        assert!(!s.read_request().await.unwrap());
        // Closed mid-head.
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\n").await;
        c.shutdown().await.unwrap();
        let e = s.read_request().await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ConnectionClosed);
        // A slow head: the read timeout.
        assert_eq!(
            read_error(b"GET / HTTP/1.1\r\n").await,
            Some(ErrorType::ReadTimedout)
        );
        // The keep-alive wait set before the head: its end is a quiet close.
        let (mut s, _c) = pair().await;
        s.set_keepalive(Some(1));
        let start = std::time::Instant::now();
        assert!(!s.read_request().await.unwrap());
        assert!(start.elapsed() >= Duration::from_millis(900));
    }
}
