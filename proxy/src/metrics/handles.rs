//! Metric handles resolved once per snapshot, so that a request touches only atomics:
//! per filter and phase ([`FilterMetrics`]), per route and pool ([`RouteMetrics`]).

use prometheus::{Histogram, IntCounter};

use super::metrics;
use crate::phase::{Phase, Verdict};

/// Metric handles of one phase of one filter.
pub struct PhaseMetrics {
    /// Invocations.
    pub invocations: IntCounter,
    /// Duration.
    pub duration: Histogram,
    /// Per verdict, in [`Verdict::ALL`] order ([`PhaseMetrics::verdict`]).
    actions: [IntCounter; Verdict::ALL.len()],
}

impl PhaseMetrics {
    /// The `sluice_filter_actions_total` counter of `verdict`.
    pub fn verdict(&self, verdict: Verdict) -> &IntCounter {
        &self.actions[verdict.index()]
    }
}

/// Metric handles of one filter, resolved once per snapshot.
pub struct FilterMetrics {
    /// Per phase, in [`Phase::ALL`] order ([`FilterMetrics::phase`]).
    phases: [PhaseMetrics; Phase::ALL.len()],
}

impl FilterMetrics {
    /// Handles for filter `name`.
    pub fn new(name: &str) -> FilterMetrics {
        let m = metrics();
        FilterMetrics {
            phases: Phase::ALL.map(|p| {
                let p = p.as_str();
                PhaseMetrics {
                    invocations: m.filter_invocations.with_label_values(&[name, p]),
                    duration: m.filter_duration.with_label_values(&[name, p]),
                    actions: Verdict::ALL
                        .map(|a| m.filter_actions.with_label_values(&[name, p, a.as_str()])),
                }
            }),
        }
    }

    /// The handles of `phase`.
    pub fn phase(&self, phase: Phase) -> &PhaseMetrics {
        &self.phases[phase.index()]
    }
}

/// Method label values, in the order [`method_index`] uses.
pub(super) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// Status classes, in the order [`class_index`] uses.
pub(super) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Metric handles of one route (and its pool), resolved once per snapshot so that a
/// request touches only atomics.
pub struct RouteMetrics {
    requests: Vec<IntCounter>,
    /// Request duration.
    pub duration: Histogram,
    /// Upstream duration of the route's pool.
    pub upstream: Histogram,
}

impl RouteMetrics {
    /// Handles for route `route` served by pool `pool`.
    pub fn new(route: &str, pool: &str) -> RouteMetrics {
        let m = metrics();
        let mut requests = Vec::with_capacity(METHODS.len() * CLASSES.len());
        for method in METHODS {
            for class in CLASSES {
                requests.push(m.requests.with_label_values(&[route, class, method]));
            }
        }
        RouteMetrics {
            requests,
            duration: m.request_duration.with_label_values(&[route]),
            upstream: m.upstream_duration.with_label_values(&[pool]),
        }
    }

    /// Counts one request.
    pub fn count(&self, method: &http::Method, status: u16) {
        self.requests[method_index(method) * CLASSES.len() + class_index(status)].inc();
    }
}

pub(super) fn method_index(m: &http::Method) -> usize {
    let label = method_label(m);
    METHODS
        .iter()
        .position(|x| *x == label)
        .unwrap_or(METHODS.len() - 1)
}

pub(super) fn class_index(status: u16) -> usize {
    CLASSES
        .iter()
        .position(|c| *c == status_class(status))
        .unwrap_or(4)
}

/// `1xx`..`5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A method label: the standard ones, else `other` (label values stay bounded).
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
