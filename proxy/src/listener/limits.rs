//! Counting connections and HTTP/1 requests against `[connections]` and the file
//! descriptors the process may open; each refusal is counted by reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;

use crate::metrics::metrics;
use crate::policy::ConnectionLimits;

/// Why a connection or request was refused (the `reason` label of
/// `sluice_overload_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    /// The listener holds `connections.max` connections.
    Listener,
    /// The client address holds `connections.max_per_client` connections.
    Client,
    /// The process is near its open-file limit (`RLIMIT_NOFILE`).
    FdHeadroom,
    /// `connections.max_h1_in_flight` HTTP/1 requests are being served.
    H1InFlight,
}

impl LimitRefusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            LimitRefusal::Listener => "listener",
            LimitRefusal::Client => "client",
            LimitRefusal::FdHeadroom => "fd_headroom",
            LimitRefusal::H1InFlight => "h1_in_flight",
        }
    }

    /// Counts this refusal.
    pub fn count(self) {
        metrics()
            .overload_refused
            .with_label_values(&[self.label()])
            .inc();
    }
}

const CLIENT_SHARDS: usize = 16;

struct ListenerCount {
    addr: SocketAddr,
    open: AtomicUsize,
    gauge: IntGauge,
}

/// Open connections per traffic listener and per client address, HTTP/1 requests in
/// flight, and the process-wide ceiling left by the open-file limit.
pub struct Tracker {
    listeners: Vec<ListenerCount>,
    clients: [Mutex<HashMap<IpAddr, usize>>; CLIENT_SHARDS],
    open: AtomicUsize,
    peak: AtomicUsize,
    ceiling: usize,
    in_flight: AtomicUsize,
    refusing: AtomicUsize,
}

impl Tracker {
    /// A tracker for these traffic listeners, admitting at most `ceiling` connections
    /// in all (see [`fd_ceiling`]).
    pub fn new(listeners: &[SocketAddr], ceiling: usize) -> Tracker {
        let m = metrics();
        Tracker {
            listeners: listeners
                .iter()
                .map(|a| ListenerCount {
                    addr: *a,
                    open: AtomicUsize::new(0),
                    gauge: m.connections_open.with_label_values(&[&a.to_string()]),
                })
                .collect(),
            clients: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            ceiling,
            in_flight: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
        }
    }

    /// Connections open on the traffic listeners.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The most connections open at once since the last call; starts over from now.
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.open(), Ordering::Relaxed)
    }

    /// HTTP/1 requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The process-wide connection ceiling.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    fn listener_of(&self, local: Option<SocketAddr>) -> Option<usize> {
        let local = local?;
        self.listeners.iter().position(|l| {
            l.addr.port() == local.port()
                && (l.addr.ip().is_unspecified() || l.addr.ip() == local.ip())
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        use std::hash::{Hash, Hasher};
        // A fixed key: the shard only spreads lock contention.
        let mut h = std::hash::DefaultHasher::new();
        ip.hash(&mut h);
        &self.clients[h.finish() as usize % CLIENT_SHARDS]
    }

    /// Admits a connection from `peer` on `local`, or says which limit it would pass.
    pub fn admit(
        self: &Arc<Self>,
        local: Option<SocketAddr>,
        peer: Option<IpAddr>,
        limits: &ConnectionLimits,
    ) -> Result<Connection, LimitRefusal> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.ceiling {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitRefusal::FdHeadroom);
        }
        self.peak.fetch_max(before + 1, Ordering::Relaxed);
        let mut conn = Connection {
            tracker: self.clone(),
            listener: None,
            client: None,
        };
        if let Some(i) = self.listener_of(local) {
            let l = &self.listeners[i];
            if l.open.fetch_add(1, Ordering::AcqRel) >= limits.max {
                l.open.fetch_sub(1, Ordering::AcqRel);
                return Err(LimitRefusal::Listener);
            }
            l.gauge.inc();
            conn.listener = Some(i);
        }
        if let Some(ip) = peer {
            let mut map = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= limits.max_per_client {
                if *n == 0 {
                    map.remove(&ip);
                }
                return Err(LimitRefusal::Client);
            }
            *n += 1;
            conn.client = Some(ip);
        }
        Ok(conn)
    }

    /// Takes a slot for an HTTP/1 request, or refuses it past `max`.
    pub fn start_request(self: &Arc<Self>, max: usize) -> Result<InFlight, LimitRefusal> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitRefusal::H1InFlight);
        }
        metrics().h1_in_flight.inc();
        Ok(InFlight {
            tracker: self.clone(),
        })
    }

    /// Takes one of the few slots for answering refused connections; `None` when so
    /// many are being refused that the next one is closed without an answer.
    pub fn start_refusing(self: &Arc<Self>) -> Option<Refusing> {
        const MAX_REFUSING: usize = 64;
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Refusing {
            tracker: self.clone(),
        })
    }
}

/// An admitted connection; dropping it gives its slots back.
pub struct Connection {
    tracker: Arc<Tracker>,
    listener: Option<usize>,
    client: Option<IpAddr>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let t = &self.tracker;
        if let Some(i) = self.listener {
            t.listeners[i].open.fetch_sub(1, Ordering::AcqRel);
            t.listeners[i].gauge.dec();
        }
        if let Some(ip) = self.client {
            let mut map = t.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        t.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An HTTP/1 request in flight; dropping it frees the slot.
pub struct InFlight {
    tracker: Arc<Tracker>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.tracker.in_flight.fetch_sub(1, Ordering::AcqRel);
        metrics().h1_in_flight.dec();
    }
}

/// A connection being answered 503 and closed.
pub struct Refusing {
    tracker: Arc<Tracker>,
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.tracker.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raises the soft open-file limit to the hard one and returns how many traffic
/// connections fit under it: each may need a second descriptor upstream, and a reserve
/// stays free for the admin listener, logs, module files and health checks.
pub fn fd_ceiling() -> usize {
    let soft = raise_nofile();
    let reserve = (soft / 8).clamp(64, 1024);
    (soft.saturating_sub(reserve) / 2).max(1)
}

#[cfg(unix)]
fn raise_nofile() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    }
}

#[cfg(not(unix))]
fn raise_nofile() -> usize {
    1024
}
