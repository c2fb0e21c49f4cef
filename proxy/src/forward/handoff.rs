//! Requests Sluice's own loop leaves to pingora-proxy: protocol upgrades (WebSocket),
//! whose two-way byte stream after `101 Switching Protocols` is pingora-proxy's
//! duplex machinery. The head already read is handed over as the start of the
//! connection's next bytes (Pingora's pipelined prefix), so pingora-proxy reads the
//! same request again; an upgrade request carries no body before the `101`. The
//! target as the client sent it, when the listener encoded it, goes along as the
//! connection's user context (pingora-proxy's `on_connection_reuse` gives it to the
//! hooks' context).

use std::sync::Arc;

use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::proxy::OriginalTarget;

/// Whether the request must go to pingora-proxy: an HTTP/1 upgrade.
pub fn wanted(session: &ServerSession) -> bool {
    session.is_upgrade_req()
}

/// Serves the request whose head `session` has read through `app` (pingora-proxy);
/// `original_target`: the target as sent ([`crate::forward::Admission`]).
pub async fn run<A>(
    session: ServerSession,
    app: &Arc<A>,
    shutdown: &ShutdownWatch,
    original_target: Option<&[u8]>,
) -> Option<ReusedHttpStream>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let mut settings = HttpPersistentSettings::for_session(&session);
    let ServerSession::H1(h1) = session else {
        return None;
    };
    let head = BytesMut::from(&h1.get_headers_raw_bytes()[..]);
    let (read, write) = (h1.get_read_timeout(), h1.get_write_timeout());
    let keepalive = h1.get_keepalive_timeout();
    let mut next = ServerSession::new_http1(h1.into_inner());
    settings.set_pipelined_prefix(head);
    if let Some(target) = original_target {
        settings.set_user_context(Box::new(OriginalTarget(target.to_vec())));
    }
    settings.apply_to_session(&mut next);
    next.set_keepalive(keepalive);
    next.set_read_timeout(read);
    next.set_write_timeout(write);
    app.process_new_http(next, shutdown).await
}
