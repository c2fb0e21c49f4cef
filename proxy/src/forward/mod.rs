//! Sluice's own request loop, on pingora-core: one HTTP/1 request or HTTP/2 stream
//! from its head to its log line, driving the [`Sluice`] hooks (the same hooks
//! pingora-proxy drives for upgrades) without pingora-proxy's generic machinery (two
//! channels and a nine-branch `select!` per request, a shared upstream pool). It calls
//! them as plain methods of [`Sluice`], not through `ProxyHttp`, whose `async_trait`
//! boxes every call's future.
//!
//! | step | module |
//! |---|---|
//! | read the head (the listener times it), 405 for `CONNECT`, `100 Continue` when asked | here |
//! | the listener admits the request ([`Admission`]); upgrades go to pingora-proxy | here, [`handoff`] |
//! | `request_filter` (routing, the request phases) | here |
//! | peer, connection (per-thread pool), request head, body | [`exchange`], [`pool`], [`request`] |
//! | the client side: Sluice's HTTP/1 client, Pingora's for HTTP/2 | [`upstream`], [`h1`] |
//! | response head and body through the response phases (pool and component routes) | [`relay`] |
//! | retries on another peer, `fail_to_proxy`, `logging`, keep-alive | here |
//!
//! Bodies go one way then the other: the request body (streamed through the chain, or
//! the one the chain already holds) is sent whole before the response is read, as
//! nginx does with an unbuffered request body.

pub mod exchange;
pub mod h1;
pub mod handoff;
pub mod pool;
pub mod relay;
pub mod request;
pub mod upstream;

use std::io::Cursor;
use std::sync::Arc;

use pingora::apps::HttpServerApp;
use pingora::connectors::http::Connector;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;

use crate::downstream::h1::{Kept, Session as H1Session};
use crate::downstream::Downstream;
use crate::proxy::{Ctx, Sluice};

/// Attempts per request at most (Pingora's default `max_retries`); the pool's
/// `retries` decides within it.
const MAX_ATTEMPTS: usize = 16;

/// What the listener that read an HTTP/1 request asks of it ([`crate::listener`]),
/// passed with the request rather than looked up by the hooks: nothing is set or
/// swapped per poll of the request's future.
pub trait Admission: Sync {
    /// The head is read: its deadline stops, and the request takes its slot under
    /// `connections.max_h1_in_flight`. An error (a 503 refusal) when none is left.
    fn head_read(&self) -> Result<()>;

    /// The request target as the client sent it, when the listener encoded bytes of
    /// it for Pingora's parser.
    fn original_target(&self) -> Option<&[u8]>;
}

/// The HTTP/1 request loop and the connectors it uses.
pub struct Forwarder {
    sluice: Sluice,
    /// New HTTP/1 connections (plain or TLS); reused ones come from [`pool`].
    transport: TransportConnector,
    /// HTTP/2 upstreams (Pingora's shared pool multiplexes streams on a connection).
    h2: Connector,
}

impl Forwarder {
    /// A loop serving `sluice`'s hooks, with connectors set up from `conf`.
    pub fn new(sluice: Sluice, conf: &ServerConf) -> Self {
        Forwarder {
            sluice,
            transport: TransportConnector::new(Some(ConnectorOptions::from_server_conf(conf))),
            h2: Connector::new(Some(ConnectorOptions::from_server_conf(conf))),
        }
    }

    /// Serves one request of an HTTP/1 connection on Sluice's own session: reads its
    /// head, proxies it, and gives the stream back when the connection can carry
    /// another, with what its next request's session keeps. `app` (pingora-proxy)
    /// takes the upgrades this loop leaves to it ([`handoff`]); `admission` is the
    /// listener's hold on the request.
    pub async fn serve_h1<A>(
        &self,
        mut downstream: H1Session,
        shutdown: &ShutdownWatch,
        app: &Arc<A>,
        admission: &dyn Admission,
    ) -> Option<(Stream, Kept)>
    where
        A: HttpServerApp + Send + Sync + 'static,
    {
        let read = downstream.read_request().await;
        if !read_head(read, &mut Downstream::H1(&mut downstream)).await {
            return None;
        }
        // The head is read: its timer stops, and the request is admitted or refused
        // (answered by `run`, an upgrade as any other request).
        let admitted = admission.head_read();
        let original_target = admission.original_target();
        if admitted.is_ok() && downstream.is_upgrade_req() {
            // Boxed: pingora-proxy's request future is large and upgrades are rare.
            return Box::pin(handoff::run(downstream, app, shutdown, original_target))
                .await
                .map(|stream| (stream, Kept::default()));
        }
        if *shutdown.borrow() {
            downstream.set_keepalive(None);
        }
        if expects_continue(downstream.req_header(), downstream.is_body_empty()) {
            // The body is read by Sluice (the filters, the upstream after them): say so.
            if downstream.write_continue().await.is_err() {
                return None;
            }
            downstream
                .req_header_mut()
                .remove_header(&http::header::EXPECT);
        }
        let mut ctx = self.sluice.new_ctx();
        ctx.original_target = original_target.map(<[u8]>::to_vec);
        let reuse = self
            .run(&mut Downstream::H1(&mut downstream), &mut ctx, admitted)
            .await;
        if !reuse {
            return None;
        }
        downstream.finish().await
    }

    /// Serves one HTTP/2 stream on Pingora's session. `shell` is the [`Shell`] of the
    /// worker serving it, kept across the streams it serves.
    pub async fn serve_h2(
        &self,
        mut downstream: ServerSession,
        shell: &mut Shell,
        shutdown: &ShutdownWatch,
    ) {
        let read = downstream.read_request().await;
        let session = shell.session();
        let placeholder = std::mem::replace(&mut *session.downstream_session, downstream);
        let mut client = Downstream::Pingora(session);
        if read_head(read.map(|_| true), &mut client).await {
            if *shutdown.borrow() {
                client.set_keepalive(None);
            }
            let body_empty = client.is_body_empty();
            if expects_continue(client.req_header(), body_empty) {
                // HTTP/2 has no `100 Continue` to send before the body is read.
                client.req_header_mut().remove_header(&http::header::EXPECT);
            }
            let mut ctx = self.sluice.new_ctx();
            self.run(&mut client, &mut ctx, Ok(())).await;
        }
        let downstream = std::mem::replace(&mut *session.downstream_session, placeholder);
        // Ends the stream if the response is complete and not ended yet; else the stream
        // is reset when dropped.
        let _ = downstream.finish().await;
    }

    /// The hooks in order, the attempts, the error answer and the log; whether the
    /// client connection can carry another request. `admitted`: the listener's
    /// verdict on the request ([`Admission::head_read`]).
    async fn run(&self, session: &mut Downstream<'_>, ctx: &mut Ctx, admitted: Result<()>) -> bool {
        let s = &self.sluice;
        if let Err(e) = admitted {
            return self.failed(session, ctx, e).await;
        }
        match s.request_filter(session, ctx).await {
            Ok(true) => {
                s.logging(session, None, ctx).await;
                return true;
            }
            Ok(false) => {}
            Err(e) => return self.failed(session, ctx, e).await,
        }
        let mut error = None;
        let mut reuse = false;
        for _ in 0..MAX_ATTEMPTS {
            let attempt = self.attempt(session, ctx).await;
            reuse = attempt.downstream_reusable;
            match attempt.error {
                Some(e) => {
                    // A body partly or wholly streamed from the client is gone: no
                    // other peer can get it whole.
                    let retry = e.retry() && (ctx.body_held() || session.body_bytes_read() == 0);
                    if retry {
                        tracing::debug!(error = %e, "retrying on another peer");
                    }
                    error = Some(e);
                    if !retry {
                        break;
                    }
                }
                None => {
                    error = None;
                    break;
                }
            }
        }
        if let Some(e) = &error {
            reuse = self.answer_error(session, ctx, e).await && reuse;
        }
        s.logging(session, error.as_deref(), ctx).await;
        reuse
    }

    /// A request that failed before reaching a pool: its error answer and its log.
    async fn failed(&self, session: &mut Downstream<'_>, ctx: &mut Ctx, e: Box<Error>) -> bool {
        let reuse = self.answer_error(session, ctx, &e).await;
        self.sluice.logging(session, Some(&e), ctx).await;
        reuse
    }

    /// The error answer (`fail_to_proxy`) and its log line; whether the client
    /// connection can carry another request.
    async fn answer_error(&self, session: &mut Downstream<'_>, ctx: &mut Ctx, e: &Error) -> bool {
        let s = &self.sluice;
        let r = s.fail_to_proxy(session, e, ctx).await;
        if !s.suppress_error_log(ctx, e) {
            tracing::warn!(error = %e, status = r.error_code, "request failed");
        }
        r.can_reuse_downstream
    }
}

/// Counts a request refused before routing (`sluice_bad_requests_total{reason}`).
fn refused(reason: &str) {
    crate::metrics::metrics()
        .bad_requests
        .with_label_values(&[reason])
        .inc();
}

/// `Expect: 100-continue` on a request with a body.
fn expects_continue(head: &RequestHeader, body_empty: bool) -> bool {
    head.headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && !body_empty
}

/// What the head's read gave (`read`): `true` when there is a request to serve. A head
/// the parser refuses is answered 400, a `CONNECT` 405, and the connection closed; a
/// client gone before a byte is closed quietly.
async fn read_head(read: Result<bool>, client: &mut Downstream<'_>) -> bool {
    match read {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                // A head the HTTP/1 parser refuses (an unknown version, a malformed
                // request or header line): 400 before any filter (docs/POLICY.md).
                refused("bad_head");
                tracing::info!(error = %e, "request head refused");
                let _ = client.respond_error(400).await;
            }
            client.shutdown().await;
            return false;
        }
    }
    if client.req_header().method == http::Method::CONNECT {
        // As pingora-proxy: CONNECT changes how the message is framed.
        refused("connect");
        tracing::info!("CONNECT refused");
        let _ = client.respond_error(405).await;
        client.shutdown().await;
        return false;
    }
    true
}

/// pingora-proxy's session type, in which an HTTP/2 stream is served
/// (`Downstream::Pingora`), built once per worker of a connection: it holds a
/// placeholder HTTP session that each stream's real one replaces while the stream
/// runs (the rest of it, cache and module state, stays unused here), so a stream
/// after the first allocates none of it.
#[derive(Default)]
pub struct Shell(Option<Session>);

impl Shell {
    fn session(&mut self) -> &mut Session {
        self.0.get_or_insert_with(|| {
            // A stream that is never read or written.
            let placeholder: Stream = Box::new(Cursor::new(Vec::new()));
            Session::new_h1(placeholder)
        })
    }
}
