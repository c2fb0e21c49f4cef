//! The client side of one attempt, whatever the peer speaks: Sluice's own HTTP/1
//! client ([`h1`]) for HTTP/1 pools, Pingora's session for HTTP/2 (and for an HTTP/2
//! pool's peer that answered ALPN with HTTP/1.1). [`super::exchange`] and
//! [`super::relay`] drive both through this one type.

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::ErrorType;

use super::h1;
use super::h1::response_head::{Form, ResponseHead};

/// A connection to a peer, ready for one request.
pub enum Upstream {
    /// Sluice's HTTP/1 client.
    H1(h1::Client),
    /// Pingora's client session (HTTP/2 connector), boxed: it is four times the size
    /// of Sluice's HTTP/1 client, which takes the common path.
    Pingora(Box<ClientSession>),
}

impl Upstream {
    /// The longest wait for each read and each write.
    pub fn set_timeouts(
        &mut self,
        read: Option<std::time::Duration>,
        write: Option<std::time::Duration>,
    ) {
        match self {
            Upstream::H1(c) => c.set_timeouts(read, write),
            Upstream::Pingora(c) => {
                c.set_read_timeout(read);
                c.set_write_timeout(write);
            }
        }
    }

    /// Sends the request head.
    pub async fn write_request_header(&mut self, head: RequestHeader) -> Result<()> {
        match self {
            Upstream::H1(c) => c.write_head(&head).await,
            Upstream::Pingora(c) => c.write_request_header(Box::new(head)).await,
        }
    }

    /// Sends a piece of the request body.
    pub async fn write_request_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        match self {
            Upstream::H1(c) => c.write_body(&data).await,
            Upstream::Pingora(c) => c.write_request_body(data, end).await,
        }
    }

    /// Ends the request body.
    pub async fn finish_request_body(&mut self) -> Result<()> {
        match self {
            Upstream::H1(c) => c.finish_body().await,
            Upstream::Pingora(c) => c.finish_request_body().await,
        }
    }

    /// The final response head (informational ones other than `101` are skipped; a
    /// `101` to a request that asked for no upgrade is the upstream's error).
    /// `want`: the form the caller takes an HTTP/1 upstream's head in; an HTTP/2
    /// upstream's is always built, without case.
    pub async fn read_response_head(&mut self, want: Form) -> Result<ResponseHead> {
        let client = match self {
            Upstream::H1(c) => return c.read_head(want).await,
            Upstream::Pingora(c) => c,
        };
        loop {
            client.read_response_header().await?;
            let head = client.response_header().ok_or_else(|| {
                Error::explain(ErrorType::InvalidHTTPHeader, "no response header")
            })?;
            if h1::informational_to_skip(head.status)? {
                continue;
            }
            return Ok(ResponseHead::Built(Box::new(head.clone())));
        }
    }

    /// The next piece of the response body, `None` at its end.
    pub async fn read_response_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Upstream::H1(c) => c.read_body().await,
            Upstream::Pingora(c) => {
                if c.response_done() {
                    return Ok(None);
                }
                c.read_response_body().await
            }
        }
    }

    /// Whether the response body is complete.
    pub fn response_done(&mut self) -> bool {
        match self {
            Upstream::H1(c) => c.body_done(),
            Upstream::Pingora(c) => c.response_done(),
        }
    }
}
