//! Starting and stopping the server.
//!
//! - Before start, every listen address is bound once to check it is free: Pingora
//!   would only panic inside its service runtime and keep running without a listener.
//! - SIGTERM or SIGINT: Pingora closes the listeners and the idle connections (HTTP/2
//!   gets GOAWAY); requests in flight finish, and the process exits 0 as soon as no
//!   traffic connection is left, or when `[server] grace_period_ms` is over. Pingora
//!   alone sleeps a fixed grace period and then drops every task, in-flight or not.
//!   A second signal during the drain exits at once.
//! - SIGQUIT: exits at once (Pingora's fast shutdown; Pingora's own meaning, handing
//!   listeners to a new process, is SIGUSR2's in Sluice).
//! - SIGUSR2, with `[server] upgrade_sock`: zero-downtime binary upgrade. The listening
//!   sockets (every one: traffic, TLS and admin) go to the new process waiting on that
//!   socket (`sluice run --upgrade`, which sends this signal itself), which accepts on
//!   the same sockets from then on; this process keeps accepting for Pingora's 5 s
//!   overlap, then closes its copies, finishes the requests in flight and exits as after
//!   SIGTERM. Connections waiting in the kernel's accept queue are the new process's:
//!   the queue belongs to the socket, not to a process. Without `upgrade_sock`, SIGUSR2
//!   is logged and ignored.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::broadcast;

use crate::listener::Tracker;

type ExitHook = Box<dyn FnOnce() + Send>;

static EXIT_HOOK: Mutex<Option<ExitHook>> = Mutex::new(None);

/// Runs `hook` before the process exits (e.g. to flush the access log).
pub fn at_exit(hook: impl FnOnce() + Send + 'static) {
    *EXIT_HOOK.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
}

/// Runs the exit hook, once.
pub fn run_exit_hook() {
    let hook = EXIT_HOOK.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(hook) = hook {
        hook();
    }
}

fn exit(code: i32) -> ! {
    run_exit_hook();
    std::process::exit(code)
}

/// Binds each address once and lets it go; the first that cannot be bound is returned
/// with the reason (typically "Address already in use").
pub fn check_free(addrs: &[SocketAddr]) -> Result<(), (SocketAddr, std::io::Error)> {
    for addr in addrs {
        std::net::TcpListener::bind(addr).map_err(|e| (*addr, e))?;
    }
    Ok(())
}

/// Sluice's answer to stop signals, handed to Pingora's `Server::run`.
pub struct Signals {
    tracker: Arc<Tracker>,
    /// Whether SIGUSR2 hands the listeners over (`[server] upgrade_sock` is set).
    upgrade: bool,
    grace: Duration,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl Signals {
    /// Drains the connections `tracker` counts for at most `grace`; `phases` is the
    /// server's execution phase watch (the drain starts once listeners are told to close).
    pub fn new(
        tracker: Arc<Tracker>,
        grace: Duration,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> Self {
        Signals {
            tracker,
            upgrade: false,
            grace,
            phases: Mutex::new(Some(phases)),
        }
    }
}

impl Signals {
    /// SIGUSR2 hands the listening sockets over (the policy has an `upgrade_sock`).
    pub fn with_upgrade(mut self, upgrade: bool) -> Self {
        self.upgrade = upgrade;
        self
    }

    /// Drains on a thread of its own once the listeners are told to close.
    fn start_drain(&self) {
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take();
        let tracker = self.tracker.clone();
        let grace = self.grace;
        std::thread::Builder::new()
            .name("sluice-drain".into())
            .spawn(move || drain(tracker, grace, phases))
            .map(drop)
            .unwrap_or_else(|e| tracing::error!(error = %e, "no drain thread"));
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot listen for stop signals");
            return std::future::pending().await;
        };
        let name = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = quit.recv() => {
                    tracing::info!(open = self.tracker.open(), "SIGQUIT: stopping at once");
                    return ShutdownSignal::FastShutdown;
                }
                _ = usr2.recv() => {
                    if !self.upgrade {
                        tracing::warn!("SIGUSR2: no [server] upgrade_sock, nothing to hand over; ignored");
                        continue;
                    }
                    tracing::info!(open = self.tracker.open(), "SIGUSR2: handing the listening sockets to the new process, then finishing the requests in flight");
                    self.start_drain();
                    return ShutdownSignal::GracefulUpgrade;
                }
            }
        };
        tracing::info!(
            signal = name,
            open = self.tracker.open(),
            grace_ms = self.grace.as_millis() as u64,
            "stopping: listeners close, requests in flight finish"
        );
        self.start_drain();
        ShutdownSignal::GracefulTerminate
    }
}

/// Exits once no traffic connection is left, the grace period is over, or another stop
/// signal comes.
fn drain(
    tracker: Arc<Tracker>,
    grace: Duration,
    phases: Option<broadcast::Receiver<ExecutionPhase>>,
) {
    let start = Instant::now();
    if let Some(mut rx) = phases {
        // Pingora announces these phases once it has told the listeners to close (a
        // stop; after a hand-over, once its overlap is over).
        loop {
            match rx.blocking_recv() {
                Ok(ExecutionPhase::GracefulTerminate | ExecutionPhase::ShutdownStarted) => break,
                Err(broadcast::error::RecvError::Closed) => break,
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut again = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGQUIT,
    ])
    .ok();
    loop {
        let open = tracker.open();
        if open == 0 {
            tracing::info!(
                took_ms = start.elapsed().as_millis() as u64,
                "drained; exiting"
            );
            exit(0);
        }
        if start.elapsed() >= grace {
            tracing::warn!(open, "grace period over; closing the connections left");
            exit(0);
        }
        if again.as_mut().is_some_and(|s| s.pending().next().is_some()) {
            tracing::warn!(open, "second stop signal; exiting at once");
            exit(0);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
