//! Telling HTTP/2 with prior knowledge (h2c) from HTTP/1 on a cleartext connection.
//!
//! Pingora peeks for the whole 24-byte preface with no timeout, so an HTTP/1 request
//! shorter than that (`GET / HTTP/1.0\r\n\r\n` is 18 bytes) is never answered and a
//! silent connection never closes. Here the first byte that differs from the preface
//! decides HTTP/1 at once, and the wait is bounded.

use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;

use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, Sleep};

/// RFC 9113 section 3.4.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection said.
pub enum Sniffed {
    /// The HTTP/2 preface; the bytes are put back for the HTTP/2 server to read.
    H2(Stream),
    /// Anything else; the bytes are put back for the HTTP/1 parser.
    H1(Stream),
    /// The client closed, or the server is stopping.
    Gone,
    /// Nothing decisive arrived in time.
    TimedOut,
}

/// Reads until the bytes differ from the HTTP/2 preface or complete it, for at most `wait`.
pub async fn sniff(mut stream: Stream, wait: Duration, shutdown: &ShutdownWatch) -> Sniffed {
    // Only a plain TCP stream can have bytes put back.
    if !plain_tcp(&stream) {
        return Sniffed::H1(stream);
    }
    let mut buf = [0u8; 24];
    let mut n = 0;
    let read = async {
        loop {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => {
                    n += k;
                    if buf[..n] != H2_PREFACE[..n] || n == H2_PREFACE.len() {
                        return true;
                    }
                }
            }
        }
    };
    let mut stop = shutdown.clone();
    tokio::select! {
        r = tokio::time::timeout(wait, read) => match r {
            Ok(true) => {}
            Ok(false) => return Sniffed::Gone,
            Err(_) => return Sniffed::TimedOut,
        },
        _ = stop.wait_for(|s| *s) => return Sniffed::Gone,
    }
    let h2 = &buf[..n] == H2_PREFACE;
    let stream = put_back(stream, &buf[..n]);
    if h2 {
        Sniffed::H2(stream)
    } else {
        Sniffed::H1(stream)
    }
}

/// A plain TCP stream (Pingora's, or one [`super::rehome`] moved): bytes can be put
/// back, and the next request's first bytes read ahead.
fn plain_tcp(stream: &Stream) -> bool {
    let any = stream.as_any();
    any.is::<TcpStream>() || any.is::<super::rehome::Socket>()
}

/// Puts `data` back in front of what `stream` (a plain TCP stream) reads next.
fn put_back(stream: Stream, data: &[u8]) -> Stream {
    let any = stream.into_any();
    let any = match any.downcast::<super::rehome::Socket>() {
        Ok(mut socket) => {
            socket.rewind(data);
            return socket;
        }
        Err(other) => other,
    };
    match any.downcast::<TcpStream>() {
        Ok(mut tcp) => {
            tcp.rewind(data);
            tcp
        }
        Err(_) => unreachable!("checked to be a TCP stream"),
    }
}

/// How long an idle kept-alive connection waits for one more request once the server
/// stops (SIGTERM, or the hand-over of an upgrade): a client that sent its next request
/// just as the stop came gets it answered, with `Connection: close`, instead of a reset.
pub const LAST_CALL: Duration = Duration::from_millis(1000);

/// Room for the first read of a kept-alive connection's next request (a typical head).
const FIRST_READ: usize = 4096;

/// Waits up to `idle` for the next request's first bytes on a kept-alive connection;
/// once the server stops, at most [`LAST_CALL`] more. `Some(true)`: bytes arrived and
/// were read into `first` (the caller hands them to [`super::target::read_line`]: one
/// read, where a peek then a read took two system calls a request);
/// `Some(false)`: closed, timed out, or stopping with nothing sent; `None`: this stream
/// is not plain TCP (TLS), the caller bounds the wait another way.
///
/// A read that has not completed consumed nothing, so giving up on it (the deadline,
/// the stop) loses no byte.
///
/// `deadline` is the connection's timer, reset here to the end of the wait: one timer
/// for all of a connection's waits, where a timer of its own for each was registered
/// with the runtime and removed again every request. Reset to a later deadline, a
/// registered timer only records it (Tokio moves it in its wheel when the earlier one
/// comes).
pub async fn wait_readable(
    stream: &mut Stream,
    first: &mut BytesMut,
    mut deadline: Pin<&mut Sleep>,
    idle: Duration,
    shutdown: &ShutdownWatch,
) -> Option<bool> {
    if !plain_tcp(stream) {
        return None;
    }
    first.reserve(FIRST_READ);
    let mut stop = shutdown.clone();
    let mut stopping = *shutdown.borrow();
    let wait = if stopping { idle.min(LAST_CALL) } else { idle };
    deadline.as_mut().reset(Instant::now() + wait);
    let read = stream.read_buf(first);
    tokio::pin!(read);
    loop {
        tokio::select! {
            r = &mut read => return Some(matches!(r, Ok(n) if n > 0)),
            _ = &mut deadline => {
                if !stopping {
                    crate::metrics::metrics()
                        .connection_timeouts
                        .with_label_values(&["keepalive"])
                        .inc();
                }
                return Some(false);
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                let last = Instant::now() + LAST_CALL;
                if last < deadline.deadline() {
                    deadline.as_mut().reset(last);
                }
            }
        }
    }
}
