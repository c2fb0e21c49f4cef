//! One attempt of a request on one peer: the peer, a connection, the request head and
//! body through the hooks, the response head and body back through them ([`relay`]).

use crate::downstream::Downstream;
use std::time::Instant;

use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::Peer;

use super::h1::response_head::{Case, Form};
use super::relay::{self, down, up};
use super::upstream::Upstream;
use super::{h1, pool, request, Forwarder};
use crate::proxy::Ctx;

/// How an attempt ended.
pub struct Attempt {
    /// The client connection can carry another request.
    pub downstream_reusable: bool,
    /// Why it failed (after `fail_to_connect` or `error_while_proxy`), with its retry flag.
    pub error: Option<Box<Error>>,
}

/// How long a parked connection to `peer` stays usable (the pool's, else a minute).
fn idle_timeout(peer: &HttpPeer) -> std::time::Duration {
    peer.idle_timeout()
        .unwrap_or(std::time::Duration::from_secs(60))
}

impl Forwarder {
    /// Picks a peer, gets a connection and runs the exchange on it.
    pub(super) async fn attempt(&self, session: &mut Downstream<'_>, ctx: &mut Ctx) -> Attempt {
        let s = &self.sluice;
        let peer = match s.upstream_peer(session, ctx).await {
            Ok(p) => p,
            Err(e) => {
                return Attempt {
                    downstream_reusable: false,
                    error: Some(e),
                }
            }
        };
        let h2 = !matches!(peer.options.alpn, ALPN::H1);
        // The peer's key in this thread's pool, hashed once for the take and the put
        // (Pingora's `reuse_hash` hashes the peer's fields on every call).
        let key = (!h2).then(|| peer.reuse_hash());
        // The pool's idle test reads no clock of its own: the request's upstream start,
        // read by `upstream_peer` just before, is its "now".
        let now = ctx.upstream_started().unwrap_or_else(Instant::now);
        let (mut client, reused) = match self.connect(&peer, key, now).await {
            Ok(c) => c,
            Err(e) => {
                let e = s.fail_to_connect(session, &peer, ctx, up(e));
                return Attempt {
                    downstream_reusable: false,
                    error: Some(up(e)),
                };
            }
        };
        client.set_timeouts(peer.options.read_timeout, peer.options.write_timeout);
        match self
            .exchange(session, ctx, &mut client, h2, peer.is_tls())
            .await
        {
            Ok(()) => {
                if let Some(ended) = self.release(client, &peer, key).await {
                    ctx.set_ended(ended);
                }
                Attempt {
                    downstream_reusable: true,
                    error: None,
                }
            }
            Err(error) => {
                if let Upstream::Pingora(mut session) = client {
                    if let ClientSession::H2(_) = *session {
                        // The stream is reset; the connection serves other streams.
                        session.shutdown().await;
                        self.release(Upstream::Pingora(session), &peer, key).await;
                    }
                }
                let e = s.error_while_proxy(&peer, session, error, ctx, reused);
                Attempt {
                    downstream_reusable: false,
                    error: Some(e),
                }
            }
        }
    }

    /// A connection to `peer`: HTTP/1 (its pool `key` given) from this thread's pool as
    /// it stands at `now`, or new; HTTP/2 (no `key`) from Pingora's shared connector.
    /// Whether it was reused.
    async fn connect(
        &self,
        peer: &HttpPeer,
        key: Option<u64>,
        now: Instant,
    ) -> Result<(Upstream, bool)> {
        // A new connection's future (TCP, TLS) is large and rarely taken: boxed, so
        // that every attempt's state stays small (~9 KiB less).
        let Some(key) = key else {
            let (session, reused) = Box::pin(self.h2.get_http_session(peer)).await?;
            return Ok((Upstream::Pingora(Box::new(session)), reused));
        };
        if let Some(idle) = pool::take(key, idle_timeout(peer), now) {
            return Ok((Upstream::H1(h1::Client::reusing(idle)), true));
        }
        let stream = Box::pin(self.transport.new_stream(peer)).await?;
        Ok((Upstream::H1(h1::Client::new(stream)), false))
    }

    /// Gives a connection whose exchange ended cleanly back for reuse: to this
    /// thread's pool (under `key`), or to the connector it came from (HTTP/2 peers,
    /// also when they answered ALPN with HTTP/1.1). When it read the clock to park the
    /// connection, that reading: the request's end for its log (one reading for both).
    async fn release(
        &self,
        client: Upstream,
        peer: &HttpPeer,
        key: Option<u64>,
    ) -> Option<Instant> {
        match client {
            Upstream::H1(h1) => {
                // HTTP/1 connections come from peers with a key (see `connect`).
                debug_assert!(key.is_some());
                let key = key?;
                // The response's `Connection` and framing decide, and that nothing
                // follows its body.
                let idle = h1.into_reusable().await?;
                let now = Instant::now();
                pool::put(key, idle, idle_timeout(peer), now);
                Some(now)
            }
            Upstream::Pingora(session) => {
                self.h2
                    .release_http_session(*session, peer, peer.idle_timeout())
                    .await;
                None
            }
        }
    }

    /// Request head and body upstream, response head and body downstream.
    async fn exchange(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        client: &mut Upstream,
        h2: bool,
        tls: bool,
    ) -> Result<()> {
        let s = &self.sluice;
        let has_body = !session.is_body_empty();
        let sent = match client {
            Upstream::H1(c) if s.upstream_request_unchanged(ctx) => {
                // The filters' deferred edits, then the metadata not yet in the client's
                // head, replace its fields of those names.
                let added = ctx.forwarded.as_ref();
                let (edits, edited) = ctx.deferred_edits().unzip();
                let dropped = |n: &http::HeaderName| {
                    request::dropped(n)
                        || added.is_some_and(|a| a.replaces(n))
                        || edited.as_ref().is_some_and(|e| e(n))
                };
                let id = ctx.request_id();
                let fields = edits
                    .into_iter()
                    .flatten()
                    .chain(added.into_iter().flat_map(|a| a.fields(id)));
                c.write_forwarded_head(session.req_header(), has_body, dropped, fields)
                    .await
                    .map_err(up)?;
                true
            }
            _ => false,
        };
        if !sent {
            let mut head = request::upstream_head(session.req_header(), h2);
            s.upstream_request_filter(session, &mut head, ctx).await?;
            request::frame(&mut head, has_body, h2, tls)?;
            client.write_request_header(head).await.map_err(up)?;
        }
        if has_body {
            self.send_body(session, ctx, client).await?;
        }
        if has_body || h2 {
            client.finish_request_body().await.map_err(up)?;
        }
        // An HTTP/2 client gets lowercase names whatever their case here; an HTTP/1
        // client gets a head no filter reads as the origin's bytes.
        let form = if session.is_http2() {
            Form::Built(Case::Dropped)
        } else if s.response_untouched(session, ctx) {
            Form::Raw
        } else {
            Form::Built(Case::Kept)
        };
        let resp = client.read_response_head(form).await.map_err(up)?;
        relay::relay(s, session, ctx, resp, relay::Source::Upstream(client)).await
    }

    /// The request body upstream: the one the chain already holds (read before the
    /// upstream was contacted), else the client's, chunk by chunk through the chain.
    async fn send_body(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        client: &mut Upstream,
    ) -> Result<()> {
        let s = &self.sluice;
        if session.is_body_done() {
            let mut body = session.retry_buffer();
            s.request_body_filter(session, &mut body, true, ctx).await?;
            if let Some(data) = body.filter(|b| !b.is_empty()) {
                client.write_request_body(data, true).await.map_err(up)?;
            }
            return Ok(());
        }
        loop {
            let chunk = session.read_request_body().await.map_err(down)?;
            let end = chunk.is_none() || session.is_body_done();
            let mut body = chunk;
            s.request_body_filter(session, &mut body, end, ctx).await?;
            if let Some(data) = body.filter(|b| !b.is_empty()) {
                client.write_request_body(data, end).await.map_err(up)?;
            }
            if end {
                return Ok(());
            }
        }
    }
}
