//! The TLS handshake of a connection accepted on a TLS listener, run by Sluice on the
//! thread that serves the connection, over the socket [`super::rehome`] moved there.
//!
//! Pingora's TLS listener runs the handshake on the accepting side and hands over a
//! TLS stream whose socket stays registered with another thread's reactor (a wake-up
//! across threads whenever it becomes readable); with the listener bound as plain TCP
//! the socket moves first and the handshake runs over it.

use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};

use super::rehome::Socket;

/// Runs `acceptor`'s handshake over `stream` (a re-homed [`Socket`], or Pingora's own
/// TCP stream when the move was not possible).
pub async fn accept(acceptor: &Acceptor, stream: Stream) -> Result<Stream> {
    if stream.as_any().is::<Socket>() {
        let socket = stream
            .into_any()
            .downcast::<Socket>()
            .expect("checked type");
        return Ok(Box::new(acceptor.tls_handshake(*socket).await?));
    }
    if stream.as_any().is::<L4Stream>() {
        let tcp = stream
            .into_any()
            .downcast::<L4Stream>()
            .expect("checked type");
        return Ok(Box::new(acceptor.tls_handshake(*tcp).await?));
    }
    Error::e_explain(ErrorType::AcceptError, "TLS over a stream that is not TCP")
}
