//! HTTP/2 client connections: the handshake, then every stream served by a task on the
//! connection's own thread.
//!
//! Pingora's accept loop spawns each stream on a *random* worker runtime
//! (`pingora_runtime::current_handle()`), while the codec that owns the socket runs on
//! the connection's task: every frame of a stream served elsewhere costs a wake-up
//! across threads, both ways (issue #18: HTTP/2 requests cost 1.5x HTTP/1's CPU).
//! This loop keeps Pingora's behaviour (a graceful GOAWAY on shutdown while the
//! connection drains, the idle timeout once no stream is in flight, the connection torn
//! down after [`MAX_REJECTED`] malformed streams) and spawns the tasks that serve the
//! streams with `tokio::spawn`, which on a worker's single-threaded runtime stays on
//! this thread.
//! Each stream is one request of Sluice's own loop ([`Forwarder`]), as an HTTP/1
//! request is: the same hooks, the per-thread upstream pool. The streams are served
//! by the connection's workers ([`super::crew`]), tasks that each serve one stream
//! after the other in the same [`Shell`], as an HTTP/1 connection keeps its shell
//! across its requests: building one is ~1.3 k instructions and several allocations
//! (issue #18). Workers and shells stay within their connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerApp;
use pingora::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use super::crew::{Crew, Post};
use crate::forward::{Forwarder, Shell};

/// Malformed streams a connection may open before it is closed (Pingora's bound).
pub const MAX_REJECTED: usize = 32;

/// Serves one HTTP/2 connection (TLS with ALPN `h2`, or h2c after the preface sniff)
/// with `forwarder` (`app` gives the HTTP/2 settings and idle timeout) until the
/// client closes it, it idles out, or it drains after shutdown.
pub async fn serve<A>(
    app: &Arc<A>,
    forwarder: &Arc<Forwarder>,
    stream: Stream,
    shutdown: &ShutdownWatch,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut conn = match handshake(stream, app.h2_options()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
    };
    let idle = app.server_options().and_then(|o| o.h2_idle_timeout);
    let active = Arc::new(InFlight::default());
    let crew = Closing(Arc::default());
    let mut signal = shutdown.clone();
    let mut draining = false;
    let mut rejected = 0;
    loop {
        let next = if draining {
            HttpSession::from_h2_conn(&mut conn, digest.clone()).await
        } else {
            tokio::select! {
                // The signal first, so that a shutdown is seen even under a flood of streams.
                biased;
                _ = signal.changed() => {
                    conn.graceful_shutdown();
                    draining = true;
                    continue;
                }
                next = HttpSession::from_h2_conn(&mut conn, digest.clone()) => next,
                _ = active.idle_for(idle.unwrap_or_default()), if idle.is_some() => return,
            }
        };
        match next {
            // Clients often drop TCP without closing HTTP/2: not worth a log line.
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                return;
            }
            Ok(None) => return,
            Ok(Some(H2Accept::Rejected)) => {
                rejected += 1;
                if rejected >= MAX_REJECTED {
                    tracing::warn!(rejected, "HTTP/2 connection closed after malformed streams");
                    return;
                }
            }
            Ok(Some(H2Accept::Session(session))) => {
                let job = Job {
                    session,
                    guard: active.start(),
                };
                if let Some(job) = crew.0.hand(job) {
                    // No worker waits: a new one starts with this stream. Boxed here,
                    // once: `tokio::spawn` boxes only futures over 16 KiB itself, and
                    // moves a smaller one by value through several calls on its way
                    // to the task's cell, each a copy of all of it.
                    let work = work(job, crew.0.clone(), forwarder.clone(), shutdown.clone());
                    tokio::spawn(Box::pin(work));
                }
            }
        }
    }
}

/// A stream for a worker: its session, and its count among the streams in flight.
struct Job {
    session: HttpSession,
    guard: Guard,
}

/// The connection's crew, closed when the connection's loop ends however it does.
struct Closing(Arc<Crew<Job>>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A worker of the connection's [`Crew`]: serves `first`, then the streams handed to
/// it, one after the other in one shell, each stream's future built in place in this
/// task's state.
async fn work(
    first: Job,
    crew: Arc<Crew<Job>>,
    forwarder: Arc<Forwarder>,
    shutdown: ShutdownWatch,
) {
    let post = Post::new();
    let mut shell = Shell::default();
    let mut next = Some(first);
    while let Some(Job { session, guard }) = next {
        {
            let served = std::pin::pin!(async {
                let session = ServerSession::new_http2(session);
                forwarder.serve_h2(session, &mut shell, &shutdown).await;
            });
            served.await;
        }
        // The stream is over before the worker waits for the next one.
        drop(guard);
        next = crew.next(&post).await;
    }
}

/// Streams in flight on one connection, for the idle timeout.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    fn start(self: &Arc<Self>) -> Guard {
        self.count.fetch_add(1, Ordering::Relaxed);
        Guard(self.clone())
    }

    /// Returns once no stream has been in flight for `after`.
    async fn idle_for(&self, after: Duration) {
        while self.count.load(Ordering::Relaxed) != 0 {
            self.idle.notified().await;
        }
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
    }
}

/// One stream in flight; the last one to end wakes the idle wait.
struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle.notify_one();
        }
    }
}
