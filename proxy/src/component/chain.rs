//! A route's components as one [`Next`]: built back to front (the pool or edge function
//! first, then each middleware around the one after it), each wrapped in its failure
//! policy and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::pool::{self, Ways};
use crate::host::component::{
    CompiledComponent, EdgeInfo, ErrorCode, Guest, GuestError, GuestLimits, Next, Reuse, Role,
    Upstream, WasiBody, Ways as GuestWays,
};
use crate::host::fleet::FleetBackend;
use crate::metrics::metrics;
use crate::policy::{ComponentDef, OnFailure, RouteDef};
use crate::upstream::UpstreamPool;

/// Time a component has to produce a response head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A route's component chain, ready to serve.
pub struct RouteComponents {
    /// The first handler: the first middleware, or the pool or function when none.
    pub entry: Next,
    /// The guests of the chain, middleware first, the function last.
    pub guests: Vec<(String, Arc<Guest>)>,
}

/// Builds `route`'s chain. `compiled` is by [`crate::policy::Policy::components`] order;
/// `ways` are the policy's pools ([`ways`]), `client` serves every guest's
/// `wasi:http/client`, `fleet` (the policy's `[fleet]`) its `sluice:edge/fleet` calls.
/// An error names the component's line.
pub fn build(
    route: &RouteDef,
    defs: &[ComponentDef],
    compiled: &[Arc<CompiledComponent>],
    pools: &[Arc<UpstreamPool>],
    ways: &Ways,
    client: &Next,
    fleet: Option<&Arc<dyn FleetBackend>>,
) -> Result<Option<RouteComponents>, (usize, String)> {
    let outlets = |next: Next| GuestWays {
        next,
        client: client.clone(),
        fleet: fleet.cloned(),
    };
    if route.components.is_empty() && route.function.is_none() {
        return Ok(None);
    }
    let mut guests = Vec::new();
    let mut next: Next = match (route.function, route.pool) {
        (Some(f), _) => {
            let refuse: Next = Arc::new(|_| Box::pin(async { Err(ErrorCode::HttpRequestDenied) }));
            let guest = guest(&defs[f], &compiled[f], Role::Function, outlets(refuse))?;
            guests.push((defs[f].name.clone(), guest.clone()));
            wrap(guest, &defs[f], None)
        }
        (None, Some(p)) => pool::to_pool(pools[p].clone(), ways),
        (None, None) => return Err((0, format!("route {:?} ends in nothing", route.name))),
    };
    for &i in route.components.iter().rev() {
        let guest = guest(
            &defs[i],
            &compiled[i],
            Role::Middleware,
            outlets(next.clone()),
        )?;
        guests.push((defs[i].name.clone(), guest.clone()));
        next = wrap(guest, &defs[i], Some(next));
    }
    guests.reverse();
    Ok(Some(RouteComponents {
        entry: next,
        guests,
    }))
}

/// A policy's pools, by name, as its component chains reach them (built once per policy).
pub fn ways(pools: &[Arc<UpstreamPool>]) -> Ways {
    Ways::new(pools)
}

/// The `wasi:http/client` of every guest of a policy: its pools, by name.
pub fn client(ways: &Ways) -> Next {
    pool::by_authority(ways)
}

fn guest(
    def: &ComponentDef,
    compiled: &CompiledComponent,
    role: Role,
    ways: GuestWays,
) -> Result<Arc<Guest>, (usize, String)> {
    if let Some(edge) = compiled.edge_import().filter(|_| def.reuse_concurrency > 1) {
        return Err((
            def.line,
            format!(
                "filter {:?}: it imports {edge} (state of the request it serves), which needs \
                 reuse_concurrency = 1 (got {}): fresh instances, or reuse one request at a time",
                def.name, def.reuse_concurrency
            ),
        ));
    }
    Guest::with_fleet(
        &def.name,
        compiled,
        role,
        ways,
        GuestLimits {
            memory_bytes: def.memory_bytes,
            deadline_ms: def.callback_ms,
            response_timeout: RESPONSE_TIMEOUT,
            rebuild_budget: Duration::from_millis(def.rebuild_budget_ms),
        },
        Reuse {
            max_requests: def.reuse_requests,
            max_concurrent: def.reuse_concurrency,
        },
    )
    .map(Arc::new)
    .map_err(|e| (def.line, format!("filter {:?}: {e}", def.name)))
}

/// The guest as a [`Next`]: its failures counted and handled by its `on_failure` (fail
/// closed: the guest's answer is `failure_status`; fail open: a request without a body
/// goes on to the guest's own next handler, one with a body gets 502).
fn wrap(guest: Arc<Guest>, def: &ComponentDef, after: Option<Next>) -> Next {
    let name: Arc<str> = Arc::from(def.name.as_str());
    let on_failure = def.on_failure;
    Arc::new(move |req: http::Request<WasiBody>| {
        let guest = guest.clone();
        let name = name.clone();
        let after = after.clone();
        Box::pin(async move {
            let retry = match (on_failure, &after) {
                (OnFailure::Open, Some(_)) if bodiless(&req) => Some(head_of(&req)),
                _ => None,
            };
            let started = Instant::now();
            metrics()
                .filter_invocations
                .with_label_values(&[&*name, "component"])
                .inc();
            let result = guest.handle(req).await;
            metrics()
                .filter_duration
                .with_label_values(&[&*name, "component"])
                .observe(started.elapsed().as_secs_f64());
            // An instance that ended in a failure is counted by the host with its kind
            // (`trap`, `deadline`, `memory`), a refusal of the crash-loop guard as
            // `crash_loop`; the others here.
            let kind = match result {
                Ok(res) => return Ok(res),
                Err(GuestError::Code(code)) => return Err(code),
                Err(GuestError::Crashed) | Err(GuestError::CrashLoop { .. }) => None,
                Err(GuestError::Timeout) => Some("deadline"),
                Err(GuestError::Failed(_)) | Err(GuestError::Instantiate(_)) => Some("trap"),
            };
            if let Some(kind) = kind {
                metrics()
                    .filter_failures
                    .with_label_values(&[&*name, kind])
                    .inc();
                tracing::warn!(filter = %name, kind, "component failed");
            }
            match (on_failure, retry, after) {
                (OnFailure::Closed(status), _, _) => Ok(status_response(status)),
                (OnFailure::Open, Some(head), Some(after)) => after(head).await,
                (OnFailure::Open, _, _) => Ok(status_response(502)),
            }
        })
    })
}

/// Whether a request has no body to lose (a fail-open retry can resend it).
fn bodiless(req: &http::Request<WasiBody>) -> bool {
    use http_body::Body;
    req.body().is_end_stream() || req.body().size_hint().exact().is_some_and(|n| n == 0)
}

/// A copy of a bodiless request.
fn head_of(req: &http::Request<WasiBody>) -> http::Request<WasiBody> {
    let mut out = http::Request::new(empty());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    // The request's `sluice:edge` facts and the upstream the middleware before chose go
    // on with the retry.
    if let Some(info) = req.extensions().get::<Arc<EdgeInfo>>() {
        out.extensions_mut().insert(info.clone());
    }
    if let Some(choice) = req.extensions().get::<Arc<Upstream>>() {
        out.extensions_mut().insert(choice.clone());
    }
    out
}

/// An empty body.
pub(super) fn empty() -> WasiBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text response with `status`, for a component that failed closed.
fn status_response(status: u16) -> http::Response<WasiBody> {
    let text = format!("component failed ({status})\n");
    let mut res = http::Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    res
}
