//! The Pingora server of a policy, assembled and not yet running: traffic listeners
//! (cleartext, h2c, TLS), the admin listener and the warmed proxy service. `sluice run`
//! serves it; `sluice test` ([`crate::ftw`]) runs the same server in-process on a
//! loopback port.

use std::os::fd::{IntoRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ListenFds, Server, ShutdownWatch};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::forward::Forwarder;
use crate::listener::{self, Admit, Tracker};
use crate::proxy::Sluice;
use crate::snapshot::Snapshot;
use crate::swap::Control;
use crate::workers::Warmed;

/// A server built from a policy, ready for `run`.
pub struct Assembled {
    /// The Pingora server with its services added.
    pub server: Server,
    /// Connections and requests in flight on the traffic listeners.
    pub tracker: Arc<Tracker>,
    /// Reloads and the live snapshot.
    pub control: Arc<Control>,
    /// How long a stop waits for requests in flight (`[server] grace_period_ms`).
    pub grace: Duration,
}

/// Builds the server that serves `snap` (read from `path`, which reloads read again).
/// `prebound` are traffic listeners already bound (nonblocking), one per cleartext
/// `listen` address it names: the server takes them instead of binding, so a port the
/// caller picked cannot be taken by another process before the server starts. An error
/// names the listener that cannot be set up.
pub fn assemble(
    path: &Path,
    snap: Snapshot,
    prebound: Vec<std::net::TcpListener>,
) -> Result<Assembled, String> {
    assemble_upgrading(path, snap, prebound, false)
}

/// [`assemble`], and with `upgrade` the listening sockets (traffic, TLS, admin: every
/// listener is Pingora's, so every one is in its table of listeners) are taken over
/// from the running Sluice through the policy's `upgrade_sock` instead of bound: this
/// blocks until that process sends them (it does on SIGUSR2; see
/// [`crate::lifecycle`]), at most about 5 s.
pub fn assemble_upgrading(
    path: &Path,
    snap: Snapshot,
    prebound: Vec<std::net::TcpListener>,
    upgrade: bool,
) -> Result<Assembled, String> {
    let grace = snap.policy.grace_period;
    let threads = snap.policy.threads;
    let conf = ServerConf {
        threads: snap.policy.threads,
        // Keep each request on one thread from start to end: VMs are per thread.
        work_stealing: false,
        // A backstop only: sluice::lifecycle exits once drained or after `grace`.
        grace_period_seconds: Some(grace.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut conf = conf;
    if let Some(sock) = &snap.policy.upgrade_sock {
        conf.upgrade_sock = sock.display().to_string();
    }
    if upgrade && snap.policy.upgrade_sock.is_none() {
        return Err("--upgrade needs [server] upgrade_sock in the policy (the same as the running process's)".into());
    }
    let listen = snap.policy.listen.clone();
    let tls = snap.policy.tls.clone();
    let admin_addr = snap.policy.admin;
    let watch = snap.policy.watch;
    let keepalive = snap.policy.timeouts.keepalive;
    let traffic: Vec<_> = listen
        .iter()
        .chain(tls.iter().flat_map(|t| t.listen.iter()))
        .copied()
        .collect();
    let control = Arc::new(Control::new(path, snap));
    if let Err(e) = control.reload_on_sighup() {
        tracing::warn!(error = %e, "SIGHUP reloads are off");
    }
    if watch {
        if let Err(e) = control.watch() {
            tracing::warn!(error = %e, "policy watch is off");
        }
    }
    let live = control.live.clone();
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // With `upgrade`: receives the running process's listening sockets.
    server.bootstrap();
    let tracker = Arc::new(Tracker::new(&traffic, listener::fd_ceiling()));
    let mut app = pingora::proxy::http_proxy(&server.configuration, Sluice { live: live.clone() });
    // HTTP/1 requests and HTTP/2 streams run on Sluice's own loop; pingora-proxy keeps
    // upgrades.
    let forwarder = Forwarder::new(Sluice { live: live.clone() }, &server.configuration);
    // The HTTP/2 idle timeout `listener::h2` applies (Admit tells h2c from HTTP/1 itself:
    // pingora-proxy never sees a connection, only upgrade requests).
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(keepalive);
    app.server_options = Some(options);
    let mut admit = Admit::new(app, forwarder, live.clone(), tracker.clone());
    if let Some(def) = &tls {
        // TLS listeners are bound as TCP: Sluice runs the handshake on the thread that
        // serves the connection (`listener::Admit::with_tls`).
        pingora::tls::install_default_crypto_provider();
        match crate::tls::settings(def, live.clone()) {
            Ok(settings) => admit = admit.with_tls(def.listen.clone(), settings.build()),
            Err(e) => return Err(format!("cannot set up TLS on {:?}: {e}", def.listen)),
        }
    }
    let mut proxy = Service::new("sluice".to_string(), admit);
    for addr in listen
        .iter()
        .chain(tls.iter().flat_map(|t| t.listen.iter()))
    {
        proxy.add_tcp(&addr.to_string());
    }
    // Every worker thread gets the policy's VMs before the listeners open.
    let warmed = Warmed::new(proxy, control.clone(), threads);
    if prebound.is_empty() {
        server.add_service(warmed);
    } else {
        let mut fds = Vec::new();
        for l in prebound {
            let addr = l
                .local_addr()
                .map_err(|e| format!("a prebound listener: {e}"))?;
            l.set_nonblocking(true)
                .map_err(|e| format!("a prebound listener: {e}"))?;
            fds.push((addr.to_string(), l.into_raw_fd()));
        }
        server.add_service(Prebound { inner: warmed, fds });
    }
    if let Some(addr) = admin_addr {
        // The status page's "last minutes".
        crate::admin::history::start();
        let mut admin = Service::new(
            "sluice-admin".to_string(),
            Admin {
                control: control.clone(),
            },
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    Ok(Assembled {
        server,
        tracker,
        control,
        grace,
    })
}

/// A service whose listeners are sockets bound before the server started: their fds go
/// into Pingora's table of inherited listeners (the one a graceful upgrade fills), which
/// its listeners take instead of binding.
struct Prebound<S> {
    inner: S,
    fds: Vec<(String, RawFd)>,
}

#[async_trait::async_trait]
impl<S: pingora::services::Service + 'static> pingora::services::Service for Prebound<S> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        if let Some(table) = &fds {
            let mut table = table.lock();
            for (addr, fd) in self.fds.drain(..) {
                table.add(addr, fd);
            }
        }
        self.inner
            .start_service(
                #[cfg(unix)]
                fds,
                shutdown,
                listeners_per_fd,
            )
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }
}
