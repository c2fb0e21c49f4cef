//! The data of one component instance's `Store`: WASI and `wasi:http` contexts, the
//! resource table, the memory limiter, and the two ways out (the next handler, the client).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime::component::ResourceTable;

use super::edge::{RequestData, Requests};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// A boxed future of a response, as [`Next`] returns it.
pub type NextFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, ErrorCode>> + Send>>;

/// Where a request goes after a component: the next middleware's [`super::Guest`], the
/// route's pool, or an edge function. Shared by every instance of one chain position.
pub type Next = Arc<dyn Fn(http::Request<WasiBody>) -> NextFuture + Send + Sync>;

/// Sends what a guest hands to `handler.handle` (middleware) or `client.send` to a [`Next`].
pub(crate) struct Outbound {
    pub(crate) next: Next,
    /// The facts and upstream choice of the request a middleware is passing on, set by
    /// the `handler.handle` import just before the request is converted and sent (no
    /// await in between): the next handler gets them as extensions ([`super::edge`]).
    /// Never set for `client.send`: there the request's authority names the pool.
    pub(crate) passing: Option<RequestData>,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        let mut request = request;
        if let Some(data) = self.passing.take() {
            data.attach(&mut request);
        }
        let fut = (self.next)(request);
        Box::new(async move {
            let response = fut.await.map_err(to_error)?;
            Ok((
                response,
                Box::new(async { Ok(()) })
                    as Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            ))
        })
    }

    fn set_host_header(&mut self) -> bool {
        false
    }

    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        Some(http::uri::Scheme::HTTP)
    }
}

/// The embedder-facing error for an error code (only the cases a [`Next`] produces).
fn to_error(code: ErrorCode) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error as E;
    match code {
        ErrorCode::DestinationNotFound => E::DestinationNotFound,
        ErrorCode::DestinationUnavailable => E::DestinationUnavailable,
        ErrorCode::ConnectionRefused => E::ConnectionRefused,
        ErrorCode::ConnectionTerminated => E::ConnectionTerminated,
        ErrorCode::ConnectionTimeout => E::ConnectionTimeout,
        ErrorCode::HttpRequestDenied => E::HttpRequestDenied,
        ErrorCode::HttpResponseTimeout => E::HttpResponseTimeout,
        ErrorCode::HttpProtocolError => E::HttpProtocolError,
        ErrorCode::InternalError(m) => E::InternalError(m),
        other => E::InternalError(Some(format!("{other:?}"))),
    }
}

/// The `T` of a component `Store`.
pub(crate) struct GuestState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    /// `wasi:http/handler` (middleware): the next handler of the chain.
    pub(crate) next: Outbound,
    /// `wasi:http/client`: the host's pools (never the network directly).
    pub(crate) client: Outbound,
    /// The `sluice:edge` facts of the requests this instance serves, by task.
    pub(crate) requests: Requests,
    /// `sluice:edge/fleet`: the fleet store and the filter whose keys it touches.
    pub(crate) fleet: super::fleet::GuestFleet,
    /// The memory cap, remembering a refused growth (a failure's kind).
    pub(crate) limits: crate::state::Limiter,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.client,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl GuestState {
    /// The `wasi:http` view whose hooks send to the next handler (`handler.handle`).
    pub(crate) fn next_view(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.next,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }

    /// The view `wasmtime-wasi-http` uses for the handler's own request and response.
    pub(crate) fn client_view(&mut self) -> WasiHttpCtxView<'_> {
        self.http()
    }
}
