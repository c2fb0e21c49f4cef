//! `[timeouts]`, `[connections]` and `[server] grace_period_ms`: how long a client may
//! take and how many connections it may hold (issue #15, item 3).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Lines;

/// How long each phase of a downstream connection may take (`[timeouts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the connection's first byte (or accept) to the end of the request head
    /// (nginx `client_header_timeout`).
    pub header: Duration,
    /// Longest wait for the next bytes of a request body (nginx `client_body_timeout`).
    pub body_idle: Duration,
    /// Longest wait for the next request on an idle keep-alive connection, HTTP/1 and h2
    /// (nginx `keepalive_timeout`).
    pub keepalive: Duration,
    /// With `h2c = true`: longest wait for the bytes that tell HTTP/2's preface from HTTP/1.
    pub h2_preface: Duration,
    /// Longest wait for the client to accept more response bytes (nginx `send_timeout`).
    pub send_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body_idle: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            h2_preface: Duration::from_secs(10),
            send_idle: Duration::from_secs(60),
        }
    }
}

/// How many connections and requests the traffic listeners hold (`[connections]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections per traffic listener.
    pub max: usize,
    /// Open connections from one client address, over all traffic listeners.
    pub max_per_client: usize,
    /// HTTP/1 requests being served at once (request head read, response not finished).
    pub max_h1_in_flight: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 10_000,
            max_per_client: 512,
            max_h1_in_flight: 8_192,
        }
    }
}

/// Default `[server] grace_period_ms`: under Kubernetes' 30 s before SIGKILL.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(25);

/// Longest accepted timeout or grace period: one day.
const MAX_MS: u64 = 86_400_000;
/// Largest accepted connection limit.
const MAX_COUNT: u64 = 10_000_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    header_ms: Option<Spanned<u64>>,
    body_idle_ms: Option<Spanned<u64>>,
    keepalive_ms: Option<Spanned<u64>>,
    h2_preface_ms: Option<Spanned<u64>>,
    send_idle_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnections {
    max: Option<Spanned<u64>>,
    max_per_client: Option<Spanned<u64>>,
    max_h1_in_flight: Option<Spanned<u64>>,
}

/// A value in `1..=max`, or the default; an error with the key's line otherwise.
fn bounded(l: &mut Lines, v: &Option<Spanned<u64>>, key: &str, max: u64, default: u64) -> u64 {
    match v {
        None => default,
        Some(s) if (1..=max).contains(s.get_ref()) => *s.get_ref(),
        Some(s) => {
            l.err(
                Some(s.span()),
                format!("{key} must be between 1 and {max}, not {}", s.get_ref()),
            );
            default
        }
    }
}

fn ms(l: &mut Lines, v: &Option<Spanned<u64>>, key: &str, default: Duration) -> Duration {
    Duration::from_millis(bounded(l, v, key, MAX_MS, default.as_millis() as u64))
}

pub(super) fn timeouts(l: &mut Lines, raw: &RawTimeouts) -> Timeouts {
    let d = Timeouts::default();
    Timeouts {
        header: ms(l, &raw.header_ms, "timeouts.header_ms", d.header),
        body_idle: ms(l, &raw.body_idle_ms, "timeouts.body_idle_ms", d.body_idle),
        keepalive: ms(l, &raw.keepalive_ms, "timeouts.keepalive_ms", d.keepalive),
        h2_preface: ms(
            l,
            &raw.h2_preface_ms,
            "timeouts.h2_preface_ms",
            d.h2_preface,
        ),
        send_idle: ms(l, &raw.send_idle_ms, "timeouts.send_idle_ms", d.send_idle),
    }
}

pub(super) fn limits(l: &mut Lines, raw: &RawConnections) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let count = |l: &mut Lines, v, key, default: usize| {
        bounded(l, v, key, MAX_COUNT, default as u64) as usize
    };
    ConnectionLimits {
        max: count(l, &raw.max, "connections.max", d.max),
        max_per_client: count(
            l,
            &raw.max_per_client,
            "connections.max_per_client",
            d.max_per_client,
        ),
        max_h1_in_flight: count(
            l,
            &raw.max_h1_in_flight,
            "connections.max_h1_in_flight",
            d.max_h1_in_flight,
        ),
    }
}

pub(super) fn grace_period(l: &mut Lines, raw: &Option<Spanned<u64>>) -> Duration {
    match raw {
        // 0 is allowed: stop at once, as SIGQUIT does.
        Some(s) if *s.get_ref() == 0 => Duration::ZERO,
        _ => ms(l, raw, "server.grace_period_ms", DEFAULT_GRACE_PERIOD),
    }
}
