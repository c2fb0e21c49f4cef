//! The traffic listener's connections, before and between requests: Sluice's own
//! [`ServerApp`] in front of Pingora's HTTP server.
//!
//! Pingora 0.9 bounds each read of a request head separately (a client sending a byte
//! every few seconds never times out), waits for the h2c preface without a timeout and
//! keeps an HTTP/1.1 connection idle forever once a request without `Keep-Alive:
//! timeout` has been served. [`Admit`] therefore, for each connection:
//! 0. counts it on the worker thread that serves it: with `balance_connections`, the
//!    one with the fewest connections open, not Pingora's random pick ([`balance`]);
//! 1. admits it against `[connections]` and the open-file ceiling, or answers 503 and
//!    closes ([`limits`]); on a TLS listener, runs the handshake on the serving thread
//!    within `timeouts.header_ms` ([`handshake`]; a refused TLS connection is closed),
//!    and holds an HTTP/1 connection's writes until flushed: one TLS record a small
//!    response ([`records`]);
//! 2. with `h2c` on, tells HTTP/2 from HTTP/1 by the first differing byte, within
//!    `timeouts.h2_preface_ms` ([`preface`]);
//! 3. serves HTTP/1 requests itself, one after the other on Sluice's own session
//!    (`crate::downstream::h1`; pipelined requests in order), each request head
//!    within `timeouts.header_ms` of its first byte (of the accept, for the first one),
//!    the wait between requests within `timeouts.keepalive_ms`, body reads and response
//!    writes within `body_idle_ms` and `send_idle_ms` of progress;
//! 4. serves HTTP/2 connections with Pingora's HTTP/2 session, each stream a request
//!    of the same loop on the connection's own thread ([`h2`]; idle connections close
//!    after `keepalive_ms`), served by the connection's workers ([`crew`]).
//!
//! Each request is lent the connection's [`RequestSlot`] as its [`Admission`]: the
//! request loop tells it when the head is read (which stops the head timer and takes
//! the request's slot under `connections.max_h1_in_flight`), and reads from it the
//! target as the client sent it.

pub mod balance;
pub mod crew;
pub mod h2;
pub mod handshake;
pub mod limits;
pub mod preface;
pub mod records;
pub mod rehome;
pub mod target;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

pub use limits::{fd_ceiling, LimitRefusal, Tracker};

use crate::downstream::h1::{Kept, Session as H1Session};
use crate::forward::{Admission, Forwarder};
use crate::metrics::metrics;
use crate::policy::{ConnectionLimits, Timeouts};
use crate::snapshot::Live;
use limits::InFlight;
use preface::Sniffed;

/// What a refused connection reads before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n";

/// The context of the error that refuses a request over `max_h1_in_flight`.
const REFUSED_REQUEST: &str = "sluice: too many HTTP/1 requests in flight";

/// One HTTP/1 request's link between [`Admit`] and the request loop: lent to the
/// loop with the request ([`Admission`]), reset for the connection's next one.
struct RequestSlot {
    head_read: AtomicBool,
    tracker: Arc<Tracker>,
    max_in_flight: usize,
    in_flight: OnceLock<InFlight>,
    /// The target as sent, when [`target`] had to encode it for the parser.
    original_target: OnceLock<Vec<u8>>,
}

impl RequestSlot {
    /// Drops the request's state (its in-flight permit released), ready for the
    /// connection's next request.
    fn empty(&mut self) {
        self.in_flight.take();
        self.original_target.take();
        *self.head_read.get_mut() = false;
    }
}

impl Admission for RequestSlot {
    /// Stops the head timer and takes a slot under `connections.max_h1_in_flight`: an
    /// error (503) when none is left.
    fn head_read(&self) -> pingora::Result<()> {
        self.head_read.store(true, Ordering::Release);
        match self.tracker.start_request(self.max_in_flight) {
            Ok(permit) => {
                let _ = self.in_flight.set(permit);
                Ok(())
            }
            Err(r) => {
                r.count();
                Err(Error::create(
                    ErrorType::HTTPStatus(503),
                    ErrorSource::Internal,
                    Some(REFUSED_REQUEST.into()),
                    None,
                ))
            }
        }
    }

    fn original_target(&self) -> Option<&[u8]> {
        self.original_target.get().map(Vec::as_slice)
    }
}

/// Whether `e` is the refusal of [`Admission::head_read`] (expected under load: not an error
/// worth a log line).
pub fn is_refusal(e: &Error) -> bool {
    e.etype() == &ErrorType::HTTPStatus(503)
        && e.context
            .as_ref()
            .is_some_and(|c| c.as_str() == REFUSED_REQUEST)
}

/// Counts downstream read and write timeouts Pingora reports for a request (body idle,
/// send idle).
pub fn count_error(e: &Error) {
    if e.esource() != &ErrorSource::Downstream {
        return;
    }
    let phase = match e.etype() {
        ErrorType::ReadTimedout => "body_idle",
        ErrorType::WriteTimedout => "send_idle",
        _ => return,
    };
    metrics()
        .connection_timeouts
        .with_label_values(&[phase])
        .inc();
}

/// Sluice's [`ServerApp`]: admits, times and sorts connections, then serves their
/// requests with Sluice's own loop ([`Forwarder`]); the HTTP application `A` (Pingora's
/// `HttpProxy`) only gets the upgrade requests the loop hands over.
pub struct Admit<A> {
    app: Arc<A>,
    forwarder: Arc<Forwarder>,
    live: Arc<Live>,
    tracker: Arc<Tracker>,
    /// The TLS listeners' addresses and their handshake ([`Admit::with_tls`]).
    tls: Option<(Vec<SocketAddr>, Arc<Acceptor>)>,
}

impl<A> Admit<A> {
    /// Wraps `app` (upgrades) and `forwarder` (HTTP/1 requests, HTTP/2 streams);
    /// timeouts and limits are read from the live policy per connection.
    pub fn new(app: A, forwarder: Forwarder, live: Arc<Live>, tracker: Arc<Tracker>) -> Self {
        Admit {
            app: Arc::new(app),
            forwarder: Arc::new(forwarder),
            live,
            tracker,
            tls: None,
        }
    }

    /// Connections accepted on `listen` (bound as plain TCP listeners) are TLS: Sluice
    /// runs their handshake with `acceptor` after moving the socket to the serving
    /// thread ([`rehome`]), within the request-head deadline, and after the connection
    /// limits admitted them (a refused one is closed without a handshake).
    pub fn with_tls(mut self, listen: Vec<SocketAddr>, acceptor: Acceptor) -> Self {
        self.tls = Some((listen, Arc::new(acceptor)));
        self
    }

    /// The handshake for a connection accepted on `local`, when its listener is TLS.
    fn tls_for(&self, local: Option<SocketAddr>) -> Option<&Arc<Acceptor>> {
        let (listen, acceptor) = self.tls.as_ref()?;
        let local = local?;
        listen
            .iter()
            .any(|l| l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip()))
            .then_some(acceptor)
    }
}

fn timed_out(phase: &str) {
    metrics()
        .connection_timeouts
        .with_label_values(&[phase])
        .inc();
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

#[async_trait]
impl<A> ServerApp for Admit<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        // The live policy's connection settings, read once, before any move.
        let (policy, spread) = {
            let snap = self.live.load();
            let p = &snap.policy;
            ((p.timeouts, p.connections, p.h2c), p.balance_connections)
        };
        let (served, elsewhere) = balance::place(spread);
        let Some(worker) = elsewhere else {
            let _served = served;
            self.serve(stream, shutdown, accepted, policy).await;
            return None;
        };
        // A less loaded worker serves it, on its own: nothing waits for it here (a
        // wake-up back to this thread when it ends would be one more per connection).
        let this = Arc::clone(self);
        let shutdown = shutdown.clone();
        drop(worker.spawn(async move {
            let _served = served;
            this.serve(stream, &shutdown, accepted, policy).await;
        }));
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.app).await;
    }
}

impl<A> Admit<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// A connection accepted at `accepted`, on the worker that serves it: admitted
    /// against the limits, its TLS handshake and h2c preface, then its requests
    /// ([`Self::serve_h1`], [`h2`]), under the policy's timeouts, limits and `h2c` read
    /// when it was accepted.
    async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
        accepted: Instant,
        (timeouts, limits, h2c): (Timeouts, ConnectionLimits, bool),
    ) {
        let stream = rehome::rehome(stream);
        let digest = stream.get_socket_digest();
        let local = digest
            .as_ref()
            .and_then(|d| d.local_addr())
            .and_then(|a| a.as_inet())
            .copied();
        let peer = digest
            .as_ref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = self.tls_for(local);
        let _conn = match self.tracker.admit(local, peer, &limits) {
            Ok(c) => c,
            Err(r) => {
                r.count();
                tracing::debug!(reason = r.label(), peer = ?peer, "connection refused");
                if tls.is_none() {
                    refuse(stream, &self.tracker).await;
                }
                return;
            }
        };
        let head_deadline = accepted + timeouts.header;
        let stream = match tls {
            None => stream,
            Some(acceptor) => {
                match tokio::time::timeout_at(head_deadline, handshake::accept(acceptor, stream))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, peer = ?peer, "TLS handshake failed");
                        metrics().tls_handshake_failures.inc();
                        return;
                    }
                    Err(_) => {
                        timed_out("tls_handshake");
                        return;
                    }
                }
            }
        };
        let stream = if stream.get_ssl_digest().is_some() {
            if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                h2::serve(&self.app, &self.forwarder, stream, shutdown).await;
                return;
            }
            // HTTP/1 over TLS: a response's writes sealed as one record.
            records::Coalesced::wrap(stream)
        } else if h2c {
            match preface::sniff(stream, timeouts.h2_preface.min(timeouts.header), shutdown).await {
                Sniffed::H2(s) => {
                    h2::serve(&self.app, &self.forwarder, s, shutdown).await;
                    return;
                }
                Sniffed::H1(s) => s,
                Sniffed::TimedOut => {
                    timed_out("h2_preface");
                    return;
                }
                Sniffed::Gone => return,
            }
        } else {
            stream
        };
        self.serve_h1(
            stream,
            timeouts,
            limits.max_h1_in_flight,
            head_deadline,
            shutdown,
        )
        .await;
    }

    /// The HTTP/1 keep-alive loop, one session of Sluice's a request, with a deadline
    /// on each request head and on the idle time between requests.
    async fn serve_h1(
        self: &Arc<Self>,
        mut stream: Stream,
        t: Timeouts,
        max_in_flight: usize,
        mut head_deadline: Instant,
        shutdown: &ShutdownWatch,
    ) {
        // The connection's requests' slot, emptied after each.
        let mut slot = RequestSlot {
            head_read: AtomicBool::new(false),
            tracker: self.tracker.clone(),
            max_in_flight,
            in_flight: OnceLock::new(),
            original_target: OnceLock::new(),
        };
        // The bytes of the next request read while waiting for it (`wait_readable`).
        let mut first_read = BytesMut::new();
        // What each request's session hands the next (buffers, timer, digests).
        let mut kept = Kept::default();
        // The connection's one timer: the deadline of the head being read, then of
        // the wait for the next request (`wait_readable`), reset for each.
        let timer = tokio::time::sleep_until(head_deadline);
        tokio::pin!(timer);
        loop {
            // Split off, not taken: the buffer stays this connection's, and once the
            // request that read its bytes is over, the next wait reuses it in place
            // (`BytesMut::reserve` reclaims a buffer nothing else holds): no
            // allocation a kept-alive request.
            let first = first_read.split();
            // A head read whole while waiting for it cannot be late: no deadline for it.
            let head_in_hand = holds_head(&first);
            let reused = {
                // Built in its pinned place: the request's future is large (kilobytes),
                // and every move of it (into a `pin!`, or a `select!` over it by
                // value) would copy all of it on every request.
                let mut served = std::pin::pin!(async {
                    let mut stream = stream;
                    // The request line first (within the head deadline below): a target
                    // the parser would refuse is encoded, the original kept (`target`).
                    let start = target::read_line(&mut stream, first).await;
                    if let Some(verdict) = start.verdict {
                        // A line no route can take: answered (or closed) before parsing.
                        metrics()
                            .bad_requests
                            .with_label_values(&[verdict.reason()])
                            .inc();
                        tracing::info!(reason = verdict.reason(), "request line refused");
                        if let Some(answer) = verdict.answer() {
                            let _ = stream.write_all(&answer).await;
                            let _ = stream.flush().await;
                        }
                        let _ = stream.shutdown().await;
                        return None;
                    }
                    if let Some(original) = start.original {
                        let _ = slot.original_target.set(original);
                    }
                    // The bytes read are this request's first (read while waiting
                    // for it, or sent with the last one: pipelined).
                    let mut session = H1Session::after(stream, start.bytes, kept);
                    if *shutdown.borrow() {
                        session.set_keepalive(None);
                    } else {
                        // The head read then keeps it or not as the client asks.
                        session.set_keepalive(Some(whole_seconds(t.keepalive)));
                    }
                    session.set_read_timeout(Some(t.body_idle));
                    session.set_write_timeout(Some(t.send_idle));
                    self.forwarder
                        .serve_h1(session, shutdown, &self.app, &slot)
                        .await
                });
                if head_in_hand {
                    served.await
                } else {
                    timer.as_mut().reset(head_deadline);
                    let head_timer = async {
                        timer.as_mut().await;
                        if slot.head_read.load(Ordering::Acquire) {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        biased;
                        r = &mut served => r,
                        _ = head_timer => {
                            timed_out("header");
                            return;
                        }
                    }
                }
            };
            // The request is over: its in-flight permit goes back now.
            slot.empty();
            let Some((next, next_kept)) = reused else {
                return;
            };
            stream = next;
            kept = next_kept;
            let pipelined = kept.take_pipelined();
            if !pipelined.is_empty() {
                // The client sent the next request with this one (pipelined): served
                // next, its head within `header_ms` from now, no wait for more bytes.
                first_read = pipelined;
                head_deadline = Instant::now() + t.header;
                continue;
            }
            // Stopping: one last call (`preface::LAST_CALL`) for a request already on its
            // way, answered with `Connection: close`; TLS streams, which `wait_readable`
            // does not wait on, close.
            head_deadline = match preface::wait_readable(
                &mut stream,
                &mut first_read,
                timer.as_mut(),
                t.keepalive,
                shutdown,
            )
            .await
            {
                Some(true) => Instant::now() + t.header,
                Some(false) => return,
                None if *shutdown.borrow() => return,
                None => Instant::now() + t.keepalive + t.header,
            };
        }
    }
}

/// Whether `bytes` (the start of a request) hold its whole head: its end, an empty
/// line, is in them. Only CRLF line ends are looked for; a head ending in bare line
/// feeds is read under its deadline as any other. Most reads end where the head does
/// (a request without a body): looked at first.
fn holds_head(bytes: &[u8]) -> bool {
    const END: &[u8] = b"\r\n\r\n";
    // Built once: building a searcher costs more than a head's scan.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(END));
    bytes.ends_with(END) || FINDER.find(bytes).is_some()
}

/// Answers a refused connection 503 (HTTP/1 only: an h2 client just sees the close),
/// half-closes it and drains what the client sent, so that the answer is read rather
/// than reset; all within a second.
async fn refuse(mut stream: Stream, tracker: &Arc<Tracker>) {
    let Some(_slot) = tracker.start_refusing() else {
        return;
    };
    let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
    let work = async {
        if !h2 {
            stream.write_all(REFUSED).await?;
            stream.flush().await?;
        }
        AsyncWriteExt::shutdown(&mut stream).await?;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                k => total += k,
            }
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), work).await;
}

#[cfg(test)]
mod tests {
    use super::holds_head;

    #[test]
    fn a_head_is_held_once_its_empty_line_is() {
        assert!(holds_head(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"));
        // A body, or the next request, after it.
        assert!(holds_head(
            b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\nab"
        ));
        assert!(!holds_head(b""));
        assert!(!holds_head(b"GET / HTTP/1.1\r\nhost: x\r\n"));
        assert!(!holds_head(b"GET / HTTP/1.1\r\nhost: x\r\n\r"));
        // Bare line feeds: left to the head's deadline.
        assert!(!holds_head(b"GET / HTTP/1.1\nhost: x\n\n"));
    }
}
