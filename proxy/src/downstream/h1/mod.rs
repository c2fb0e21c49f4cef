//! Sluice's own HTTP/1 server session (issue #18): one request read from a client
//! connection and its response written back, then the connection handed back when it
//! can carry another request. It takes the place of Pingora's HTTP/1 server session for
//! plain HTTP/1 requests, keeping Pingora's head types ([`RequestHeader`],
//! [`ResponseHeader`]) so that the hooks and filters see what they saw before, and
//! keeping its behaviour (framing checks, keep-alive, the fields it writes), which the
//! integration tests pin (`docs/design/downstream-h1.md` §4).
//!
//! What it does not do that Pingora's session did, per request: insert `Date` and
//! `Connection` into the response head's two maps (they are written as bytes), derive
//! the response framing again by map look-ups at each write, allocate a 4 KiB buffer
//! for the response head apart from the body's (the session's one buffer carries the
//! head and a small body in one write), box the connection's digest (built only when
//! asked for).
//!
//! | job | module |
//! |---|---|
//! | the request head: read, parsed (`httparse`), built as a [`RequestHeader`], checked | [`head`] |
//! | the request body (length, chunked, none), the retry buffer, the drain | [`body`] |
//! | the response head and body on the wire (length, chunked, until close, none) | [`write`] |
//! | the session's state, keep-alive, timeouts, the connection's digest, its end | here |
//!
//! Errors are Pingora's `ErrorType`s, as its session gives them (no error source set:
//! callers mark them `into_down`): a head to answer 400 to is `InvalidHTTPHeader`; a
//! broken chunked body `InvalidChunk`; a body cut short `ConnectionClosed`; a read or
//! write that failed `ReadError` / `WriteError`; timeouts `ReadTimedout` /
//! `WriteTimedout`.
//!
//! Upgrades (`Upgrade:` requests) are not served here: the caller hands them to
//! pingora-proxy with the bytes read so far ([`Session::into_upgrade`]).

mod body;
mod head;
mod write;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{SocketDigest, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::forward::h1::deadline::Deadline;

/// The read timeout of a new session (as Pingora's): each read of the request body, and
/// of the head when keep-alive is off.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP/1 request and its response on a client connection.
pub struct Session {
    stream: Stream,
    /// Bytes read and not consumed: before the head is parsed, the head so far; after,
    /// what of the body is read and not returned yet (and anything past the request).
    buf: BytesMut,
    /// The timer of the connection's reads and writes, one at a time.
    deadline: Deadline,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Keep-alive: `None` closes the connection after this request; `Some(0)` keeps it
    /// (as Pingora's `Infinite`), `Some(s)` keeps it and bounds the wait for the head
    /// by `s` seconds when set before [`Self::read_request`].
    keepalive: Option<u64>,
    /// The request head, once read.
    request: Option<RequestHeader>,
    /// The request head's bytes as read (its names and values are slices of them).
    raw_head: Bytes,
    body: body::RequestBody,
    response: write::Response,
    /// The connection's socket digest, looked up when first asked for.
    socket: OnceLock<Option<Arc<SocketDigest>>>,
    /// The connection's TLS digest, looked up when first asked for.
    ssl: OnceLock<Option<Arc<SslDigest>>>,
}

/// What a connection's sessions hand on, one request to the next ([`Session::finish`]):
/// the response buffer, the timer, and the connection's digests, looked up once. A
/// kept-alive request allocates none of them.
#[derive(Default)]
pub struct Kept {
    out: Vec<u8>,
    deadline: Deadline,
    socket: OnceLock<Option<Arc<SocketDigest>>>,
    ssl: OnceLock<Option<Arc<SslDigest>>>,
    /// Bytes the client sent past the last request: the next one's start.
    pipelined: BytesMut,
}

impl Kept {
    /// The bytes the client sent past the last request (pipelined: the next request's
    /// first bytes, to be read before waiting for more); empty when it sent none.
    pub fn take_pipelined(&mut self) -> BytesMut {
        std::mem::take(&mut self.pipelined)
    }
}

impl Session {
    /// A session on `stream` whose first bytes, already read from it, are `prefix`.
    pub fn new(stream: Stream, prefix: BytesMut) -> Self {
        Self::after(stream, prefix, Kept::default())
    }

    /// The session of a connection's next request: as [`Self::new`], with what the
    /// connection's last session kept.
    pub fn after(stream: Stream, prefix: BytesMut, kept: Kept) -> Self {
        let Kept {
            out,
            deadline,
            socket,
            ssl,
            pipelined,
        } = kept;
        debug_assert!(
            pipelined.is_empty(),
            "pipelined bytes are the next session's prefix: Kept::take_pipelined"
        );
        Session {
            stream,
            buf: prefix,
            deadline,
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            write_timeout: None,
            keepalive: None,
            request: None,
            raw_head: Bytes::new(),
            body: body::RequestBody::default(),
            response: write::Response::with_buffer(out),
            socket,
            ssl,
        }
    }

    /// Sets keep-alive as Pingora's server session does: `None` closes the connection
    /// after this request; `Some(_)` keeps it unless the client asked to close it
    /// (`Connection: close`). Before [`Self::read_request`], `Some(s)` with `s > 0` also
    /// bounds the wait for the head's bytes by `s` seconds (its end is a quiet close);
    /// the head read then sets keep-alive from the request itself.
    pub fn set_keepalive(&mut self, seconds: Option<u64>) {
        self.keepalive = match seconds {
            Some(_) if self.request.as_ref().and_then(connection_asks) == Some(false) => None,
            s => s,
        };
    }

    /// Whether the connection may carry another request after this one (the response
    /// and the request body permitting: [`Self::finish`]).
    pub fn will_keepalive(&self) -> bool {
        self.keepalive.is_some()
    }

    /// The longest wait of each read: of the request body, and of the head when
    /// keep-alive was not set before it (`None`: no limit).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// The longest wait of each read ([`Self::set_read_timeout`]).
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// The longest wait of each write ([`Self::set_write_timeout`]).
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// The longest wait of each write of the response (`None`: no limit).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
    }

    /// Shuts the connection down (the client sees it closed).
    pub async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.stream).await;
    }

    /// The connection's TLS digest (`None`: plain TCP), looked up once a connection.
    pub fn ssl_digest(&self) -> Option<&SslDigest> {
        self.ssl
            .get_or_init(|| self.stream.get_ssl_digest())
            .as_deref()
    }

    /// The client's address, from the connection's socket digest.
    pub fn client_addr(&self) -> Option<&SocketAddr> {
        self.socket()?.peer_addr()
    }

    /// The address the client connected to, from the connection's socket digest.
    pub fn server_addr(&self) -> Option<&SocketAddr> {
        self.socket()?.local_addr()
    }

    fn socket(&self) -> Option<&Arc<SocketDigest>> {
        self.socket
            .get_or_init(|| self.stream.get_socket_digest())
            .as_ref()
    }

    /// The request is over: finishes the response body (if `end` was never given),
    /// drains what is left of the request body (each read under the read timeout) and
    /// returns the stream when the connection can carry another request (keep-alive on,
    /// response complete, request body read whole), with what the next request's
    /// session keeps ([`Self::after`]): bytes the client sent past this request are the
    /// next request's first ([`Kept::take_pipelined`]), served in order, as nginx and
    /// Envoy serve pipelined requests. Otherwise shuts the stream down and returns None.
    pub async fn finish(mut self) -> Option<(Stream, Kept)> {
        let complete = self.finish_response().await;
        if complete && self.keepalive.is_some() {
            match self.drain().await {
                Ok(()) => {
                    let kept = Kept {
                        out: self.response.take_buffer(),
                        deadline: self.deadline,
                        socket: self.socket,
                        ssl: self.ssl,
                        pipelined: self.buf,
                    };
                    return Some((self.stream, kept));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "request body not drained: connection closed")
                }
            }
        }
        self.shutdown().await;
        None
    }

    /// For a protocol upgrade handed to pingora-proxy: the stream and every byte read
    /// from it so far (the head and whatever followed), unconsumed. Meant right after
    /// [`Self::read_request`]: request body bytes already returned by
    /// [`Self::read_body`] are not in them.
    pub fn into_upgrade(self) -> (Stream, BytesMut) {
        let mut bytes = BytesMut::with_capacity(self.raw_head.len() + self.buf.len());
        bytes.extend_from_slice(&self.raw_head);
        bytes.extend_from_slice(&self.buf);
        (self.stream, bytes)
    }

    /// One read into the buffer's spare room, of at most `max` bytes, within `limit`;
    /// `None` when the limit passed first.
    async fn read_some(
        &mut self,
        max: usize,
        limit: Option<Duration>,
    ) -> Option<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < max {
            self.buf.reserve(max);
        }
        let mut limited = (&mut self.stream).take(max as u64);
        let read = limited.read_buf(&mut self.buf);
        match limit {
            Some(t) => self.deadline.within(t, read).await,
            None => Some(read.await),
        }
    }
}

/// What the request's `Connection` field says of persistence, read as Pingora's session
/// reads it: its first line only; exactly `keep-alive` keeps the connection, a `close`
/// token (in a list, too) closes it; anything else (or a value that is not UTF-8) says
/// nothing and the version decides.
fn connection_asks(req: &RequestHeader) -> Option<bool> {
    let v = req.headers.get(http::header::CONNECTION)?.as_bytes();
    if v.eq_ignore_ascii_case(b"keep-alive") {
        return Some(true);
    }
    if v.eq_ignore_ascii_case(b"close") {
        return Some(false);
    }
    let v = std::str::from_utf8(v).ok()?;
    v.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
        .then_some(false)
}

/// Keep-alive as the request asks for it: its `Connection` field ([`connection_asks`]),
/// else on for HTTP/1.1 and off for HTTP/1.0.
fn requested_keepalive(req: &RequestHeader) -> Option<u64> {
    let keep = connection_asks(req).unwrap_or(req.version == http::Version::HTTP_11);
    keep.then_some(0)
}

#[cfg(test)]
pub(crate) mod testing {
    //! A session over a real loopback TCP connection, for the tests of each module.

    use super::*;
    use pingora::protocols::l4::stream::Stream as L4;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A session on the server side of a new loopback connection, and the client side.
    pub async fn pair() -> (Session, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let fd = server.as_raw_fd();
        let mut l4 = L4::from(server);
        pingora::protocols::GetSocketDigest::set_socket_digest(
            &mut l4,
            SocketDigest::from_raw_fd(fd),
        );
        (Session::new(Box::new(l4), BytesMut::new()), client)
    }

    /// A session whose client has sent `request`.
    pub async fn sent(request: &[u8]) -> (Session, TcpStream) {
        let (s, mut c) = pair().await;
        c.write_all(request).await.unwrap();
        (s, c)
    }

    /// Reads from `c` until it closes or nothing comes for 200 ms.
    pub async fn read_all(c: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_millis(200), c.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return out,
                Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether `c` sees its connection closed within a second (nothing more to read).
    pub async fn closed(c: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), c.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use pingora::http::ResponseHeader;

    /// A session moves between threads with its task, and may be shared by
    /// reference across an await.
    #[test]
    fn a_session_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Session>();
    }

    #[tokio::test]
    async fn a_get_and_its_keep_alive_reuse() {
        let (mut s, mut c) = sent(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.req_header().uri.path(), "/a");
        assert!(s.will_keepalive() && s.is_body_empty() && s.is_body_done());
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.append_header("Content-Length", "2").unwrap();
        s.write_response_header(Box::new(head), false)
            .await
            .unwrap();
        s.write_body(Some(Bytes::from_static(b"ok")), true)
            .await
            .unwrap();
        let (stream, kept) = s.finish().await.expect("reusable");
        let got = String::from_utf8(read_all(&mut c).await).unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: "));
        assert!(
            got.ends_with("\r\nConnection: keep-alive\r\n\r\nok"),
            "{got}"
        );
        // The next request on the same connection.
        c.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut s = Session::after(stream, BytesMut::new(), kept);
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.req_header().uri.path(), "/b");
        assert!(!s.will_keepalive());
        s.respond_error(404).await.unwrap();
        assert!(s.finish().await.is_none());
        let got = String::from_utf8(read_all(&mut c).await).unwrap();
        assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");
        assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
        assert!(closed(&mut c).await);
    }

    #[tokio::test]
    async fn the_prefix_is_the_start_of_the_head() {
        let (stream, mut c) = {
            let (s, c) = pair().await;
            (s.stream, c)
        };
        c.write_all(b"st: x\r\n\r\n").await.unwrap();
        let mut s = Session::new(stream, BytesMut::from(&b"GET /p HTTP/1.1\r\nHo"[..]));
        assert!(s.read_request().await.unwrap());
        assert_eq!(&s.raw_head()[..], b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(s.req_header().headers["host"], "x");
    }

    #[tokio::test]
    async fn http_1_0_keeps_alive_only_when_asked() {
        for (request, keep) in [
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: te, Close\r\n\r\n", false),
            // As Pingora: only an exact `keep-alive` counts, the version decides else.
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive, te\r\n\r\n",
                false,
            ),
        ] {
            let (mut s, _c) = sent(request.as_bytes()).await;
            assert!(s.read_request().await.unwrap());
            assert_eq!(s.will_keepalive(), keep, "{request:?}");
            // A caller's `Some` does not override the client's `close`.
            s.set_keepalive(Some(60));
            let closes = request.to_ascii_lowercase().contains("close");
            assert_eq!(s.will_keepalive(), !closes, "{request:?}");
            s.set_keepalive(None);
            assert!(!s.will_keepalive());
        }
    }

    #[tokio::test]
    async fn the_connection_reports_its_addresses() {
        let (s, c) = pair().await;
        let client = s.client_addr().and_then(|a| a.as_inet()).copied();
        assert_eq!(client, Some(c.local_addr().unwrap()));
        let server = s.server_addr().and_then(|a| a.as_inet()).copied();
        assert_eq!(server, Some(c.peer_addr().unwrap()));
        assert!(s.ssl_digest().is_none());
    }

    #[tokio::test]
    async fn an_upgrade_gets_the_bytes_read() {
        let (mut s, _c) = sent(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe").await;
        assert!(s.read_request().await.unwrap());
        assert!(s.is_upgrade_req());
        let (_stream, bytes) = s.into_upgrade();
        assert_eq!(
            &bytes[..],
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe"
        );
    }
}
