//! The [`ProxyHttp`] impl pingora-proxy drives for the requests Sluice's own loop hands
//! it (upgrades, `crate::forward::handoff`): each hook calls the plain method of
//! [`Sluice`] of the same name, which `crate::forward` calls directly (no boxed future
//! per call).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::downstream::Downstream;

use super::{Ctx, OriginalTarget, Sluice};

#[async_trait]
impl ProxyHttp for Sluice {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Sluice::new_ctx(self)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        // What the loop hands over with an upgrade ([`crate::forward::handoff`]).
        if let Ok(target) = prev.downcast::<OriginalTarget>() {
            ctx.original_target = Some(target.0);
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        Sluice::suppress_error_log(self, ctx, e)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        Sluice::request_filter(self, &mut Downstream::Pingora(session), ctx).await
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Sluice::upstream_peer(self, &mut Downstream::Pingora(session), ctx)
            .await
            .map(Box::new)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        Sluice::upstream_request_filter(
            self,
            &mut Downstream::Pingora(session),
            upstream_request,
            ctx,
        )
        .await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        Sluice::request_body_filter(
            self,
            &mut Downstream::Pingora(session),
            body,
            end_of_stream,
            ctx,
        )
        .await
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        Sluice::response_filter(
            self,
            &mut Downstream::Pingora(session),
            upstream_response,
            ctx,
        )
        .await
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        Sluice::response_body_filter(
            self,
            &mut Downstream::Pingora(session),
            body,
            end_of_stream,
            ctx,
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        Sluice::logging(self, &mut Downstream::Pingora(session), e, ctx).await
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        Sluice::fail_to_connect(self, &mut Downstream::Pingora(session), peer, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        Sluice::error_while_proxy(
            self,
            peer,
            &mut Downstream::Pingora(session),
            e,
            ctx,
            client_reused,
        )
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        Sluice::fail_to_proxy(self, &mut Downstream::Pingora(session), e, ctx).await
    }
}
