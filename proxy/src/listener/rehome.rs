//! Moving an accepted connection's socket to the reactor of the thread that serves it.
//!
//! Pingora 0.9 accepts on one runtime and spawns each connection on a random worker
//! runtime (`pingora_runtime::current_handle()` with `work_stealing = false`): the
//! socket stays registered with the accepting thread's reactor, so every time it
//! becomes readable that thread wakes the serving one through an eventfd (measured
//! here at ~0.8 cross-thread wake-ups per keep-alive request with 2 threads). Re-registering
//! the socket where it is served costs three system calls once per connection
//! (`fcntl(F_DUPFD_CLOEXEC)`, `epoll_ctl` add, `epoll_ctl` delete of the old one).
//! TLS connections, whose handshake has already run on the stream, stay as they are.

use std::os::fd::FromRawFd;

use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;

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
    let Ok(tcp) = tokio::net::TcpStream::from_std(std) else {
        return stream;
    };
    // Deregisters the socket from the accepting thread's reactor, closes `fd`.
    drop(stream);
    let mut moved = L4Stream::from(tcp);
    moved.set_socket_digest(SocketDigest::from_raw_fd(dup));
    Box::new(moved)
}
