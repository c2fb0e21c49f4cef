//! Pingora's `ProxyHttp` for Sluice: each hook runs one phase of the route's chain.
//!
//! | Pingora hook            | Proxy-Wasm phase                         | order   |
//! |-------------------------|------------------------------------------|---------|
//! | `request_filter`        | route match, `proxy_on_request_headers`; the whole request body when a filter has `request_body = "buffer"` (held: read before the upstream is contacted, see `held_body`), or when small | chain |
//! | `upstream_peer`         | the pool (the route's, or the one a filter set in `sluice.upstream.pool`) picks a peer; again on each retry | |
//! | `upstream_request_filter` | Content-Length / chunked fixed for the filtered body | |
//! | `request_body_filter`   | `proxy_on_request_body` (large or chunked bodies of `request_body = "stream"` routes); hands a held body to Pingora | chain |
//! | `response_filter`       | `proxy_on_response_headers`              | reverse |
//! | `response_body_filter`  | `proxy_on_response_body`                 | reverse |
//! | `logging`               | `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` | chain |
//!
//! A route with no filter skips all of it: no per-request state is built. A route with
//! component filters runs its chain from `request_filter`, after the Proxy-Wasm request
//! phases (`crate::component::serve`); its response goes through `response_filter` and
//! `response_body_filter` as a pool's does (`crate::forward::relay`).

use crate::downstream::Downstream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::Peer;
use pingora::{ErrorSource, ErrorType};

use crate::chain::{Chain, Outcome};
use crate::held_body::{self, Held};
use crate::host::{BodyKind, LocalResponse, RequestInfo, StreamState};
use crate::metrics::{method_label, metrics, status_class};
use crate::snapshot::{Live, Snapshot};
use crate::upstream::UpstreamPool;
mod headers;
mod local;
mod peers;
mod pingora_hooks;
mod settle;

use headers::*;
pub(crate) use headers::{frame_raw_response, frame_response};
use local::*;
use peers::*;
use settle::*;

/// Properties filters set to steer the upstream request (documented in docs/POLICY.md).
pub mod props {
    /// Name of the pool that serves the request.
    pub const POOL: &str = "sluice.upstream.pool";
    /// Key for consistent-hash pools.
    pub const HASH_KEY: &str = "sluice.upstream.hash_key";
    /// Path and query sent upstream.
    pub const PATH: &str = "sluice.upstream.path";
    /// Host header sent upstream.
    pub const HOST: &str = "sluice.upstream.host";
}

/// Bodies up to this size are read before the upstream is contacted (Pingora's
/// retry buffer replays them); larger ones stream through `request_body_filter`.
const EARLY_BODY_LIMIT: usize = 64 * 1024;

/// Request header asking for `x-sluice-generation` and `x-sluice-policy-hash` on the
/// response (honoured only with `[server] debug_headers = true`; never sent upstream).
pub const DEBUG_HEADER: &str = "x-sluice-debug";
/// [`DEBUG_HEADER`] parsed once: removing it by `&str` parses the name on every request.
static DEBUG_HEADER_NAME: http::HeaderName = http::HeaderName::from_static(DEBUG_HEADER);

/// Whether something reads the client's request head of route `r` before it goes
/// upstream and must see `x-request-id` and `x-forwarded-*` there: component filters,
/// which read Pingora's head. Elsewhere those fields are written only into the head
/// sent upstream ([`Ctx::forwarded`]): Proxy-Wasm filters see them in their map
/// ([`request_map`]), a pool hashing on one of them gets them written first
/// ([`Sluice::upstream_peer`]), and so does an image source fetch.
fn reads_head_before_upstream(snap: &Snapshot, r: usize) -> bool {
    snap.routes[r].components.is_some()
}

/// Writes the request metadata still deferred ([`Ctx::forwarded`]) into the client's
/// head, for what reads that head from here on.
fn settle_forwarded(session: &mut Downstream<'_>, ctx: &mut Ctx) -> Result<()> {
    match ctx.forwarded.take() {
        Some(added) => added.into_head(session.req_header_mut(), &ctx.stream.info.id),
        None => Ok(()),
    }
}

/// Writes the filters' request headers back: what routes match (method, target,
/// `Host`) into the client's head at once ([`apply_target`], whose answer it passes on:
/// whether that changed); the other fields they edited too, unless the edits may wait
/// ([`edits_deferrable`]): then they are written only into the head sent upstream
/// ([`Ctx::edits_deferred`]), and into the client's head only where something reads it
/// first ([`settle_edits`]: a pool hashing on a header, an image source fetch, a
/// component chain). The deferred metadata leaves alone the fields the filters edited
/// (all of them when a filter replaced the whole map).
fn write_back_request(session: &mut Downstream<'_>, ctx: &mut Ctx) -> Result<bool> {
    let map = &ctx.stream.request_headers;
    let defer = edits_deferrable(map);
    let retarget = apply_target(map, session.req_header_mut())?;
    if !defer {
        apply_edits(map, session.req_header_mut())?;
    }
    ctx.edits_deferred = defer;
    if let Some(added) = &mut ctx.forwarded {
        added.leave(|name| map.edited().is_none_or(|mut e| e.any(|n| n == name)));
    }
    Ok(retarget)
}

/// Writes the filters' deferred edits ([`Ctx::edits_deferred`]) into the client's head,
/// for what reads that head from here on.
fn settle_edits(session: &mut Downstream<'_>, ctx: &mut Ctx) -> Result<()> {
    if std::mem::take(&mut ctx.edits_deferred) {
        apply_edits(&ctx.stream.request_headers, session.req_header_mut())?;
    }
    Ok(())
}

/// Whether `name` is [`DEBUG_HEADER`], which is never sent upstream.
pub(crate) fn is_debug_header(name: &http::HeaderName) -> bool {
    *name == DEBUG_HEADER_NAME
}

/// The proxy service: the live snapshot and nothing else.
pub struct Sluice {
    /// The snapshot being served.
    pub live: Arc<Live>,
}

/// The request body as the filters left it.
#[derive(Default)]
enum RequestBody {
    /// No body, or a route without filters.
    #[default]
    Untouched,
    /// Read and filtered before the upstream was contacted; replaces the replayed body.
    Ready(Bytes, usize),
    /// Streamed through the chain chunk by chunk.
    Streaming,
}

/// Per-request state.
pub struct Ctx {
    snapshot: Arc<Snapshot>,
    route: Option<usize>,
    chain: Option<Chain>,
    stream: StreamState,
    request_body: RequestBody,
    /// Body that replaces the upstream's, when a filter answered in a response phase.
    replace_body: Option<Bytes>,
    /// When the request started.
    started: Instant,
    /// When the upstream peer was chosen.
    upstream_started: Option<Instant>,
    /// When the exchange ended, if the loop read the clock then (to park the upstream
    /// connection): the request's end for its log, without another reading.
    ended: Option<Instant>,
    /// The pool serving the request, once chosen.
    pool: Option<Arc<UpstreamPool>>,
    /// Peers tried so far (retries go elsewhere).
    tried: smallvec::SmallVec<[std::net::SocketAddr; 2]>,
    /// The request came over TLS.
    tls: bool,
    /// The `content-length` the response went out with (after the filters).
    response_length: Option<u64>,
    /// Response body bytes the chain let through so far.
    response_passed: u64,
    /// The request loop has not written the response head yet: a filter holds it
    /// ([`Chain::response_head_held`]) until the body flows on.
    head_deferred: bool,
    /// The head of a local response a body callback sent while the head was deferred: it
    /// replaces the upstream's (its body is what `response_body_filter` returned).
    late_head: Option<Box<ResponseHeader>>,
    /// `x-request-id` and `x-forwarded-*` as decided for this request, when they are
    /// written only into the head sent upstream (a route nothing reads the client's
    /// head on before: [`reads_head_before_upstream`]).
    pub(crate) forwarded: Option<crate::forwarded::Added>,
    /// The fields the Proxy-Wasm filters edited (but for method, target and `Host`) are
    /// not in the client's head: the head sent upstream takes them from the filters'
    /// map ([`Ctx::deferred_edits`]); what reads the client's head before then gets them
    /// written first ([`settle_edits`]).
    edits_deferred: bool,
    /// The request target as the client sent it, when the listener encoded bytes of
    /// it for the parser ([`crate::forward::Admission::original_target`]).
    pub(crate) original_target: Option<Vec<u8>>,
}

/// The target as sent, handed to pingora-proxy with an upgrade request
/// ([`crate::forward::handoff`]) as the connection's user context.
pub(crate) struct OriginalTarget(pub Vec<u8>);

impl Drop for Ctx {
    fn drop(&mut self) {
        // Its buffer serves a later request's id.
        crate::forwarded::recycle_id(std::mem::take(&mut self.stream.info.id));
    }
}

impl Ctx {
    /// The request's id (`x-request-id`, the `request.id` property), once decided.
    pub(crate) fn request_id(&self) -> &str {
        &self.stream.info.id
    }

    /// The fields the filters edited that are not in the client's head
    /// ([`Ctx::edits_deferred`]), when there are some: each `(name, value)` in the order
    /// the head sent upstream carries them, and which of the client's fields they
    /// replace.
    #[allow(clippy::type_complexity)]
    pub(crate) fn deferred_edits(
        &self,
    ) -> Option<(
        impl Iterator<Item = (&str, &[u8])>,
        impl Fn(&http::HeaderName) -> bool + '_,
    )> {
        let map = &self.stream.request_headers;
        self.edits_deferred.then(|| {
            (edited_fields(map), move |n: &http::HeaderName| {
                is_edited(map, n)
            })
        })
    }

    /// A value the route's Proxy-Wasm filters set for the upstream request (one of
    /// [`props`]), as text.
    pub(crate) fn upstream_prop(&self, name: &str) -> Option<String> {
        self.stream
            .filter_state
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// What the route's Proxy-Wasm filters chose for the upstream (`sluice.upstream.pool`,
    /// already checked against the policy's pools, and `sluice.upstream.hash_key`): a
    /// component chain's starting choice, which a middleware sees with
    /// `sluice:edge/upstream.choice` and may change.
    pub(crate) fn chosen_upstream(&self) -> Option<crate::host::component::Upstream> {
        let choice = crate::host::component::Upstream {
            pool: self.upstream_prop(props::POOL),
            hash_key: self.upstream_prop(props::HASH_KEY),
        };
        (choice != Default::default()).then_some(choice)
    }

    /// The `sluice:edge/request-info` facts of the request (route, client address, SNI,
    /// request id, protocol, generation) for its component chain.
    pub(crate) fn edge_info(&self, session: &Downstream<'_>) -> crate::host::component::EdgeInfo {
        let route = self
            .route
            .and_then(|i| self.snapshot.routes.get(i))
            .map(|r| r.names.0.to_string())
            .unwrap_or_default();
        crate::host::component::EdgeInfo {
            route,
            client_address: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string()),
            sni: crate::tls::server_name(session.ssl_digest()).map(str::to_string),
            request_id: self.stream.info.id.clone(),
            protocol: match session.req_header().version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            }
            .to_string(),
            generation: self.snapshot.generation,
        }
    }

    /// Whether a filter holds the response head until the body phase lets data through
    /// ([`Chain::response_head_held`]); the request loop then defers writing it
    /// ([`Ctx::defer_head`]).
    pub fn response_head_held(&self) -> bool {
        self.chain.as_ref().is_some_and(Chain::response_head_held)
    }

    /// Marks the response head as not written yet (`true`) or written (`false`).
    pub fn defer_head(&mut self, deferred: bool) {
        self.head_deferred = deferred;
    }

    /// The head that replaces the upstream's when a filter answered locally from a body
    /// callback while the head was deferred (its body is the body filter's output).
    pub fn take_late_head(&mut self) -> Option<Box<ResponseHeader>> {
        self.late_head.take()
    }

    /// Whether a filter's local answer replaces the response body (the rest of the
    /// original body is not sent).
    pub fn response_replaced(&self) -> bool {
        self.replace_body.is_some()
    }

    /// Whether the chain holds the whole request body (read before the upstream was
    /// contacted), so that another attempt can send it again.
    pub fn body_held(&self) -> bool {
        matches!(self.request_body, RequestBody::Ready(..))
    }

    /// When the upstream peer was chosen (the last attempt's), if one was.
    pub fn upstream_started(&self) -> Option<Instant> {
        self.upstream_started
    }

    /// Records when the exchange ended (a reading of the clock the loop took anyway);
    /// `logging` measures the request's duration up to it.
    pub fn set_ended(&mut self, at: Instant) {
        self.ended = Some(at);
    }
}

impl Sluice {
    /// Runs the request-headers phase and, for small bodies, the body phase, before
    /// the upstream is contacted. `Ok(true)`: answered locally.
    async fn request_phases(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        chain: &mut Chain,
    ) -> Result<bool> {
        // Every filter's VM is ready on this thread before the first callback; one
        // that is starting is awaited here, off the thread's other requests.
        match chain.ready(&mut ctx.stream).await {
            Outcome::Continue => {}
            Outcome::Respond => return self.respond(session, ctx, chain).await,
            _ => return Err(reset()),
        }
        let has_body = !session.is_body_empty();
        let first = chain.request_headers(&mut ctx.stream, !has_body);
        let limit = pause_limit(ctx);
        match settle(
            &ctx.snapshot,
            chain,
            &mut ctx.stream,
            BodyKind::Request,
            !has_body,
            first,
            limit,
        )
        .await
        {
            Outcome::Continue => {}
            Outcome::Respond => return self.respond(session, ctx, chain).await,
            _ => return Err(reset()),
        }
        // The chain that runs is the one of the route first matched, even when a
        // filter re-routes the request (as Envoy keeps a stream's filter chain).
        let chain_route = ctx.route;
        if ctx.stream.request_headers_changed
            && write_back_request(session, ctx)?
            && self.reroute(session, ctx, chain).await?
        {
            return Ok(true);
        }
        if self.choose_pool(session, ctx).await? {
            return Ok(true);
        }
        if let Some(spec) = ctx
            .stream
            .filter_state
            .get(crate::image::TRANSFORM_PROPERTY)
        {
            // An image variant (docs/IMAGES.md): Sluice fetches the source from the
            // route's pool, transforms it and answers by itself.
            let spec = spec.clone();
            // The source request is built from the client's head.
            settle_forwarded(session, ctx)?;
            settle_edits(session, ctx)?;
            let peer = self.upstream_peer(session, ctx).await?;
            // Boxed: a large future on a rare path, kept out of every request's state.
            Box::pin(crate::image::serve(
                session,
                &ctx.snapshot.policy.images,
                &spec,
                Box::new(peer),
            ))
            .await?;
            return Ok(true);
        }
        if !has_body {
            return Ok(false);
        }
        let route = chain_route.map(|r| &ctx.snapshot.routes[r]);
        if route.is_some_and(|r| r.buffers_request_body()) {
            return self.hold_body(session, ctx, chain).await;
        }
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        match declared {
            Some(n) if n <= EARLY_BODY_LIMIT.min(ctx.stream.max_buffer_bytes) => {
                session.enable_retry_buffering();
                let mut body = Vec::with_capacity(n);
                while let Some(chunk) = session.read_request_body().await? {
                    body.extend_from_slice(&chunk);
                    if body.len() > EARLY_BODY_LIMIT {
                        return Err(Error::explain(
                            ErrorType::HTTPStatus(400),
                            "body longer than its Content-Length",
                        ));
                    }
                }
                return self.whole_body(session, ctx, chain, body).await;
            }
            _ => ctx.request_body = RequestBody::Streaming,
        }
        Ok(false)
    }

    /// Holds the request until the chain has seen its whole body (a filter of the
    /// route has `request_body = "buffer"`): reads it before the upstream is
    /// contacted, refuses it beyond `max_body_bytes`, runs the body phase once.
    async fn hold_body(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        chain: &mut Chain,
    ) -> Result<bool> {
        let body = match held_body::read(session, ctx.stream.max_buffer_bytes).await? {
            Held::Body(body) => body,
            Held::TooLarge => {
                let local = plain(413, "request body too large", "request body too large\n");
                return self.refuse_body(session, ctx, "too_large", local).await;
            }
            Held::LengthRequired => {
                let local = plain(
                    411,
                    "request body of unknown length too large",
                    "a request body over 64 KiB needs a Content-Length here\n",
                );
                return self
                    .refuse_body(session, ctx, "length_required", local)
                    .await;
            }
        };
        self.whole_body(session, ctx, chain, body).await
    }

    /// Runs the body phase once over a body read before the upstream was contacted;
    /// the filtered body replaces the one Pingora forwards. `Ok(true)`: a filter answered.
    async fn whole_body(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        chain: &mut Chain,
        body: Vec<u8>,
    ) -> Result<bool> {
        ctx.stream.request_headers_changed = false;
        match chain.body(&mut ctx.stream, BodyKind::Request, body, true) {
            Ok(out) => {
                let len = out.len();
                ctx.request_body = RequestBody::Ready(Bytes::from(out), len);
                // Headers a body callback changed still go upstream: they are sent later.
                if ctx.stream.request_headers_changed {
                    write_back_request(session, ctx)?;
                }
            }
            Err(Outcome::Respond) => return self.respond(session, ctx, chain).await,
            Err(_) => return Err(reset()),
        }
        chain.launch(&ctx.snapshot.callouts);
        Ok(false)
    }

    /// Answers a held body Sluice will not forward, counts it and closes the
    /// connection (the rest of the body is not read).
    async fn refuse_body(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        reason: &str,
        local: LocalResponse,
    ) -> Result<bool> {
        tracing::info!(route = %ctx.stream.info.route, request_id = %ctx.stream.info.id, reason, status = local.status, "request body refused");
        metrics()
            .request_body_refusals
            .with_label_values(&[&*ctx.stream.info.route, reason])
            .inc();
        ctx.stream.info.response_code = Some(local.status);
        session.set_keepalive(None);
        send_local(session, &local).await?;
        Ok(true)
    }

    /// Matches the routes again after a filter changed the request headers (Envoy
    /// clears its route cache when `:authority` or `:path` change): a request now
    /// matching another route goes to that route's pool, under its name (metrics,
    /// access log, `route_name`); the filter chain stays the one that runs. No route:
    /// 404, through the filters that ran. `Ok(true)`: answered.
    async fn reroute(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        chain: &mut Chain,
    ) -> Result<bool> {
        let snap = ctx.snapshot.clone();
        let host = host_of(session.req_header()).into_owned();
        let found = snap.route(&host, session.req_header().uri.path());
        if found == ctx.route {
            return Ok(false);
        }
        let Some(idx) = found else {
            ctx.stream.local_response =
                Some(plain(404, "no route", "no route matches this request\n"));
            return self.respond(session, ctx, chain).await;
        };
        let route = &snap.routes[idx];
        tracing::debug!(from = %ctx.stream.info.route, to = %route.def.name, request_id = %ctx.stream.info.id, "a filter re-routed the request");
        ctx.route = Some(idx);
        ctx.pool = route.pool.map(|p| snap.pools[p].clone());
        ctx.stream.info.route = route.names.0.clone();
        ctx.stream.info.pool = route.names.1.clone();
        ctx.stream.info.route_metadata = route.metadata.clone();
        if route.def.redirect_https && !ctx.tls {
            return redirect_https(session, &snap, &host).await;
        }
        Ok(false)
    }

    /// Applies a filter's `sluice.upstream.pool`; `Ok(true)`: the pool is unknown and
    /// the request was answered 502.
    async fn choose_pool(&self, session: &mut Downstream<'_>, ctx: &mut Ctx) -> Result<bool> {
        let Some(name) = ctx.upstream_prop(props::POOL) else {
            return Ok(false);
        };
        {
            match ctx.snapshot.pool(&name).cloned() {
                Some(p) => {
                    ctx.stream.info.pool = Arc::from(p.def.name.as_str());
                    ctx.pool = Some(p);
                }
                None => {
                    let route_name = ctx.stream.info.route.clone();
                    tracing::warn!(route = %route_name, pool = %name, request_id = %ctx.stream.info.id, "a filter chose a pool the policy does not have: 502");
                    metrics()
                        .unknown_pool
                        .with_label_values(&[&*route_name])
                        .inc();
                    ctx.stream.info.response_code = Some(502);
                    let local = plain(502, "unknown pool", "bad gateway: no such upstream pool\n");
                    send_local(session, &local).await?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Sends the local reply a filter asked for in a request phase, through the
    /// response callbacks of the filters that ran ([`Chain::local_reply`]).
    async fn respond(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
        chain: &mut Chain,
    ) -> Result<bool> {
        let local = chain.local_reply(&mut ctx.stream).map_err(|_| reset())?;
        ctx.stream.info.response_code = Some(local.status);
        send_local(session, &local).await?;
        Ok(true)
    }
}

/// Answers 400 to a request whose target Sluice refuses (`[paths]`, the `Host`,
/// hop-by-hop headers), counted in `sluice_bad_requests_total{reason}`.
async fn refuse_target(
    session: &mut Downstream<'_>,
    refusal: &crate::ingress::IngressRefusal,
) -> Result<bool> {
    metrics()
        .bad_requests
        .with_label_values(&[refusal.reason()])
        .inc();
    tracing::debug!(error = %refusal, "request target refused");
    let body = format!("bad request: {refusal}\n");
    send_local(session, &plain(400, "bad request target", &body)).await?;
    Ok(true)
}

/// The hooks, as plain methods: Sluice's own loop (`crate::forward`) calls them
/// directly, so their futures are not boxed per call as `async_trait`'s are; the
/// [`ProxyHttp`] impl below hands pingora-proxy's calls (upgrades) to them.
impl Sluice {
    /// A new request's state.
    pub(crate) fn new_ctx(&self) -> Ctx {
        Ctx {
            snapshot: self.live.load(),
            route: None,
            chain: None,
            stream: StreamState::default(),
            request_body: RequestBody::Untouched,
            replace_body: None,
            started: Instant::now(),
            upstream_started: None,
            ended: None,
            pool: None,
            tried: smallvec::SmallVec::new(),
            tls: false,
            response_length: None,
            response_passed: 0,
            head_deferred: false,
            late_head: None,
            forwarded: None,
            edits_deferred: false,
            original_target: None,
        }
    }

    /// Whether an error is a refusal already counted (no warning logged).
    pub(crate) fn suppress_error_log(&self, _ctx: &Ctx, e: &Error) -> bool {
        crate::listener::is_refusal(e)
    }

    /// Prepares and routes the request and runs the request phases; `Ok(true)`: answered.
    pub(crate) async fn request_filter(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
    ) -> Result<bool> {
        let snap = ctx.snapshot.clone();
        // Filters may read the target as sent (`sluice.request_target`) when it was
        // absolute-form or had bytes encoded for the parser, and the HTTP/1 head as
        // received (`sluice.request_head`: header names in their case, hop-by-hop
        // headers, no `Host` added).
        let absolute_target = crate::ingress::absolute_target(session.req_header())
            .or_else(|| ctx.original_target.take());
        let received_head = session.raw_head();
        // One canonical request for routing, filters and the origin. A path `[paths]`
        // refuses, or a `Host` naming no host, is refused after the filters of the
        // route the request takes as sent have judged it (the WAF logs what it sees);
        // it never reaches the origin.
        let mut refused_later = None;
        match crate::ingress::prepare(session.req_header_mut(), &snap.policy.paths) {
            Ok(()) => {}
            Err(
                refusal @ (crate::ingress::IngressRefusal::Path(_)
                | crate::ingress::IngressRefusal::Host),
            ) => refused_later = Some(refusal),
            Err(refusal) => return refuse_target(session, &refusal).await,
        }
        let route = {
            let host = host_of(session.req_header());
            snap.route(&host, session.req_header().uri.path())
        };
        let filtered = route.is_some_and(|r| !snap.routes[r].filters.is_empty());
        if let (Some(refusal), false) = (&refused_later, filtered) {
            return refuse_target(session, refusal).await;
        }
        if let Err(refusal) = check_request_headers(&snap, session.req_header(), filtered) {
            metrics()
                .header_refusals
                .with_label_values(&[refusal.reason()])
                .inc();
            // The body, if any, is not read: the connection cannot be reused.
            session.set_keepalive(None);
            send_local(
                session,
                &plain(refusal.status(), refusal.reason(), refusal.message()),
            )
            .await?;
            return Ok(true);
        }
        // After the header limits: what Sluice adds does not count against the client.
        ctx.tls = session.ssl_digest().is_some();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let (id, added) = crate::forwarded::decide(
            session.req_header(),
            &snap.policy.forwarded,
            client,
            ctx.tls,
        )?;
        ctx.stream.info.id = id;
        if route.is_some_and(|r| reads_head_before_upstream(&snap, r)) {
            added.into_head(session.req_header_mut(), &ctx.stream.info.id)?;
        } else {
            // Only the head sent upstream carries them (`upstream_request_filter`,
            // `crate::forward::exchange`).
            ctx.forwarded = Some(added);
        }
        let Some(route_idx) = route else {
            send_local(
                session,
                &plain(404, "no route", "no route matches this request\n"),
            )
            .await?;
            return Ok(true);
        };
        ctx.route = Some(route_idx);
        let route = &snap.routes[route_idx];
        if route.def.redirect_https && !ctx.tls {
            let host = host_of(session.req_header()).into_owned();
            return redirect_https(session, &snap, &host).await;
        }
        ctx.pool = route.pool.map(|p| snap.pools[p].clone());
        if route.filters.is_empty() {
            if let Some(components) = route.components.clone() {
                let tls = ctx.tls;
                // Boxed: a large future on a path most requests do not take.
                Box::pin(crate::component::serve(
                    self,
                    session,
                    ctx,
                    &components.entry,
                    None,
                    tls,
                ))
                .await?;
                return Ok(true);
            }
            return Ok(false);
        }
        let req = session.req_header();
        ctx.stream = StreamState {
            request_headers: request_map(req, ctx.tls, ctx.forwarded.as_ref(), &ctx.stream.info.id),
            info: RequestInfo {
                id: std::mem::take(&mut ctx.stream.info.id),
                source: session.client_addr().and_then(|a| a.as_inet()).copied(),
                destination: session.server_addr().and_then(|a| a.as_inet()).copied(),
                protocol: match req.version {
                    http::Version::HTTP_10 => "HTTP/1.0",
                    http::Version::HTTP_2 => "HTTP/2",
                    _ => "HTTP/1.1",
                },
                route: route.names.0.clone(),
                pool: route.names.1.clone(),
                route_metadata: route.metadata.clone(),
                generation: snap.generation,
                start: std::time::SystemTime::now(),
                absolute_target,
                received_head,
                ..RequestInfo::default()
            },
            max_buffer_bytes: snap.policy.max_body_bytes,
            ..StreamState::default()
        };
        let mut chain = Chain::new(route.filters.clone(), snap.policy.access_log.is_some());
        let r = self.request_phases(session, ctx, &mut chain).await;
        ctx.chain = Some(chain);
        match (r, refused_later) {
            // The filters let it pass: the path is refused now.
            (Ok(false), Some(refusal)) => {
                ctx.stream.info.response_code = Some(400);
                // A body the filters did not read is left unread: no reuse.
                session.set_keepalive(None);
                refuse_target(session, &refusal).await
            }
            // The Proxy-Wasm request phases let it pass: the component chain takes it,
            // and its response goes back through the Proxy-Wasm response phases.
            (Ok(false), None) if snap.routes[route_idx].components.is_some() => {
                let components = snap.routes[route_idx].components.clone();
                let entry = components.as_ref().map(|c| c.entry.clone());
                // A streamed body stays `Streaming`: its chunks go through the
                // request-body phase on their way to the chain.
                let held = match &ctx.request_body {
                    RequestBody::Ready(b, _) => Some(b.clone()),
                    _ => None,
                };
                let Some(entry) = entry else { return Ok(false) };
                // Components read the client's head: the filters' deferred edits go
                // there first.
                settle_edits(session, ctx)?;
                let tls = ctx.tls;
                Box::pin(crate::component::serve(
                    self, session, ctx, &entry, held, tls,
                ))
                .await?;
                Ok(true)
            }
            (r, _) => r,
        }
    }

    /// The peer of the request's pool for this attempt.
    pub(crate) async fn upstream_peer(
        &self,
        session: &mut Downstream<'_>,
        ctx: &mut Ctx,
    ) -> Result<HttpPeer> {
        let pool = ctx.pool.clone().ok_or_else(|| bad("no pool"))?;
        if ctx
            .forwarded
            .as_ref()
            .is_some_and(|a| pool.hashed_header().is_some_and(|h| a.touches(h)))
        {
            // The key is read from the client's head: the metadata goes there first.
            settle_forwarded(session, ctx)?;
        }
        if pool.hashed_header().is_some() {
            // So do the filters' deferred edits.
            settle_edits(session, ctx)?;
        }
        let key = hash_key(session, ctx, &pool);
        let addr = pool.select(&key, &ctx.tried).ok_or_else(|| {
            Error::create(
                ErrorType::ConnectNoRoute,
                ErrorSource::Upstream,
                Some("no peer of the pool is left to try".into()),
                None,
            )
        })?;
        if !ctx.tried.is_empty() {
            metrics()
                .upstream_retries
                .with_label_values(&[pool.def.name.as_str()])
                .inc();
        }
        ctx.tried.push(addr);
        ctx.stream.info.upstream = Some(addr);
        ctx.upstream_started = Some(Instant::now());
        Ok(pool.peer(addr))
    }

    /// Whether [`Self::upstream_request_filter`] leaves the upstream copy of this
    /// request as it is but for removing [`DEBUG_HEADER`] ([`is_debug_header`]) and
    /// writing the request metadata not yet in the client's head ([`Ctx::forwarded`]):
    /// no filter set the upstream path or host, and the body is the client's, untouched.
    /// The request loop then writes the HTTP/1 head from the client's, with no copy.
    pub(crate) fn upstream_request_unchanged(&self, ctx: &Ctx) -> bool {
        matches!(ctx.request_body, RequestBody::Untouched)
            && !ctx.stream.filter_state.contains_key(props::PATH)
            && !ctx.stream.filter_state.contains_key(props::HOST)
    }

    /// Whether [`Self::response_filter`] would leave the upstream's response head as
    /// it is: no filter chain runs over it, and the client asked for no debug headers.
    /// The request loop then writes an HTTP/1 upstream's head to an HTTP/1 client from
    /// the bytes read ([`crate::forward::upstream::Form::Raw`]), after
    /// [`Self::upstream_answered`].
    pub(crate) fn response_untouched(&self, session: &Downstream<'_>, ctx: &Ctx) -> bool {
        ctx.chain.is_none()
            && ctx.replace_body.is_none()
            && !(ctx.snapshot.policy.debug_headers
                && session
                    .req_header()
                    .headers
                    .contains_key(&DEBUG_HEADER_NAME))
    }

    /// What the upstream's answer (its status) tells before any filter sees it: the
    /// peer's health for its pool, the route's upstream latency.
    pub(crate) fn upstream_answered(&self, status: http::StatusCode, ctx: &Ctx) {
        if let (Some(pool), Some(addr)) = (&ctx.pool, ctx.stream.info.upstream) {
            if status.is_server_error() {
                pool.failed(addr);
            } else {
                pool.succeeded(addr);
            }
        }
        if let (Some(t), Some(route)) = (ctx.upstream_started, ctx.route) {
            ctx.snapshot.routes[route]
                .metrics
                .upstream
                .observe(t.elapsed().as_secs_f64());
        }
    }

    /// The upstream copy of the request head, after the filters.
    pub(crate) async fn upstream_request_filter(
        &self,
        _session: &mut Downstream<'_>,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.edits_deferred {
            apply_edits(&ctx.stream.request_headers, upstream_request)?;
        }
        if let Some(added) = &ctx.forwarded {
            added.apply(upstream_request, &ctx.stream.info.id)?;
        }
        // A question to Sluice, not to the origin.
        upstream_request.remove_header(&DEBUG_HEADER_NAME);
        if let Some(path) = ctx.stream.filter_state.get(props::PATH) {
            let uri = http::Uri::try_from(path.as_slice())
                .map_err(|_| bad("a filter set a bad sluice.upstream.path"))?;
            upstream_request.set_uri(uri);
        }
        if let Some(host) = ctx.stream.filter_state.get(props::HOST) {
            upstream_request.insert_header(http::header::HOST, host.as_slice())?;
        }
        match &ctx.request_body {
            RequestBody::Untouched => {}
            RequestBody::Ready(_, len) => {
                upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
                upstream_request.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
            }
            RequestBody::Streaming => {
                // Filters may change the length: send the body chunked on HTTP/1.1; HTTP/2
                // frames it by itself and refuses `transfer-encoding` (RFC 9113 §8.2.2).
                upstream_request.remove_header(&http::header::CONTENT_LENGTH);
                if upstream_request.version == http::Version::HTTP_2 {
                    upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
                } else {
                    upstream_request.insert_header(
                        http::header::TRANSFER_ENCODING,
                        http::HeaderValue::from_static("chunked"),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// A request body chunk through the chain.
    pub(crate) async fn request_body_filter(
        &self,
        _session: &mut Downstream<'_>,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        match &mut ctx.request_body {
            RequestBody::Untouched => Ok(()),
            RequestBody::Ready(ready, _) => {
                // Pingora hands over its retry buffer (the body's tail, see held_body)
                // once per upstream attempt, at the end of the body: each attempt gets
                // the whole filtered body. An empty body is sent as no data at all (an
                // empty chunk would be a stray terminating chunk).
                *body = (!ready.is_empty()).then(|| ready.clone());
                Ok(())
            }
            RequestBody::Streaming => {
                let Some(chain) = ctx.chain.as_mut() else {
                    return Ok(());
                };
                let chunk = body.take().map(Vec::from).unwrap_or_default();
                let r = chain.body(&mut ctx.stream, BodyKind::Request, chunk, end_of_stream);
                chain.launch(&ctx.snapshot.callouts);
                match r {
                    Ok(out) => {
                        // Empty data mid-body is skipped by Pingora; at the end it must
                        // be none at all: an empty chunk is the terminating chunk, and
                        // Pingora ends the body with another one (a stray `0\r\n\r\n`
                        // the origin reads as the next request).
                        *body = if out.is_empty() && end_of_stream {
                            None
                        } else {
                            Some(Bytes::from(out))
                        };
                        Ok(())
                    }
                    Err(Outcome::Respond) => {
                        let status = ctx
                            .stream
                            .local_response
                            .as_ref()
                            .map(|l| l.status)
                            .unwrap_or(403);
                        Err(Error::explain(
                            ErrorType::HTTPStatus(status),
                            "a filter answered during the request body",
                        ))
                    }
                    Err(_) => Err(reset()),
                }
            }
        }
    }

    /// The response head through the chain.
    pub(crate) async fn response_filter(
        &self,
        session: &mut Downstream<'_>,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.upstream_answered(upstream_response.status, ctx);
        if ctx.snapshot.policy.debug_headers
            && session
                .req_header()
                .headers
                .contains_key(&DEBUG_HEADER_NAME)
        {
            upstream_response
                .insert_header("x-sluice-generation", ctx.snapshot.generation.to_string())?;
            upstream_response.insert_header("x-sluice-policy-hash", &ctx.snapshot.hash[..16])?;
        }
        let limit = pause_limit(ctx);
        let Some(chain) = ctx.chain.as_mut() else {
            return Ok(());
        };
        ctx.stream.info.response_code = Some(upstream_response.status.as_u16());
        let fields = upstream_response
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()));
        if ctx.snapshot.policy.headers.check_response(fields).is_err() {
            // Filters would read bytes their SDK cannot represent: answer 502 instead.
            metrics()
                .header_refusals
                .with_label_values(&["upstream_not_utf8"])
                .inc();
            let local = plain(
                502,
                "upstream header not UTF-8",
                "the upstream response has a header value filters cannot read\n",
            );
            *upstream_response = local_header(&local)?;
            ctx.stream.info.response_code = Some(local.status);
            ctx.replace_body = Some(Bytes::from(local.body));
            return Ok(());
        }
        ctx.stream.response_headers = response_map(upstream_response);
        let no_body = matches!(upstream_response.status.as_u16(), 204 | 304)
            || upstream_response
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
        let first = chain.response_headers(&mut ctx.stream, no_body);
        match settle(
            &ctx.snapshot,
            chain,
            &mut ctx.stream,
            BodyKind::Response,
            no_body,
            first,
            limit,
        )
        .await
        {
            Outcome::Continue => {
                if ctx.stream.response_headers_changed {
                    apply_response(&ctx.stream.response_headers, upstream_response)?;
                    frame_response(session.req_header(), upstream_response)?;
                }
                if !no_body && session.req_header().method != http::Method::HEAD {
                    ctx.response_length = declared_length(upstream_response);
                }
                Ok(())
            }
            Outcome::Respond => {
                let local = ctx
                    .stream
                    .local_response
                    .clone()
                    .ok_or_else(|| bad("no local response"))?;
                *upstream_response = local_header(&local)?;
                ctx.stream.info.response_code = Some(local.status);
                ctx.replace_body = Some(Bytes::from(local.body));
                Ok(())
            }
            _ => Err(reset()),
        }
    }

    /// A response body chunk through the chain.
    pub(crate) fn response_body_filter(
        &self,
        session: &mut Downstream<'_>,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(replacement) = &ctx.replace_body {
            *body = end_of_stream.then(|| replacement.clone());
            return Ok(None);
        }
        let Some(chain) = ctx.chain.as_mut() else {
            return Ok(None);
        };
        let chunk = body.take().map(Vec::from).unwrap_or_default();
        let r = chain.body(&mut ctx.stream, BodyKind::Response, chunk, end_of_stream);
        chain.launch(&ctx.snapshot.callouts);
        match r {
            Ok(out) if out.is_empty() && !end_of_stream => *body = None,
            Ok(out) => *body = Some(Bytes::from(out)),
            Err(Outcome::Respond) if ctx.head_deferred => {
                // Nothing of the response has left: the local answer replaces it whole.
                let local = ctx
                    .stream
                    .local_response
                    .clone()
                    .ok_or_else(|| bad("no local response"))?;
                ctx.late_head = Some(Box::new(local_header(&local)?));
                ctx.stream.info.response_code = Some(local.status);
                ctx.response_length = None;
                ctx.replace_body = Some(Bytes::from(local.body));
                *body = ctx.replace_body.clone();
                return Ok(None);
            }
            // The response has started: a late local answer can only reset the stream.
            Err(_) => return Err(reset()),
        }
        ctx.response_passed += body.as_ref().map_or(0, |b| b.len() as u64);
        if let Some(declared) = ctx.response_length {
            if ctx.response_passed > declared || (end_of_stream && ctx.response_passed != declared)
            {
                // A filter changed the body length but kept `content-length`: the body
                // cannot be framed as announced. Close the connection after it rather
                // than let the client read the next response from the wrong offset.
                tracing::warn!(route = %ctx.stream.info.route, request_id = %ctx.stream.info.id, declared, sent = ctx.response_passed, "a filter changed the response body length but kept content-length; closing the connection");
                ctx.response_length = None;
                session.set_keepalive(None);
            }
        }
        Ok(None)
    }

    /// The end of the request: the chain's last callbacks, metrics and the access log.
    pub(crate) async fn logging(
        &self,
        session: &mut Downstream<'_>,
        e: Option<&Error>,
        ctx: &mut Ctx,
    ) {
        if let Some(e) = e {
            crate::listener::count_error(e);
        }
        let late = ctx
            .chain
            .as_mut()
            .and_then(|chain| chain.finish(&mut ctx.stream, &ctx.snapshot.callouts));
        let status = session
            .written_status()
            .map(|s| s.as_u16())
            .or(ctx.stream.info.response_code)
            .unwrap_or(0);
        let route = ctx
            .route
            .map(|r| ctx.snapshot.routes[r].def.name.as_str())
            .unwrap_or("none");
        let method = &session.req_header().method;
        let took = ctx.ended.map_or_else(
            || ctx.started.elapsed(),
            |end| end.saturating_duration_since(ctx.started),
        );
        match ctx.route {
            Some(r) => {
                let rm = &ctx.snapshot.routes[r].metrics;
                rm.count(method, status);
                rm.duration.observe(took.as_secs_f64());
            }
            None => {
                let m = metrics();
                m.requests
                    .with_label_values(&[route, status_class(status), method_label(method)])
                    .inc();
                m.request_duration
                    .with_label_values(&[route])
                    .observe(took.as_secs_f64());
            }
        }
        if crate::admin::feed::wanted() {
            // `sluice ctl tail` reads these (`/admin/tail`), access log on or off.
            crate::admin::feed::publish_access(serde_json::json!({
                "time_unix": crate::admin::feed::now_unix(),
                "route": route,
                "method": method.as_str(),
                "path": session.req_header().uri.to_string(),
                "status": status,
                "duration_us": took.as_micros() as u64,
                "upstream": ctx.stream.info.upstream.map(|a| a.to_string()),
                "generation": ctx.snapshot.generation,
                "request_id": ctx.stream.info.id.to_string(),
                "error": e.map(|e| e.to_string()),
            }));
        }
        if ctx.snapshot.policy.access_log.is_some() {
            tracing::info!(
                target: "sluice::access",
                route,
                method = %method,
                path = %session.req_header().uri,
                status,
                duration_us = took.as_micros() as u64,
                upstream = %ctx.stream.info.upstream.map(|a| a.to_string()).unwrap_or_default(),
                generation = ctx.snapshot.generation,
                request_id = %ctx.stream.info.id,
                bytes_sent = session.body_bytes_sent(),
                bytes_received = session.body_bytes_read(),
                filters = %ctx.chain.as_ref().map(|c| c.timings_text()).unwrap_or_default(),
                error = %e.map(|e| e.to_string()).unwrap_or_default(),
            );
        }
        if let Some(late) = late {
            // Calls from body or log phases: their responses reach the filters after
            // the response, on this thread; the snapshot lives until they are in.
            let stream = std::mem::take(&mut ctx.stream);
            let snapshot = ctx.snapshot.clone();
            tokio::spawn(async move {
                late.run(stream).await;
                drop(snapshot);
            });
        }
    }

    /// A connection to `peer` failed: counted against it, retried elsewhere when allowed.
    pub(crate) fn fail_to_connect(
        &self,
        _session: &mut Downstream<'_>,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(pool) = &ctx.pool {
            peer_failed(pool, peer);
            // Nothing reached the peer: another peer may take any method.
            if retries_left(pool, ctx) {
                e.set_retry(true);
            }
        }
        e
    }

    /// An attempt failed after connecting: whose fault, and whether to retry.
    pub(crate) fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Downstream<'_>,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {}", peer.address()));
        if *e.esource() != ErrorSource::Upstream {
            // The client's side (bad body framing, disconnect, timeout) or Sluice's own
            // (a filter's answer): the peer did nothing wrong. Not counted against it,
            // no ejection, no retry.
            if *e.esource() == ErrorSource::Downstream {
                let pool = ctx.pool.as_ref().map(|p| p.def.name.as_str()).unwrap_or("");
                metrics().downstream_errors.with_label_values(&[pool]).inc();
            }
            e.set_retry(false);
            return e;
        }
        if let Some(pool) = &ctx.pool {
            peer_failed(pool, peer);
            // A reused connection that failed before the response (the peer closed an
            // idle connection, or went away): retry idempotent requests elsewhere.
            if !session.req_header().method.is_idempotent() || session.retry_buffer_truncated() {
                e.set_retry(false);
            } else {
                e.retry.decide_reuse(client_reused);
            }
            if !retries_left(pool, ctx) {
                e.set_retry(false);
            }
        }
        e
    }

    /// The error answer to the client.
    pub(crate) async fn fail_to_proxy(
        &self,
        session: &mut Downstream<'_>,
        e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        if ctx.stream.closed {
            // A filter reset the stream: close the connection without a response.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if ctx.stream.local_response.is_some() && session.written_status().is_some() {
            // A reply from a response-body callback after the head left (the filter did
            // not hold it): nothing can replace the response now; the stream is cut
            // rather than the reply's text appended to the body already sent.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if ctx.stream.local_response.is_some() {
            // A reply sent while the request body streamed: through the filters that
            // ran, as in the request-headers phase.
            let local = match ctx.chain.as_mut() {
                Some(chain) if session.written_status().is_none() => {
                    match chain.local_reply(&mut ctx.stream) {
                        Ok(local) => local,
                        Err(_) => {
                            return FailToProxy {
                                error_code: 0,
                                can_reuse_downstream: false,
                            }
                        }
                    }
                }
                _ => ctx
                    .stream
                    .local_response
                    .clone()
                    .unwrap_or_else(|| plain(500, "no local response", "internal error\n")),
            };
            let code = local.status;
            if let Err(err) = send_local(session, &local).await {
                tracing::debug!(error = %err, "could not send the local response");
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    ErrorType::ReadTimedout => 408,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0 {
            if let Err(err) = session.respond_error(code).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
