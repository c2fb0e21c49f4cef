//! Sluice started in-process for `sluice test`: the user's policy, served by the same
//! server `sluice run` builds ([`crate::serve::assemble`]), on a loopback ephemeral
//! port, with one worker thread, no TLS, no admin listener and every pool's peers
//! replaced by the echoing [`super::stub`] origin. Nothing for the user to start.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context as _};

use super::stub;
use crate::policy::Policy;
use crate::snapshot::Snapshot;

/// How long the policy may take to start (CRS: a few seconds per VM) before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Starts the policy at `path` and returns the address its traffic listener answers on,
/// once it does.
pub fn start(path: &Path) -> anyhow::Result<SocketAddr> {
    let origin = stub::start().context("starting the stub origin")?;
    let mut policy = Policy::load(path).map_err(|e| anyhow!("{e}"))?;
    // Bound here and handed to the server: no other process can take the port between.
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    rewire(&mut policy, addr, origin);
    let snap = Snapshot::build(policy, 1).map_err(|e| anyhow!("{e}"))?;
    let assembled =
        crate::serve::assemble(path, snap, vec![listener]).map_err(anyhow::Error::msg)?;
    std::thread::Builder::new()
        .name("ftw-sluice".into())
        .spawn(move || assembled.server.run_forever())
        .context("starting the server thread")?;
    // The socket accepts as soon as it is bound; the server answers once its VMs are
    // started. The first answer, whatever its status, says it serves.
    let probe = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    super::exchange::send(addr, probe, false, START_TIMEOUT).with_context(|| {
        format!(
            "the policy did not start serving within {}s",
            START_TIMEOUT.as_secs()
        )
    })?;
    tracing::debug!(%addr, %origin, "sluice test: policy serving");
    Ok(addr)
}

/// Points `policy` at the test's listener and origin; turns off what a test run must
/// not open or touch (TLS and admin listeners, watch, access log, health checks).
fn rewire(policy: &mut Policy, listen: SocketAddr, origin: SocketAddr) {
    policy.listen = vec![listen];
    policy.tls = None;
    policy.admin = None;
    policy.watch = false;
    policy.access_log = None;
    // Stages run one at a time: one worker thread starts one set of VMs.
    policy.threads = 1;
    for pool in &mut policy.pools {
        pool.peers = vec![origin];
        pool.weights = vec![1];
        pool.tls = None;
        pool.h2 = false;
        pool.health = None;
        pool.ejection = None;
    }
}
