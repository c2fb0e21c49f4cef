//! The client side of a request, as the hooks see it: [`Downstream`], one type over the
//! sessions a request can arrive on, with the operations the hooks use and nothing
//! else (`docs/design/downstream-h1.md` §2). The hooks never name a session type:
//! which session carries a request is the request loop's business (`crate::forward`),
//! and for upgrades pingora-proxy's (`crate::proxy`'s `ProxyHttp`).
//!
//! - [`h1`]: Sluice's own HTTP/1 server session, which carries HTTP/1 requests (issue
//!   #18).
//! - Pingora's sessions carry HTTP/2 streams, and upgrades through pingora-proxy.

pub mod h1;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::HttpTask;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::tls::SslDigest;

use crate::forward::h1::raw_head::RawHead;
use crate::forward::h1::response_head::{self, Case};

/// The client session a request arrived on, lent to the hooks for the request.
pub enum Downstream<'a> {
    /// Sluice's own HTTP/1 session.
    H1(&'a mut h1::Session),
    /// pingora-proxy's session (Pingora's HTTP/2 server session inside; HTTP/1 for an
    /// upgrade).
    Pingora(&'a mut Session),
}

impl Downstream<'_> {
    /// The request head (as routed and filtered: the hooks edit it in place).
    pub fn req_header(&self) -> &RequestHeader {
        match self {
            Downstream::H1(s) => s.req_header(),
            Downstream::Pingora(s) => s.req_header(),
        }
    }

    /// The request head, to edit.
    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        match self {
            Downstream::H1(s) => s.req_header_mut(),
            Downstream::Pingora(s) => s.req_header_mut(),
        }
    }

    /// The HTTP/1 request head's bytes as received (`sluice.request_head`); `None` on
    /// HTTP/2.
    pub fn raw_head(&self) -> Option<Bytes> {
        match self {
            Downstream::H1(s) => Some(s.raw_head().clone()),
            Downstream::Pingora(s) => s.as_http1().map(|h1| h1.get_headers_raw_bytes()),
        }
    }

    /// Whether the request is an HTTP/2 stream.
    pub fn is_http2(&self) -> bool {
        match self {
            Downstream::H1(_) => false,
            Downstream::Pingora(s) => s.is_http2(),
        }
    }

    /// Keep the connection for another request (`Some`) or close it after this one.
    pub fn set_keepalive(&mut self, seconds: Option<u64>) {
        match self {
            Downstream::H1(s) => s.set_keepalive(seconds),
            Downstream::Pingora(s) => s.set_keepalive(seconds),
        }
    }

    /// The request has no body by its framing.
    pub fn is_body_empty(&mut self) -> bool {
        match self {
            Downstream::H1(s) => s.is_body_empty(),
            Downstream::Pingora(s) => s.as_mut().is_body_empty(),
        }
    }

    /// The request body has been read whole.
    pub fn is_body_done(&mut self) -> bool {
        match self {
            Downstream::H1(s) => s.is_body_done(),
            Downstream::Pingora(s) => s.as_mut().is_body_done(),
        }
    }

    /// The next piece of the request body; `None` once it is read whole.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Downstream::H1(s) => s.read_body().await,
            Downstream::Pingora(s) => s.read_request_body().await,
        }
    }

    /// Keep a copy of the request body as it is read, for a retry ([`Self::retry_buffer`]).
    pub fn enable_retry_buffering(&mut self) {
        match self {
            Downstream::H1(s) => s.enable_retry_buffering(),
            Downstream::Pingora(s) => s.as_mut().enable_retry_buffering(),
        }
    }

    /// The request body read so far, when it was kept whole
    /// ([`Self::enable_retry_buffering`]).
    pub fn retry_buffer(&self) -> Option<Bytes> {
        match self {
            Downstream::H1(s) => s.retry_buffer(),
            Downstream::Pingora(s) => s.as_ref().get_retry_buffer(),
        }
    }

    /// More of the request body was read than the retry buffer holds: no retry can
    /// replay it.
    pub fn retry_buffer_truncated(&self) -> bool {
        match self {
            Downstream::H1(s) => s.retry_buffer_truncated(),
            Downstream::Pingora(s) => s.as_ref().retry_buffer_truncated(),
        }
    }

    /// Request body bytes read so far.
    pub fn body_bytes_read(&self) -> usize {
        match self {
            Downstream::H1(s) => s.body_bytes_read(),
            Downstream::Pingora(s) => s.as_ref().body_bytes_read(),
        }
    }

    /// Writes the response head; `end`: the response has no body.
    pub async fn write_response_header(
        &mut self,
        head: Box<ResponseHeader>,
        end: bool,
    ) -> Result<()> {
        match self {
            Downstream::H1(s) => s.write_response_header(head, end).await,
            Downstream::Pingora(s) => s.write_response_header(head, end).await,
        }
    }

    /// Writes a final response head kept as the bytes an HTTP/1 origin sent; `end`: the
    /// response has no body. Pingora's session gets it built, its names' case kept.
    pub async fn write_raw_head(&mut self, head: Box<RawHead>, end: bool) -> Result<()> {
        match self {
            Downstream::H1(s) => s.write_raw_head(head, end).await,
            Downstream::Pingora(s) => {
                let head = response_head::build(&head, Case::Kept)?;
                s.write_response_header(head, end).await
            }
        }
    }

    /// Writes a piece of the response body; `end`: the body is complete.
    pub async fn write_response_body(&mut self, data: Option<Bytes>, end: bool) -> Result<()> {
        match self {
            Downstream::H1(s) => s.write_body(data, end).await,
            Downstream::Pingora(s) => s.write_response_body(data, end).await,
        }
    }

    /// Writes a piece of a streamed response body and flushes it: the client gets it
    /// before the next one is read from the origin.
    pub async fn write_body_flushed(&mut self, data: Bytes) -> Result<()> {
        match self {
            Downstream::H1(s) => s.write_body_flushed(data).await,
            Downstream::Pingora(s) => s
                .write_response_tasks(vec![HttpTask::Body(Some(data), false)])
                .await
                .map(drop),
        }
    }

    /// The status of the final response head written, if one was.
    pub fn written_status(&self) -> Option<http::StatusCode> {
        match self {
            Downstream::H1(s) => s.written_status(),
            Downstream::Pingora(s) => s.response_written().map(|r| r.status),
        }
    }

    /// Response body bytes written so far.
    pub fn body_bytes_sent(&self) -> usize {
        match self {
            Downstream::H1(s) => s.body_bytes_sent(),
            Downstream::Pingora(s) => s.body_bytes_sent(),
        }
    }

    /// Answers `code` with an empty body and closes the connection after it (nothing
    /// is written once a final response has been).
    pub async fn respond_error(&mut self, code: u16) -> Result<()> {
        match self {
            Downstream::H1(s) => s.respond_error(code).await,
            Downstream::Pingora(s) => s.respond_error(code).await,
        }
    }

    /// Closes the client connection.
    pub async fn shutdown(&mut self) {
        match self {
            Downstream::H1(s) => s.shutdown().await,
            Downstream::Pingora(s) => s.shutdown().await,
        }
    }

    /// The connection's TLS digest (`None`: plain TCP).
    pub fn ssl_digest(&self) -> Option<&SslDigest> {
        match self {
            Downstream::H1(s) => s.ssl_digest(),
            Downstream::Pingora(s) => s.digest()?.ssl_digest.as_deref(),
        }
    }

    /// The client's address.
    pub fn client_addr(&self) -> Option<&SocketAddr> {
        match self {
            Downstream::H1(s) => s.client_addr(),
            Downstream::Pingora(s) => s.client_addr(),
        }
    }

    /// The address the client connected to.
    pub fn server_addr(&self) -> Option<&SocketAddr> {
        match self {
            Downstream::H1(s) => s.server_addr(),
            Downstream::Pingora(s) => s.server_addr(),
        }
    }
}
