//! One TLS record per response on an HTTP/1 client connection over TLS.
//!
//! Pingora writes a response head and its body with one write each, and rustls seals
//! every write into a record of its own: a small response costs two records, each an
//! AEAD seal on the way out and an open at the client, and the record's header and tag
//! on the wire. [`Coalesced`] holds the plaintext written until the writer flushes
//! (Pingora flushes at the end of a response, after an informational one, and at each
//! chunk or write of a response without a length), so a head and a small body leave as one
//! record, as from nginx (`ssl_buffer_size`). A write that does not fit goes on at
//! once, after what is held.
//!
//! HTTP/2 connections are not wrapped: the `h2` crate already writes its frames in
//! batches.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most plaintext held (a TLS record's largest payload): a longer write goes on
/// at once.
const LIMIT: usize = 16 * 1024;

/// The buffer's size when first used, and what it keeps between responses (a larger
/// one is freed once written): an idle keep-alive connection holds no more than this.
/// Allocated whole at once, it also shares the size class of Pingora's response-head
/// buffer (4 KiB, made and freed a response): on a worker with few connections, where
/// that buffer was the class's only block, its allocator page was freed and made again
/// every response (~2 k instructions each time); this one keeps the page in use.
const KEPT: usize = 4 * 1024;

/// A TLS stream whose plaintext writes are held until flushed (module docs). Not
/// tokio's `BufWriter` (which [`super::rehome`] puts on plain sockets): that one
/// allocates its whole capacity when made and keeps it; this one holds up to a record
/// while keeping at most [`KEPT`] allocated between responses.
pub struct Coalesced {
    inner: Stream,
    held: Vec<u8>,
}

impl Coalesced {
    /// `tls` (a client's TLS stream, served as HTTP/1) with its writes coalesced.
    pub fn wrap(tls: Stream) -> Stream {
        Box::new(Coalesced {
            inner: tls,
            held: Vec::new(),
        })
    }

    /// Writes what is held to the TLS stream; what it took is dropped from `held`
    /// whatever the outcome.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut at = 0;
        let outcome = loop {
            if at == self.held.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.held[at..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.held.drain(..at);
        if self.held.is_empty() && self.held.capacity() > KEPT {
            self.held = Vec::new();
        }
        outcome
    }
}

impl fmt::Debug for Coalesced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesced")
            .field("inner", &self.inner)
            .field("held", &self.held.len())
            .finish()
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.held.len() + buf.len() > LIMIT {
            ready!(this.poll_write_held(cx))?;
            if buf.len() >= LIMIT {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        if this.held.capacity() == 0 {
            this.held.reserve_exact(KEPT.max(buf.len()));
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Coalesced {
    async fn shutdown(&mut self) {
        if std::future::poll_fn(|cx| self.poll_write_held(cx))
            .await
            .is_ok()
        {
            Shutdown::shutdown(&mut *self.inner).await;
        }
    }
}

impl UniqueID for Coalesced {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Coalesced {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

/// No timing, as from a plain client socket ([`super::rehome`]): Sluice reads none,
/// and Pingora asks at every request of a keep-alive connection, where the TLS
/// stream's answer is a `Vec` allocated each time.
impl GetTimingDigest for Coalesced {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Coalesced {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Coalesced {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Coalesced {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A wrapped server side of a loopback TCP connection, and its client side.
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let inner: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted));
        (Coalesced::wrap(inner), client)
    }

    /// Whether `client` can read anything within 100 ms.
    async fn readable(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(
            std::time::Duration::from_millis(100),
            client.peek(&mut byte),
        )
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn writes_are_held_until_flushed_and_shutdown_sends_them() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        server
            .write_all(b"content-length: 2\r\n\r\nok")
            .await
            .unwrap();
        assert!(!readable(&mut client).await, "held until the flush");
        server.flush().await.unwrap();
        let mut got = vec![0u8; 40];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");

        // More than a record's worth after a held head: all of it, in order.
        let big = vec![b'x'; LIMIT + 10];
        server.write_all(b"head").await.unwrap();
        server.write_all(&big).await.unwrap();
        server.flush().await.unwrap();
        let mut got = vec![0u8; 4 + big.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..].iter().all(|&b| b == b'x'));

        // A shutdown writes what is held first, then closes.
        server.write_all(b"last").await.unwrap();
        Shutdown::shutdown(&mut *server).await;
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last");
    }
}
