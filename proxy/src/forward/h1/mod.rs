//! Sluice's own HTTP/1 client for pool peers (issue #18): one request and its response
//! on one connection, then the connection back to [`super::pool`] only when it can
//! carry another. It replaces Pingora's HTTP/1 client session on this path, which
//! builds the response head and then has it cloned, allocates its buffers and a timing
//! digest per request, and boxes the request head; HTTP/2 peers stay on Pingora's.
//!
//! | job | module |
//! |---|---|
//! | the request head on the wire | [`request_head`] |
//! | the response head off the wire (`httparse`), owned | [`response_head`] |
//! | the response head as the bytes read, framed and written with no field map | [`raw_head`] |
//! | body framing and keep-alive from the response head | [`framing`] |
//! | the response body's framing (length, chunked, until close) | [`response_body`] |
//! | a connection's timer, one for all of its reads and writes, made when one waits | [`deadline`] |
//! | I/O, timeouts, the request body, 1xx, errors and retry flags | here |
//!
//! Errors keep the `ErrorType`s and retry flags of Pingora's session: a reused
//! connection that ends (or fails with an OS error) while the response head is read
//! is `RetryType::ReusedOnly` (the caller decides it with `decide_reuse`); a malformed
//! or oversized head is `InvalidHTTPHeader`; a broken chunked body `InvalidChunk`; a
//! body cut short `ConnectionClosed`; timeouts `ReadTimedout` / `WriteTimedout`.

pub mod deadline;
pub mod framing;
pub mod raw_head;
pub mod request_head;
pub mod response_body;
pub mod response_head;

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::Stream;
use pingora::{ErrorType, RetryType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use deadline::Deadline;
use response_body::{Decoder, Step};
use response_head::{Form, ResponseHead};

/// Room made in the read buffer before a read of the response head.
const HEAD_READ: usize = 4 * 1024;
/// Largest read of a response body (a `Content-Length` body reads no more than it has
/// left).
const BODY_READ: usize = 64 * 1024;
/// Read size of a body of unknown length (chunked framing, until close).
const CHUNK_READ: usize = 16 * 1024;
/// Largest read buffer parked with an idle connection ([`Client::into_reusable`]).
const PARKED_BUFFER: usize = 16 * 1024;
/// Informational (1xx) responses skipped before the final one at most; more is a flood
/// (502).
const MAX_INFORMATIONAL: usize = 16;

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestBody {
    /// This many bytes are still to be sent.
    Length(u64),
    /// Chunked; the last chunk not sent yet.
    Chunked,
    /// Sent whole.
    Done,
}

/// An idle connection and what it keeps for its next request: the client's read
/// buffer and its timer.
pub struct Idle {
    /// The connection.
    pub stream: Stream,
    buf: BytesMut,
    deadline: Deadline,
}

/// One request and its response on an HTTP/1 connection.
pub struct Client {
    stream: Stream,
    /// Bytes read and not consumed yet (and, before the response, the request head).
    buf: BytesMut,
    /// The connection's timer (its reads' and writes' deadlines).
    deadline: Deadline,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    request_body: RequestBody,
    /// The request was a `HEAD`: the response has no body.
    head_request: bool,
    /// The request asked to close the connection.
    close_asked: bool,
    /// The response body's framing, once the final head is read.
    body: Option<Decoder>,
    /// The connection may carry another request once the body is read.
    keep_alive: bool,
}

impl Client {
    /// A client on a new connection.
    pub fn new(stream: Stream) -> Self {
        Self::reusing(Idle {
            stream,
            buf: BytesMut::new(),
            deadline: Deadline::default(),
        })
    }

    /// A client on a parked connection, with the read buffer and timer it was parked
    /// with ([`Self::into_reusable`]): once nothing holds what the last response read
    /// into it, the buffer is reused in place (no allocation a request).
    pub fn reusing(idle: Idle) -> Self {
        let Idle {
            stream,
            mut buf,
            deadline,
        } = idle;
        buf.clear();
        Client {
            stream,
            buf,
            deadline,
            read_timeout: None,
            write_timeout: None,
            request_body: RequestBody::Done,
            head_request: false,
            close_asked: false,
            body: None,
            keep_alive: false,
        }
    }

    /// The longest wait for each read (head and body) and each write.
    pub fn set_timeouts(&mut self, read: Option<Duration>, write: Option<Duration>) {
        self.read_timeout = read;
        self.write_timeout = write;
    }

    /// Sends the request head (one write); the body framing follows its
    /// `Transfer-Encoding` (chunked last: chunked) or `Content-Length` (else none).
    pub async fn write_head(&mut self, req: &RequestHeader) -> Result<()> {
        self.request_body = request_framing(req);
        self.head_request = req.method == http::Method::HEAD;
        self.close_asked = framing::asks_close(&req.headers);
        request_head::encode(req, self.head_buffer())?;
        self.send_head().await
    }

    /// Sends the head Sluice forwards for the client's `req` unchanged but for its
    /// transport and the `added` metadata (one write, as [`Self::write_head`]; what is dropped and added:
    /// [`request_head::encode_forwarded`]).
    pub async fn write_forwarded_head<'a>(
        &mut self,
        req: &RequestHeader,
        has_body: bool,
        dropped: impl Fn(&http::HeaderName) -> bool,
        added: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<()> {
        let framed =
            request_head::encode_forwarded(req, has_body, &dropped, added, self.head_buffer())?;
        self.request_body = match framed {
            request_head::Framed::Chunked => RequestBody::Chunked,
            request_head::Framed::Length => declared_length(req),
        };
        self.head_request = req.method == http::Method::HEAD;
        self.close_asked = !dropped(&http::header::CONNECTION) && framing::asks_close(&req.headers);
        self.send_head().await
    }

    /// The buffer a request head is encoded into, emptied: one allocation for the head
    /// written and the response read.
    fn head_buffer(&mut self) -> &mut BytesMut {
        self.buf.clear();
        self.buf.reserve(HEAD_READ);
        &mut self.buf
    }

    /// Writes the head encoded in [`Self::head_buffer`]; the same allocation then reads
    /// the response.
    async fn send_head(&mut self) -> Result<()> {
        let head = std::mem::take(&mut self.buf);
        let written = self.write(&head, "request head").await;
        self.buf = head;
        self.buf.clear();
        written
    }

    /// Sends a piece of the request body (framed as the head said; bytes past a
    /// `Content-Length` are dropped, as Pingora's writer does).
    pub async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        match self.request_body {
            RequestBody::Done => Ok(()),
            RequestBody::Length(left) => {
                let n = (data.len() as u64).min(left) as usize;
                if n < data.len() {
                    tracing::warn!(
                        left,
                        offered = data.len(),
                        "request body past its Content-Length dropped"
                    );
                }
                self.request_body = match left - n as u64 {
                    0 => RequestBody::Done,
                    left => RequestBody::Length(left),
                };
                self.write(&data[..n], "request body").await
            }
            RequestBody::Chunked => {
                if data.is_empty() {
                    // An empty chunk would end the body.
                    return Ok(());
                }
                let mut frame = BytesMut::with_capacity(data.len() + 20);
                // Writing into a BytesMut cannot fail.
                let _ = write!(frame, "{:X}\r\n", data.len());
                frame.extend_from_slice(data);
                frame.extend_from_slice(b"\r\n");
                self.write(&frame, "request body").await
            }
        }
    }

    /// Ends the request body: the last chunk of a chunked one; a `Content-Length` body
    /// not sent whole is an error (`PrematureBodyEnd`, as Pingora's writer).
    pub async fn finish_body(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.request_body, RequestBody::Done) {
            RequestBody::Done => Ok(()),
            RequestBody::Chunked => self.write(b"0\r\n\r\n", "request body end").await,
            RequestBody::Length(left) => Err(Error::explain(
                ErrorType::new("PrematureBodyEnd"),
                format!("request body ended {left} bytes short of its Content-Length"),
            )),
        }
    }

    /// Reads the final response head in the form `form`: informational ones (1xx) are
    /// skipped, a `101` is an error (upgrades do not come this way), and the body's
    /// framing is set up (a `Content-Length` beside a transfer coding is removed from
    /// the head).
    pub async fn read_head(&mut self, form: Form) -> Result<ResponseHead> {
        let mut informational = 0;
        loop {
            let mut head = loop {
                if !self.buf.is_empty() {
                    if let Some(head) = response_head::read(&mut self.buf, form)? {
                        break head;
                    }
                }
                if self.buf.capacity() - self.buf.len() < HEAD_READ / 4 {
                    self.buf.reserve(HEAD_READ);
                }
                match self.read().await {
                    Ok(0) => {
                        let e = Error::explain(
                            ErrorType::ConnectionClosed,
                            format!(
                                "upstream closed the connection while the response head was read ({} bytes read)",
                                self.buf.len()
                            ),
                        );
                        return Err(Self::retryable_before_response(e));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            };
            if informational_to_skip(head.status())? {
                informational += 1;
                if informational > MAX_INFORMATIONAL {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        format!("more than {MAX_INFORMATIONAL} informational responses"),
                    ));
                }
                continue;
            }
            let (request, close) = (self.head_request, self.close_asked);
            let framing = match &mut head {
                ResponseHead::Raw(h) => framing::of(&mut **h, request, close)?,
                ResponseHead::Built(h) => framing::of(&mut **h, request, close)?,
            };
            self.keep_alive = framing.keep_alive;
            self.body = Some(framing.body);
            return Ok(head);
        }
    }

    /// The next piece of the response body, `None` at its end. A body the peer cuts
    /// short is an error (`ConnectionClosed`), never a clean end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let body = self.body.as_mut().ok_or_else(|| {
                Error::explain(
                    ErrorType::InternalError,
                    "response body read before its head",
                )
            })?;
            match body.next_in_hand(&mut self.buf, BODY_READ)? {
                Step::Data(data) => return Ok(Some(data)),
                Step::End => return Ok(None),
                Step::NeedMore => {}
            }
            let room = body
                .read_size()
                .map_or(CHUNK_READ, |left| left.clamp(1, BODY_READ as u64) as usize);
            if self.buf.capacity() - self.buf.len() < room {
                self.buf.reserve(room);
            }
            if self.read().await? == 0 {
                if let Some(body) = self.body.as_mut() {
                    body.closed()?;
                }
            }
        }
    }

    /// Whether the response body is complete (no body counts as complete).
    pub fn body_done(&self) -> bool {
        self.body.as_ref().is_some_and(Decoder::done)
    }

    /// The connection and its read buffer, when it can carry another request: the
    /// response said so, its body was read whole and nothing follows it. Otherwise it
    /// is shut down.
    pub async fn into_reusable(mut self) -> Option<Idle> {
        if self.keep_alive && self.body_done() && self.buf.is_empty() {
            // A buffer a large body grew is not kept with an idle connection.
            let buf = if self.buf.capacity() <= PARKED_BUFFER {
                self.buf
            } else {
                BytesMut::new()
            };
            return Some(Idle {
                stream: self.stream,
                buf,
                deadline: self.deadline,
            });
        }
        if !self.buf.is_empty() && self.body_done() {
            tracing::debug!(
                extra = self.buf.len(),
                "upstream sent bytes past the response: connection closed"
            );
        }
        let _ = self.stream.shutdown().await;
        None
    }

    /// `e`, met while the response head was read, retryable on another peer when this
    /// connection was reused (`ReusedOnly`: the peer likely closed an idle connection).
    /// As Pingora's client, whether or not part of a head had come.
    fn retryable_before_response(mut e: Box<Error>) -> Box<Error> {
        e.retry = RetryType::ReusedOnly;
        e
    }

    /// One read into the buffer's spare room, within the read timeout, on the
    /// connection's timer ([`Deadline`]: not one made and dropped for each read).
    async fn read(&mut self) -> Result<usize> {
        let read = self.stream.read_buf(&mut self.buf);
        let result = match self.read_timeout {
            Some(t) => match self.deadline.within(t, read).await {
                Some(r) => r,
                None => {
                    return Err(Error::explain(
                        ErrorType::ReadTimedout,
                        "reading from the upstream",
                    ))
                }
            },
            None => read.await,
        };
        result.map_err(|e| {
            let os = e.raw_os_error().is_some();
            let e = Error::because(ErrorType::ReadError, "reading from the upstream", e);
            // An OS error (a reset) before the response on a reused connection: the
            // peer dropped it while idle. A TLS error is not retried.
            if os && self.body.is_none() {
                Self::retryable_before_response(e)
            } else {
                e
            }
        })
    }

    /// Writes and flushes `bytes` within the write timeout, on the connection's timer,
    /// armed only when the socket has no room for them ([`Deadline`]), which a request
    /// head rarely meets.
    async fn write(&mut self, bytes: &[u8], what: &'static str) -> Result<()> {
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        let result = match self.write_timeout {
            Some(t) => match self.deadline.within(t, write).await {
                Some(r) => r,
                None => return Err(Error::explain(ErrorType::WriteTimedout, what)),
            },
            None => write.await,
        };
        result.map_err(|e| Error::because(ErrorType::WriteError, what, e))
    }
}

/// Whether a response head with `status` is an informational one, skipped before the
/// final head. A `101` is the upstream's error: upgrades do not come this way (they go
/// through pingora-proxy, `super::handoff`).
pub fn informational_to_skip(status: http::StatusCode) -> Result<bool> {
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::explain(
            ErrorType::InvalidHTTPHeader,
            "101 Switching Protocols to a request without Upgrade",
        ));
    }
    Ok(status.is_informational())
}

/// The request body's framing from its head: chunked when the last transfer coding
/// is, else its `Content-Length`, else none (requests are never close-delimited).
fn request_framing(req: &RequestHeader) -> RequestBody {
    if framing::last_coding_is_chunked(&req.headers) {
        return RequestBody::Chunked;
    }
    declared_length(req)
}

/// The request body's framing from its `Content-Length` alone (none: no body).
fn declared_length(req: &RequestHeader) -> RequestBody {
    let length = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if length == 0 {
        RequestBody::Done
    } else {
        RequestBody::Length(length)
    }
}
