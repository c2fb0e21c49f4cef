//! Moving an accepted connection's socket to the reactor of the thread that serves it.
//!
//! Pingora 0.9 accepts on one runtime and spawns each connection on a random worker
//! runtime (`pingora_runtime::current_handle()` with `work_stealing = false`): the
//! socket stays registered with the accepting thread's reactor, so every time it
//! becomes readable that thread wakes the serving one through an eventfd (measured
//! here at ~0.8 cross-thread wake-ups per keep-alive request with 2 threads, none
//! after this). Re-registering the socket where it is served costs three system calls
//! once per connection (`fcntl(F_DUPFD_CLOEXEC)`, `epoll_ctl` add, `epoll_ctl` delete
//! of the old one). TLS listeners are bound as plain TCP, so their connections move
//! too and their handshake runs afterwards ([`super::handshake`]).
//!
//! The moved socket is a [`Socket`]: the TCP stream behind a write buffer, so that a
//! response head and a small body leave in one `sendto` (Pingora's own stream type
//! cannot be given a buffer outside pingora-core).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;

/// Write buffer of a moved socket: a response head plus a small body.
const WRITE_BUFFER: usize = 16 * 1024;

/// `stream`, registered with the current thread's reactor when it is a plain TCP
/// connection; unchanged otherwise, or if anything fails.
pub fn rehome(stream: Stream) -> Stream {
    if stream.get_ssl_digest().is_some() {
        return stream;
    }
    let fd = stream.id();
    // SAFETY: `fd` is the open socket `stream` owns; the duplicate is owned below.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return stream;
    }
    // SAFETY: `dup` is a fresh descriptor of the same (non-blocking) TCP socket,
    // owned by nothing else.
    let std = unsafe { std::net::TcpStream::from_raw_fd(dup) };
    let Ok(tcp) = TcpStream::from_std(std) else {
        return stream;
    };
    // Deregisters the socket from the accepting thread's reactor, closes `fd`.
    drop(stream);
    Box::new(Socket {
        digest: Arc::new(SocketDigest::from_raw_fd(dup)),
        inner: BufWriter::with_capacity(WRITE_BUFFER, tcp),
        rewound: Vec::new(),
    })
}

/// A client's TCP connection, served by the thread whose reactor it is registered with.
pub struct Socket {
    inner: BufWriter<TcpStream>,
    digest: Arc<SocketDigest>,
    /// Bytes put back (the h2c sniff's), read before the socket's.
    rewound: Vec<u8>,
}

impl Socket {
    /// Puts `data` back in front of what the socket reads next.
    pub fn rewind(&mut self, data: &[u8]) {
        let mut front = data.to_vec();
        front.append(&mut self.rewound);
        self.rewound = front;
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket").field("fd", &self.id()).finish()
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.rewound.is_empty() {
            let n = self.rewound.len().min(buf.remaining());
            buf.put_slice(&self.rewound[..n]);
            self.rewound.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Socket {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for Socket {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().as_raw_fd()
    }
}

impl Ssl for Socket {}

/// No timing: Sluice reads none of a client connection's (only its socket and TLS
/// digests), and Pingora asks for it at every request of a keep-alive connection
/// (`HttpSession::new`), where a non-empty answer is one allocation a request.
impl GetTimingDigest for Socket {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Socket {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Socket {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
}

#[async_trait]
impl Peek for Socket {
    /// Waits for data and copies it without consuming it (the h2c preface sniff, the
    /// wait between keep-alive requests).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.rewound.is_empty() {
            let n = self.rewound.len().min(buf.len());
            buf[..n].copy_from_slice(&self.rewound[..n]);
            return Ok(true);
        }
        self.inner.get_ref().peek(buf).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moved client socket keeps its peer address and answers no timing, so that a
    /// keep-alive request's session costs no allocation for it.
    #[tokio::test]
    async fn moved_socket_keeps_its_address_and_gives_no_timing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (accepted, _) = listener.accept().await.unwrap();
        let client = client.await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted));
        let moved = rehome(stream);
        let peer = moved
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()));
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        let timing = moved.get_timing_digest();
        assert!(timing.is_empty());
        assert_eq!(
            timing.capacity(),
            0,
            "no allocation for a timing nobody reads"
        );
    }
}
