//! Requests Sluice's own loop leaves to pingora-proxy: protocol upgrades (WebSocket),
//! whose two-way byte stream after `101 Switching Protocols` is pingora-proxy's
//! duplex machinery. The bytes Sluice's session read (the head, and anything after
//! it) are handed over as the start of the connection's next bytes (Pingora's
//! pipelined prefix), so pingora-proxy reads the same request again; an upgrade
//! request carries no body before the `101`. The target as the client sent it, when
//! the listener encoded it, goes along as the connection's user context
//! (pingora-proxy's `on_connection_reuse` gives it to the hooks' context).

use std::sync::Arc;

use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::downstream::h1::Session;
use crate::proxy::OriginalTarget;

/// Serves the request whose head `session` has read through `app` (pingora-proxy);
/// `original_target`: the target as sent ([`crate::forward::Admission`]). The stream
/// comes back when the connection can carry another request (an upgrade the origin
/// refused).
pub async fn run<A>(
    session: Session,
    app: &Arc<A>,
    shutdown: &ShutdownWatch,
    original_target: Option<&[u8]>,
) -> Option<Stream>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let (read, write) = (session.read_timeout(), session.write_timeout());
    let keepalive = session.will_keepalive() && !*shutdown.borrow();
    let (stream, bytes) = session.into_upgrade();
    let mut next = ServerSession::new_http1(stream);
    let mut settings = HttpPersistentSettings::for_session(&next);
    settings.set_pipelined_prefix(bytes);
    if let Some(target) = original_target {
        settings.set_user_context(Box::new(OriginalTarget(target.to_vec())));
    }
    settings.apply_to_session(&mut next);
    // Pingora's read of the head sets keep-alive again from the request.
    next.set_keepalive(keepalive.then_some(0));
    next.set_read_timeout(read);
    next.set_write_timeout(write);
    let reused = app.process_new_http(next, shutdown).await?;
    Some(reused.consume().0)
}
