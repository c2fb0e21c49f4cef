//! HTTP calls filters dispatch (`proxy_http_call`): the request the host queues, the
//! response it delivers, and the [`Callouts`] client the proxy provides. The host
//! knows nothing of how calls are made; the proxy sends them with Pingora.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::fleet::FleetOp;
use super::stream::HeaderMap;

/// Most calls one stream (or one root-context callback) may have outstanding.
pub const MAX_PENDING_CALLS: usize = 16;
/// Most calls one request may dispatch in its whole life.
pub const MAX_CALLS_PER_STREAM: u32 = 64;
/// Longest timeout a filter may ask for.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A call a filter dispatched, waiting to be sent.
#[derive(Debug, Clone)]
pub struct HttpCallRequest {
    /// Token the guest got back.
    pub token: u32,
    /// Context that dispatched it (gets `proxy_on_http_call_response`).
    pub context_id: u32,
    /// Upstream pool name.
    pub upstream: String,
    /// Headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Timeout of the whole call.
    pub timeout: Duration,
    /// Set for a fleet operation (`sluice.fleet.*`): the proxy runs it on the fleet
    /// store instead of sending an HTTP request, and its result is delivered through
    /// `proxy_on_foreign_function` (the body of the response holds the
    /// [`crate::fleet::FleetReply`] bytes).
    pub fleet: Option<FleetOp>,
}

/// What came back from a call.
#[derive(Debug, Clone, Default)]
pub struct HttpCallResponse {
    /// Headers, with `:status`.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: HeaderMap,
}

/// The outcome the guest sees: a response, or a failure (timeout, connect error)
/// delivered as a response with no headers, as Envoy does.
pub type CallResult = Result<HttpCallResponse, String>;

/// Sends HTTP calls for filters. Provided by the proxy, per snapshot (it knows the pools).
pub trait Callouts: Send + Sync {
    /// True when `upstream` names a pool calls may go to.
    fn knows(&self, upstream: &str) -> bool;
    /// Sends one call; never longer than `req.timeout`.
    fn call(&self, req: HttpCallRequest) -> Pin<Box<dyn Future<Output = CallResult> + Send>>;
    /// True when a fleet store is configured (`sluice.fleet.enabled`).
    fn fleet_enabled(&self) -> bool {
        false
    }
    /// With a fleet store: how long a persistent-collection record read from it stays
    /// fresh (`sluice.collection.read` reports it stale after). `None`: collections are
    /// this process's only.
    fn collection_refresh_ms(&self) -> Option<u64> {
        None
    }
}
