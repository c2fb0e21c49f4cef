//! The response on the wire: its head serialised from a [`ResponseHeader`], or from an
//! HTTP/1 origin's bytes ([`RawHead`]: a response no filter read), into the session's
//! own buffer (kept for the session's life), with the `Date` and `Connection` lines a
//! final response gets written as bytes rather than inserted into the head's maps; then
//! its body, framed as Pingora's session frames it (no body for `HEAD`,
//! `204`, `304`; chunked when the final transfer coding is; up to its
//! `Content-Length`; else until close, and the connection is not kept).
//!
//! Writes: a head with a `Content-Length` body is held until the body's first bytes (or
//! its end) so that a small head and body leave in one write; every other head is
//! written and flushed at once (an informational one, or a streamed body's, which the
//! client must see before the body comes). Each chunk of a chunked or close-delimited
//! body is flushed as it comes. Every write waits at most the write timeout.

use std::io::IoSlice;

use bytes::Bytes;
use pingora::http::{HeaderNameVariant, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::http::error_resp::gen_error_response;
use pingora::protocols::Stream;
use pingora::ErrorType;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use super::Session;
use crate::forward::h1::deadline::Deadline;
use crate::forward::h1::framing::{self, Head};
use crate::forward::h1::raw_head::{Name, RawHead};

/// Body bytes copied after the held head or a chunk-size line so that both leave in one
/// write; a longer body goes with them in one vectored write.
const INLINE: usize = 16 * 1024;

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Pingora's error for a body ended short of its `Content-Length`.
const PREMATURE_BODY_END: ErrorType = ErrorType::new("PrematureBodyEnd");

/// Where the response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// No final response head yet.
    NotStarted,
    /// This many bytes of a `Content-Length` body are still to come.
    Length(u64),
    /// Chunked; the last chunk not written yet.
    Chunked,
    /// Until the connection closes.
    UntilClose,
    /// Complete (or none).
    Done,
}

/// The response's state.
pub(super) struct Response {
    /// What is to be written next: a head, a chunk-size line. Kept for the session's
    /// life (cleared, not freed, after each write).
    out: Vec<u8>,
    /// `out` holds a final head with a `Content-Length` body, not written yet.
    held: bool,
    writer: Writer,
    /// The status of the last head written (or held): a final one, or an informational
    /// one before it.
    written: Option<http::StatusCode>,
    /// Body payload bytes written.
    sent: usize,
}

impl Response {
    /// No response yet, its head to be written into `out` (a buffer kept from the
    /// connection's last response: [`super::Kept`]).
    pub(super) fn with_buffer(mut out: Vec<u8>) -> Self {
        out.clear();
        Response {
            out,
            held: false,
            writer: Writer::NotStarted,
            written: None,
            sent: 0,
        }
    }

    /// The buffer, for the connection's next response.
    pub(super) fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

impl Default for Response {
    fn default() -> Self {
        Self::with_buffer(Vec::new())
    }
}

impl Session {
    /// Writes `100 Continue` when no response head was written yet (once).
    pub async fn write_continue(&mut self) -> Result<()> {
        if self.response.written.is_some() {
            return Ok(());
        }
        let head = ResponseHeader::build(100, Some(0))?;
        self.write_response_header(Box::new(head), false).await
    }

    /// Writes a response head; `end`: the response has no body past it. An
    /// informational head (1xx but 101) is written and flushed, and a final one is
    /// still expected; a second final head is ignored (`Ok`). A final head gets
    /// `Date` (the current one) and `Connection` (`keep-alive` or `close`) lines in
    /// place of any it holds, and its body's framing: see the module docs.
    ///
    /// As Pingora's session, a final head written before the request body is read
    /// whole turns keep-alive off. An informational one does not (Pingora's does): a
    /// `100 Continue` asks for the body, which is then read, and whatever of it is
    /// left unread is drained before the connection is reused ([`Session::finish`]),
    /// as nginx keeps a connection after `100 Continue`. A `101` (upgrades are not
    /// served here) turns it off and its body, if any, is close-delimited.
    pub async fn write_response_header(
        &mut self,
        head: Box<ResponseHeader>,
        end: bool,
    ) -> Result<()> {
        self.write_head(&*head, end, encode).await
    }

    /// [`Self::write_response_header`] for a final head kept as the bytes an HTTP/1
    /// origin sent ([`RawHead`]): written from those bytes, with the same `Date` and
    /// `Connection` lines and the same framing.
    pub async fn write_raw_head(&mut self, head: Box<RawHead>, end: bool) -> Result<()> {
        self.write_head(&*head, end, encode_raw).await
    }

    /// [`Self::write_response_header`] for a head of either kind, framed through what
    /// [`framing::Head`] reads of it and written by `encode`.
    async fn write_head<H: Head>(
        &mut self,
        head: &H,
        end: bool,
        encode: fn(&H, Option<bool>, &mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let code = head.status();
        if self.final_head_written() {
            tracing::warn!(
                status = code.as_u16(),
                "response head already written: ignored"
            );
            return Ok(());
        }
        let interim = code.is_informational() && code != 101;
        let status = code.as_u16();
        if !interim && (self.request.is_none() || !self.is_body_done()) {
            self.keepalive = None;
        }
        self.response.out.clear();
        self.response.held = false;
        if interim {
            encode(head, None, &mut self.response.out)?;
            self.send(&[], &[], true, "writing an informational response head")
                .await?;
            self.response.written = Some(code);
            return Ok(());
        }
        let head_request = self
            .request
            .as_ref()
            .is_some_and(|r| r.method == http::Method::HEAD);
        let writer = if head_request || status == 204 || status == 304 {
            Writer::Done
        } else if status == 101 {
            Writer::UntilClose
        } else if framing::chunked_last(head.values(Name::TransferEncoding)) {
            Writer::Chunked
        } else {
            match framing::length_of(head.values(Name::ContentLength)) {
                Ok(Some(0)) => Writer::Done,
                Ok(Some(n)) => Writer::Length(n),
                Ok(None) => Writer::UntilClose,
                Err(e) => {
                    tracing::debug!(error = %e, "response Content-Length not valid: body until close");
                    Writer::UntilClose
                }
            }
        };
        if status == 101 || writer == Writer::UntilClose {
            self.keepalive = None;
        }
        encode(head, Some(self.keepalive.is_some()), &mut self.response.out)?;
        self.response.writer = writer;
        self.response.written = Some(code);
        if let Writer::Length(_) = writer {
            self.response.held = true;
            if end {
                return self.write_body(None, true).await;
            }
            return Ok(());
        }
        let mut suffix: &[u8] = &[];
        if end {
            if writer == Writer::Chunked {
                suffix = LAST_CHUNK;
            }
            self.response.writer = Writer::Done;
        }
        self.send(&[], suffix, true, "writing the response head")
            .await
    }

    /// Writes a piece of the response body (`data`), framed as its head said, and ends
    /// the body when `end`: the last chunk of a chunked body; a `Content-Length` body
    /// ended short is an error (`PrematureBodyEnd`, as Pingora's session) and the
    /// connection is not kept. Bytes past the `Content-Length`, and any body of a
    /// response that has none, are dropped. Ignored before a final head.
    pub async fn write_body(&mut self, data: Option<Bytes>, end: bool) -> Result<()> {
        self.put_body(data.unwrap_or_default(), end, false).await
    }

    /// Writes a piece of a streamed response body (as [`Self::write_body`], the body
    /// not ended) and flushes it: the client gets it before the next piece is read
    /// from the origin.
    pub async fn write_body_flushed(&mut self, data: Bytes) -> Result<()> {
        self.put_body(data, false, true).await
    }

    /// [`Self::write_body`]; `flush`: flush what is written (a held head too) even
    /// where the framing would let it wait (a `Content-Length` body not complete).
    async fn put_body(&mut self, data: Bytes, end: bool, flush: bool) -> Result<()> {
        match self.response.writer {
            Writer::NotStarted | Writer::Done => Ok(()),
            Writer::Length(left) => {
                let n = (data.len() as u64).min(left) as usize;
                if n == 0 && !end && !flush {
                    // Nothing to add: a held head waits for the body's first bytes.
                    return Ok(());
                }
                if n < data.len() {
                    tracing::warn!(
                        left,
                        offered = data.len(),
                        "response body past its Content-Length dropped"
                    );
                }
                let left = left - n as u64;
                let complete = left == 0;
                self.response.writer = if complete || end {
                    Writer::Done
                } else {
                    Writer::Length(left)
                };
                // Pingora flushes a `Content-Length` body once it is written whole.
                self.send(
                    &data[..n],
                    &[],
                    complete || end || flush,
                    "writing the response body",
                )
                .await?;
                self.response.sent += n;
                if end && !complete {
                    self.keepalive = None;
                    return Err(Error::explain(
                        PREMATURE_BODY_END,
                        format!("response body ended {left} bytes short of its Content-Length"),
                    ));
                }
                Ok(())
            }
            Writer::Chunked => {
                let mut suffix: &[u8] = if data.is_empty() { &[] } else { b"\r\n" };
                if !data.is_empty() {
                    // Uppercase hex, as Pingora writes the size.
                    let _ = std::io::Write::write_fmt(
                        &mut self.response.out,
                        format_args!("{:X}\r\n", data.len()),
                    );
                }
                if end {
                    self.response.writer = Writer::Done;
                    suffix = if data.is_empty() {
                        LAST_CHUNK
                    } else {
                        b"\r\n0\r\n\r\n"
                    };
                } else if data.is_empty() {
                    // An empty chunk would end the body.
                    return Ok(());
                }
                self.send(&data, suffix, true, "writing the response body")
                    .await?;
                self.response.sent += data.len();
                Ok(())
            }
            Writer::UntilClose => {
                if end {
                    self.response.writer = Writer::Done;
                }
                self.send(&data, &[], true, "writing the response body")
                    .await?;
                self.response.sent += data.len();
                Ok(())
            }
        }
    }

    /// The status of the final response head written (also when held for its body's
    /// first bytes), or of the last informational one before it.
    pub fn written_status(&self) -> Option<http::StatusCode> {
        self.response.written
    }

    /// Response body payload bytes written (framing not counted).
    pub fn body_bytes_sent(&self) -> usize {
        self.response.sent
    }

    /// Answers the request with Pingora's error response for `code` (`Content-Length:
    /// 0`), as Pingora's `ServerSession::respond_error` for HTTP/1: keep-alive off, and
    /// nothing written when a final response already was.
    pub async fn respond_error(&mut self, code: u16) -> Result<()> {
        self.keepalive = None;
        if self.final_head_written() {
            return Ok(());
        }
        let head = gen_error_response(code);
        self.write_response_header(Box::new(head), true).await
    }

    /// Whether a final head (not an informational one, or a `101`) was written: no
    /// other head can follow it.
    fn final_head_written(&self) -> bool {
        self.response
            .written
            .is_some_and(|w| !w.is_informational() || w == 101)
    }

    /// Ends the response body if its end was not given (a held head is written); true
    /// when the response is then complete.
    pub(super) async fn finish_response(&mut self) -> bool {
        match self.response.writer {
            Writer::NotStarted => false,
            Writer::Done => !self.response.held,
            _ => match self.write_body(None, true).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "response not finished");
                    false
                }
            },
        }
    }

    /// Writes what `out` holds, then `data`, then `suffix`, as one write when `data` is
    /// short (copied after `out`), else as one vectored write; flushes when `flush`.
    /// All of it within the write timeout. `out` is cleared and nothing is held after.
    async fn send(
        &mut self,
        data: &[u8],
        suffix: &[u8],
        flush: bool,
        what: &'static str,
    ) -> Result<()> {
        self.response.held = false;
        let out = &mut self.response.out;
        let parts: [&[u8]; 3] = if data.len() <= INLINE {
            out.extend_from_slice(data);
            out.extend_from_slice(suffix);
            [out.as_slice(), &[], &[]]
        } else {
            [out.as_slice(), data, suffix]
        };
        let result = transmit(
            &mut self.stream,
            &mut self.deadline,
            self.write_timeout,
            parts,
            flush,
            what,
        )
        .await;
        self.response.out.clear();
        if result.is_err() {
            self.keepalive = None;
        }
        result
    }
}

/// Writes `parts` in order (as few writes as the stream takes), flushes when `flush`;
/// within `limit`.
async fn transmit(
    stream: &mut Stream,
    deadline: &mut Deadline,
    limit: Option<Duration>,
    parts: [&[u8]; 3],
    flush: bool,
    what: &'static str,
) -> Result<()> {
    let write = async move {
        let mut slices = parts.map(IoSlice::new);
        // Without the empty ones at either end: one part left is a plain write.
        let used = slices
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1);
        let mut left: &mut [IoSlice<'_>] = &mut slices[..used];
        IoSlice::advance_slices(&mut left, 0);
        while !left.is_empty() {
            let n = if left.len() == 1 {
                stream.write(&left[0]).await?
            } else {
                stream.write_vectored(left).await?
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut left, n);
        }
        if flush {
            stream.flush().await?;
        }
        std::io::Result::Ok(())
    };
    let result = match limit {
        Some(t) => match deadline.within(t, write).await {
            Some(r) => r,
            None => {
                return Err(Error::explain(
                    ErrorType::WriteTimedout,
                    format!("{what}: no progress within {t:?}"),
                ))
            }
        },
        None => write.await,
    };
    result.map_err(|e| Error::because(ErrorType::WriteError, what, e))
}

/// Serialises `head` into `out` as Pingora's session writes it: the status line (the
/// head's version, its code, its reason phrase or the canonical one), the fields with
/// their case, the empty line. For a final response (`connection`: whether the
/// connection is kept), the `Date` line carries the current date and `Connection` says
/// `keep-alive` or `close`: each where the head holds its first such field (any
/// further one is dropped), else appended in that order: the same bytes as Pingora's
/// `insert_header` of both then writing the head.
fn encode(head: &ResponseHeader, connection: Option<bool>, out: &mut Vec<u8>) -> Result<()> {
    let version: &[u8] = match head.version {
        http::Version::HTTP_09 => b"HTTP/0.9 ",
        http::Version::HTTP_10 => b"HTTP/1.0 ",
        http::Version::HTTP_11 => b"HTTP/1.1 ",
        _ => {
            return Err(Error::explain(
                ErrorType::WriteError,
                "serializing response header: not an HTTP/1 version",
            ))
        }
    };
    out.extend_from_slice(version);
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    if let Some(reason) = head.get_reason_phrase() {
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let Some(keep) = connection else {
        head.header_to_h1_wire(out);
        out.extend_from_slice(b"\r\n");
        return Ok(());
    };
    let mut fields = Fields::new(keep);
    head.map(|name, value| {
        let name = match name {
            HeaderNameVariant::Case(n) => n.as_slice(),
            HeaderNameVariant::Titled(n) => n.as_bytes(),
        };
        fields.line(out, Name::of(name), name, value.as_bytes());
        Ok(())
    })?;
    fields.end(out);
    Ok(())
}

/// A final head kept as an HTTP/1 origin's bytes on the wire, as [`encode`] writes the
/// same head built into a [`ResponseHeader`]: `HTTP/1.1` (the version the proxy gives
/// every head it sends on), the origin's reason phrase (else the status's own, as
/// `ResponseHeader::get_reason_phrase`), then its fields in order as the origin
/// spelled them.
fn encode_raw(head: &RawHead, connection: Option<bool>, out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    match head.reason() {
        Some(r) => out.extend_from_slice(r),
        None => {
            if let Some(r) = head.status.canonical_reason() {
                out.extend_from_slice(r.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    match connection {
        Some(keep) => {
            let mut fields = Fields::new(keep);
            head.each(|class, name, value| fields.line(out, class, name, value));
            fields.end(out);
        }
        None => {
            head.each(|_, name, value| field_line(out, name, value));
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(())
}

/// The field lines of a final head being written: `Date` and `Connection` written
/// once each, in place of the first line of their name, or after the others.
struct Fields {
    keep: bool,
    date: bool,
    connection: bool,
}

impl Fields {
    fn new(keep: bool) -> Self {
        Fields {
            keep,
            date: false,
            connection: false,
        }
    }

    /// One field line of the head (its name of class `class`).
    #[inline]
    fn line(&mut self, out: &mut Vec<u8>, class: Name, name: &[u8], value: &[u8]) {
        match class {
            Name::Date => {
                if !self.date {
                    self.date = true;
                    date_line(out);
                }
            }
            Name::Connection => {
                if !self.connection {
                    self.connection = true;
                    connection_line(out, self.keep);
                }
            }
            _ => field_line(out, name, value),
        }
    }

    /// The lines not written yet, and the empty line that ends the head.
    fn end(self, out: &mut Vec<u8>) {
        if !self.date {
            date_line(out);
        }
        if !self.connection {
            connection_line(out, self.keep);
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[inline]
fn field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `Date: <now>` (the name as Pingora's `insert_header` gives it).
fn date_line(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(get_cached_date().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn connection_line(out: &mut Vec<u8>, keep: bool) {
    out.extend_from_slice(if keep {
        b"Connection: keep-alive\r\n"
    } else {
        b"Connection: close\r\n"
    });
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn head(status: u16, fields: &[(&str, &str)]) -> Box<ResponseHeader> {
        let mut h = ResponseHeader::build(status, None).unwrap();
        for (n, v) in fields {
            h.append_header(n.to_string(), *v).unwrap();
        }
        Box::new(h)
    }

    /// `got` without the value of its `Date` line (checked to be one date).
    fn undated(got: &[u8]) -> String {
        let text = String::from_utf8(got.to_vec()).unwrap();
        let Some(at) = text.find("Date: ") else {
            return text;
        };
        let end = at + text[at..].find("\r\n").unwrap();
        assert_eq!(end - at - 6, 29, "a date: {text}");
        format!("{}Date: *{}", &text[..at], &text[end..])
    }

    /// An origin's head as [`RawHead`], its `edit` applied.
    fn raw(bytes: &[u8], edit: impl FnOnce(&mut RawHead)) -> Box<RawHead> {
        let mut buf = bytes::BytesMut::from(bytes);
        let mut h = crate::forward::h1::response_head::parse_raw(&mut buf)
            .unwrap()
            .unwrap();
        edit(&mut h);
        Box::new(h)
    }

    #[test]
    fn a_raw_head_is_written_as_the_same_head_built() {
        use crate::forward::h1::response_head::{build, Case};
        type Example = (&'static [u8], fn(&mut RawHead));
        let heads: [Example; 8] = [
            (b"HTTP/1.1 200 OK\r\nX-A: 1\r\ncontent-length: 2\r\n\r\n", |_| {}),
            (
                b"HTTP/1.1 200 Fine\r\nDATE: old\r\nSet-Cookie: a\r\nset-cookie: b\r\nConnection: close\r\nconnection: x\r\ndate: older\r\n\r\n",
                |_| {},
            ),
            // The framing's and the proxy's edits.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-Z: z\r\n\r\n",
                |h| h.remove(Name::ContentLength),
            ),
            (b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", |h| h.append_chunked()),
            // No reason phrase, an empty one, one with obs-text: written empty, as
            // Pingora keeps them; a status without a canonical reason.
            (b"HTTP/1.1 200\r\nX-A: 1\r\n\r\n", |_| {}),
            (b"HTTP/1.1 404 \r\n\r\n", |_| {}),
            (b"HTTP/1.1 200 \xc7a va\r\nX-A: 1\r\n\r\n", |_| {}),
            (b"HTTP/1.1 599 Odd\r\nx-b: \t2 \r\nEmpty:\r\n\r\n", |_| {}),
        ];
        for (bytes, edit) in heads {
            for keep in [true, false] {
                let r = raw(bytes, edit);
                let mut built = build(&r, Case::Kept).unwrap();
                built.set_version(http::Version::HTTP_11);
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                encode_raw(&r, Some(keep), &mut ours).unwrap();
                encode(&built, Some(keep), &mut theirs).unwrap();
                assert_eq!(undated(&ours), undated(&theirs), "{bytes:?}");
            }
        }
        // Where they differ: a name repeated apart from its first line keeps its place
        // (as nginx forwards it); Pingora's map puts it beside the first.
        let r = raw(
            b"HTTP/1.1 200 OK\r\nX-B: 1\r\nx-a: 2\r\nx-b: 3\r\n\r\n",
            |_| {},
        );
        let mut ours = Vec::new();
        encode_raw(&r, Some(true), &mut ours).unwrap();
        assert_eq!(
            undated(&ours),
            "HTTP/1.1 200 OK\r\nX-B: 1\r\nx-a: 2\r\nx-b: 3\r\nDate: *\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn heads_are_the_bytes_pingora_writes() {
        let mut h = head(
            200,
            &[
                ("x-a", "1"),
                ("DATE", "old"),
                ("Set-Cookie", "a"),
                ("set-cookie", "b"),
                ("date", "older"),
            ],
        );
        let mut ours = Vec::new();
        encode(&h, Some(true), &mut ours).unwrap();
        // Pingora's way: both inserted into the maps, then the head written.
        h.insert_header(http::header::DATE, get_cached_date())
            .unwrap();
        h.insert_header(http::header::CONNECTION, "keep-alive")
            .unwrap();
        let mut theirs = b"HTTP/1.1 200 OK\r\n".to_vec();
        h.header_to_h1_wire(&mut theirs);
        theirs.extend_from_slice(b"\r\n");
        assert_eq!(undated(&ours), undated(&theirs));
        // A head with a `Connection` and no `Date`, a reason of its own, HTTP/1.0.
        let mut h = head(599, &[("connection", "keep-alive"), ("X-B", "2")]);
        h.set_version(http::Version::HTTP_10);
        let mut ours = Vec::new();
        encode(&h, Some(false), &mut ours).unwrap();
        assert_eq!(
            undated(&ours),
            "HTTP/1.0 599 \r\nConnection: close\r\nX-B: 2\r\nDate: *\r\n\r\n"
        );
        let mut h = head(404, &[]);
        h.set_reason_phrase(Some("Gone Fishing")).unwrap();
        let mut ours = Vec::new();
        encode(&h, Some(true), &mut ours).unwrap();
        assert_eq!(
            undated(&ours),
            "HTTP/1.1 404 Gone Fishing\r\nDate: *\r\nConnection: keep-alive\r\n\r\n"
        );
        // A head without case (from an HTTP/2 upstream): names titled as Pingora's.
        let mut h = ResponseHeader::build_no_case(200, None).unwrap();
        h.append_header("content-type", "text/plain").unwrap();
        h.append_header("x-c", "3").unwrap();
        let mut ours = Vec::new();
        encode(&h, Some(true), &mut ours).unwrap();
        assert_eq!(
            undated(&ours),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nx-c: 3\r\nDate: *\r\nConnection: keep-alive\r\n\r\n"
        );
        // Not HTTP/1: refused.
        h.set_version(http::Version::HTTP_2);
        assert!(encode(&h, Some(true), &mut Vec::new()).is_err());
    }

    #[tokio::test]
    async fn a_small_response_leaves_in_one_write() {
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        let h = head(200, &[("Content-Length", "5"), ("X-Y", "z")]);
        s.write_response_header(h, false).await.unwrap();
        assert_eq!(s.written_status().unwrap(), 200);
        // Nothing to add yet: the head is still held.
        s.write_body(Some(Bytes::new()), false).await.unwrap();
        s.write_body(Some(Bytes::from_static(b"hello")), true)
            .await
            .unwrap();
        assert_eq!(s.body_bytes_sent(), 5);
        // One read gets all of it: it left in one write.
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(
            undated(&buf[..n]),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\nDate: *\r\nConnection: keep-alive\r\n\r\nhello"
        );
        assert!(s.finish().await.is_some());
    }

    #[tokio::test]
    async fn a_large_body_goes_with_its_head() {
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        let n = 100_000;
        s.write_response_header(head(200, &[("content-length", &n.to_string())]), false)
            .await
            .unwrap();
        let body = Bytes::from(vec![b'b'; n + 10]);
        let reader = tokio::spawn(async move { read_all(&mut c).await });
        s.write_body(Some(body), false).await.unwrap();
        assert_eq!(s.body_bytes_sent(), n);
        assert!(s.finish().await.is_some());
        let got = reader.await.unwrap();
        let at = memchr::memmem::find(&got, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(got.len() - at, n, "the length, not more");
    }

    #[tokio::test]
    async fn chunked_responses_stream_each_chunk() {
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(200, &[("Transfer-Encoding", "chunked")]), false)
            .await
            .unwrap();
        // The head is out before any body.
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(
            undated(&buf[..n]),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: *\r\nConnection: keep-alive\r\n\r\n"
        );
        s.write_body(Some(Bytes::from_static(b"first")), false)
            .await
            .unwrap();
        // The first chunk reaches the client before the second is given.
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"5\r\nfirst\r\n");
        s.write_body(Some(Bytes::new()), false).await.unwrap();
        s.write_body(Some(Bytes::from(vec![b'x'; 20_000])), false)
            .await
            .unwrap();
        s.write_body(Some(Bytes::from_static(b"end")), true)
            .await
            .unwrap();
        assert_eq!(s.body_bytes_sent(), 20_008);
        assert!(s.finish().await.is_some());
        let got = read_all(&mut c).await;
        let want = [
            b"4E20\r\n".as_slice(),
            &[b'x'; 20_000],
            b"\r\n3\r\nend\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_chunked_end_without_data_is_the_last_chunk() {
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(200, &[("transfer-encoding", "chunked")]), false)
            .await
            .unwrap();
        s.write_body(Some(Bytes::from_static(b"ab")), false)
            .await
            .unwrap();
        // `finish` ends it.
        assert!(s.finish().await.is_some());
        let got = undated(&read_all(&mut c).await);
        assert!(got.ends_with("\r\n\r\n2\r\nab\r\n0\r\n\r\n"), "{got}");
    }

    #[tokio::test]
    async fn bodies_of_head_204_and_304_are_dropped() {
        for (request, status) in [
            ("HEAD / HTTP/1.1\r\n\r\n", 200),
            ("GET / HTTP/1.1\r\n\r\n", 204),
            ("GET / HTTP/1.1\r\n\r\n", 304),
        ] {
            let (mut s, mut c) = sent(request.as_bytes()).await;
            assert!(s.read_request().await.unwrap());
            let h = head(status, &[("Content-Length", "4")]);
            s.write_response_header(h, false).await.unwrap();
            s.write_body(Some(Bytes::from_static(b"body")), true)
                .await
                .unwrap();
            assert_eq!(s.body_bytes_sent(), 0);
            assert!(s.finish().await.is_some(), "{request} {status}");
            let got = undated(&read_all(&mut c).await);
            assert!(got.ends_with("Connection: keep-alive\r\n\r\n"), "{got}");
        }
    }

    #[tokio::test]
    async fn a_body_without_length_is_close_delimited() {
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(200, &[]), false)
            .await
            .unwrap();
        assert!(!s.will_keepalive());
        s.write_body(Some(Bytes::from_static(b"abc")), true)
            .await
            .unwrap();
        assert!(s.finish().await.is_none());
        let got = undated(&read_all(&mut c).await);
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nDate: *\r\nConnection: close\r\n\r\nabc"
        );
    }

    #[tokio::test]
    async fn a_short_length_body_is_an_error_and_closes() {
        let (mut s, _c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(200, &[("content-length", "10")]), false)
            .await
            .unwrap();
        let e = s
            .write_body(Some(Bytes::from_static(b"abc")), true)
            .await
            .unwrap_err();
        assert_eq!(e.etype(), &PREMATURE_BODY_END);
        assert!(s.finish().await.is_none());
        // Never ended: not reusable either.
        let (mut s, _c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(200, &[("content-length", "10")]), false)
            .await
            .unwrap();
        assert!(s.finish().await.is_none());
    }

    #[tokio::test]
    async fn informational_heads_then_one_final() {
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(103, &[("Link", "</a>")]), false)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        s.write_response_header(head(200, &[("content-length", "0")]), true)
            .await
            .unwrap();
        // A second final head is ignored.
        s.write_response_header(head(500, &[("content-length", "0")]), true)
            .await
            .unwrap();
        s.respond_error(502).await.unwrap();
        assert_eq!(s.written_status().unwrap(), 200);
        assert!(
            s.finish().await.is_none(),
            "respond_error turned keep-alive off"
        );
        let got = undated(&read_all(&mut c).await);
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nDate: *\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn continue_once_then_the_body() {
        let (mut s, mut c) =
            sent(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_continue().await.unwrap();
        s.write_continue().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
        c.write_all(b"hello").await.unwrap();
        assert_eq!(s.read_body().await.unwrap().unwrap(), "hello");
        s.write_response_header(head(200, &[("content-length", "2")]), false)
            .await
            .unwrap();
        s.write_body(Some(Bytes::from_static(b"ok")), true)
            .await
            .unwrap();
        // The 100, written before the body was read, leaves keep-alive on (unlike
        // Pingora's session): the body was read after it.
        let (stream, _) = s.finish().await.expect("kept after 100 Continue");
        drop(stream);
        let got = undated(&read_all(&mut c).await);
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nDate: *\r\nConnection: keep-alive\r\n\r\nok"
        );
    }

    #[tokio::test]
    async fn respond_error_writes_pingoras_answer() {
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
        assert_eq!(
            s.read_request().await.unwrap_err().etype(),
            &ErrorType::InvalidHTTPHeader
        );
        s.respond_error(400).await.unwrap();
        assert!(s.finish().await.is_none());
        let got = undated(&read_all(&mut c).await);
        assert_eq!(
            got,
            "HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nDate: *\r\nContent-Length: 0\r\nCache-Control: private, no-store\r\nConnection: close\r\n\r\n"
        );
        // Before any head was read (a head the parser refused).
        let (mut s, mut c) = sent(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").await;
        assert!(s.read_request().await.is_err());
        s.respond_error(400).await.unwrap();
        let got = undated(&read_all(&mut c).await);
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    }

    #[tokio::test]
    async fn a_response_before_the_body_is_read_closes() {
        let (mut s, mut c) = sent(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(413, &[("content-length", "0")]), true)
            .await
            .unwrap();
        assert!(!s.will_keepalive());
        assert!(s.finish().await.is_none());
        let got = undated(&read_all(&mut c).await);
        assert!(got.contains("Connection: close\r\n"), "{got}");
    }

    #[tokio::test]
    async fn the_rest_of_the_body_is_drained_for_the_next_request() {
        let (mut s, mut c) = sent(b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc").await;
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.read_body().await.unwrap().unwrap(), "abc");
        // A head written before the body is read whole turns keep-alive off (as
        // Pingora's session); a caller may turn it on again, and then the rest of the
        // body is drained for the next request.
        s.write_response_header(head(200, &[("content-length", "0")]), true)
            .await
            .unwrap();
        assert!(!s.will_keepalive());
        s.set_keepalive(Some(0));
        c.write_all(b"def").await.unwrap();
        let (stream, kept) = s.finish().await.expect("drained and reusable");
        c.write_all(b"GET /next HTTP/1.1\r\n\r\n").await.unwrap();
        let mut s = Session::after(stream, bytes::BytesMut::new(), kept);
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.req_header().raw_path(), b"/next");
        // A body cut short while drained: not reusable.
        let (mut s, c) = sent(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.write_response_header(head(200, &[("content-length", "0")]), true)
            .await
            .unwrap();
        s.set_keepalive(Some(0));
        drop(c);
        assert!(s.finish().await.is_none());
    }

    #[tokio::test]
    async fn bytes_past_the_request_are_the_next_requests_start() {
        let (mut s, mut c) = sent(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        assert!(s.will_keepalive());
        s.write_response_header(head(200, &[("content-length", "0")]), true)
            .await
            .unwrap();
        let (stream, mut kept) = s.finish().await.expect("reusable");
        let next = kept.take_pipelined();
        assert_eq!(&next[..], b"GET /2 HTTP/1.1\r\n\r\n");
        let mut s = Session::after(stream, next, kept);
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.req_header().raw_path(), b"/2");
        s.set_keepalive(None);
        s.write_response_header(head(204, &[]), true).await.unwrap();
        assert!(s.finish().await.is_none());
        let got = undated(&read_all(&mut c).await);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("HTTP/1.1 204 No Content\r\n"), "{got}");
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_times_the_write_out() {
        let (mut s, _c) = sent(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        s.set_write_timeout(Some(Duration::from_millis(100)));
        let n = 64 << 20;
        s.write_response_header(head(200, &[("content-length", &n.to_string())]), false)
            .await
            .unwrap();
        let e = s
            .write_body(Some(Bytes::from(vec![0u8; n])), true)
            .await
            .unwrap_err();
        assert_eq!(e.etype(), &ErrorType::WriteTimedout);
        assert!(!s.will_keepalive());
    }
}
