//! Prometheus metrics: one process-wide registry, label values bounded by the policy
//! (route, pool, peer and filter names, phases, status classes; never raw paths or
//! client addresses). Hot paths use handles resolved once per snapshot
//! ([`FilterMetrics`]). Filter-defined metrics (`proxy_define_metric`) are appended at
//! scrape time as `sluice_wasm_<name>{plugin="..."}` ([`crate::admin::scrape`]).

use std::sync::OnceLock;

use prometheus::{
    CounterVec, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

mod handles;

pub use handles::{method_label, status_class, FilterMetrics, PhaseMetrics, RouteMetrics};

/// Histogram buckets for filter callbacks: 1 µs to 100 ms.
const FILTER_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    0.1,
];
/// Histogram buckets for requests and upstreams: 100 µs to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Every metric Sluice exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, status class and method.
    pub requests: IntCounterVec,
    /// Request duration by route.
    pub request_duration: HistogramVec,
    /// Time from connecting upstream to its response header, by pool.
    pub upstream_duration: HistogramVec,
    /// Upstream connect and proxy errors by pool and peer.
    pub upstream_errors: IntCounterVec,
    /// Peers taken out by passive ejection, by pool and peer.
    pub upstream_ejections: IntCounterVec,
    /// 1 while the active health check finds a peer healthy, by pool and peer.
    pub upstream_healthy: IntGaugeVec,
    /// Upstream attempts retried on another peer, by pool.
    pub upstream_retries: IntCounterVec,
    /// Requests whose filters named a pool the policy does not have, by route.
    pub unknown_pool: IntCounterVec,
    /// Request bodies refused while held for the filters, by route and reason
    /// (`too_large`, `length_required`).
    pub request_body_refusals: IntCounterVec,
    /// Requests that failed on the client's side (bad body framing, disconnect,
    /// timeout) while proxied, by pool: never counted as upstream errors.
    pub downstream_errors: IntCounterVec,
    /// Requests refused before routing (path, `Connection` header, a head the HTTP/1
    /// parser refuses: 400; `CONNECT`: 405), by reason.
    pub bad_requests: IntCounterVec,
    /// Filter callbacks by filter and phase.
    pub filter_invocations: IntCounterVec,
    /// Filter callback duration by filter and phase.
    pub filter_duration: HistogramVec,
    /// What filters answered, by filter, phase and action.
    pub filter_actions: IntCounterVec,
    /// Local responses by filter and status.
    pub filter_local_responses: IntCounterVec,
    /// Filter failures by filter and kind.
    pub filter_failures: IntCounterVec,
    /// VMs rebuilt after a failure, by filter.
    pub filter_rebuilds: IntCounterVec,
    /// Time spent rebuilding VMs after failures (off the request path), by filter.
    pub filter_rebuild_seconds: CounterVec,
    /// Times a filter's crash-loop guard tripped, by filter.
    pub filter_crash_loops: IntCounterVec,
    /// Requests refused for their header section before routing, by reason.
    pub header_refusals: IntCounterVec,
    /// VMs alive by filter.
    pub filter_vms: IntGaugeVec,
    /// Linear memory of VMs by filter.
    pub filter_vm_memory: IntGaugeVec,
    /// Generation being served.
    pub generation: IntGauge,
    /// Swaps by result.
    pub swaps: IntCounterVec,
    /// Time of the last successful swap.
    pub last_swap: Gauge,
    /// 1 for the policy bundle being served, by reference, digest and signer (issue #20).
    pub bundle_info: IntGaugeVec,
    /// Looks at a bundle's registry, by result (`unchanged`, `fetched`, `error`, `offline_cache`).
    pub bundle_fetches: IntCounterVec,
    /// Bundles refused, by reason (`invalid`, `unsigned`, `bad_signature`, `wrong_digest`,
    /// `digest_mismatch`, `too_large`, `bad_layout`).
    pub bundle_refusals: IntCounterVec,
    /// Unix time the bundle being served was fetched.
    pub bundle_fetched: Gauge,
    /// Fleet store operations by operation and result (`ok`, `error`, `timeout`,
    /// `unavailable`, `cached`: answered from the over-limit cache with no round trip).
    pub fleet_calls: IntCounterVec,
    /// Fleet store round trips' duration by operation.
    pub fleet_duration: HistogramVec,
    /// Image variant cache lookups by result (`hit`, `miss`).
    pub image_cache: IntCounterVec,
    /// Image transforms by outcome.
    pub image_transforms: IntCounterVec,
    /// Image transform duration (slot wait included) by output format.
    pub image_duration: HistogramVec,
    /// Image bytes by direction (`source` read from origins, `output` produced).
    pub image_bytes: IntCounterVec,
    /// Bytes held by the image variant cache.
    pub image_cache_bytes: IntGauge,
    /// Image requests refused by the host, by reason (`busy`, `content_type`, `source_path`).
    pub image_refused: IntCounterVec,
    /// Connections open on a traffic listener, by listener.
    pub connections_open: IntGaugeVec,
    /// Connections and requests refused by a limit, by reason.
    pub overload_refused: IntCounterVec,
    /// Connections closed or requests failed by a timeout, by phase.
    pub connection_timeouts: IntCounterVec,
    /// HTTP/1 requests in flight.
    pub h1_in_flight: IntGauge,
    /// Heap returned to the kernel after connections closed (`malloc_trim`), bytes.
    pub memory_trimmed: IntCounter,
    /// TLS handshakes that failed (not TLS, no shared version or cipher, closed midway).
    pub tls_handshake_failures: IntCounter,
    /// Admin API requests refused, by reason (`host`, `origin`, `content_type`, `token`).
    pub admin_refusals: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let generation = IntGauge::new(
            "sluice_policy_generation",
            "Generation of the policy being served.",
        )
        .expect("valid");
        r.register(Box::new(generation.clone())).expect("unique");
        let last_swap = Gauge::new(
            "sluice_policy_last_swap_timestamp_seconds",
            "Unix time of the last successful policy swap.",
        )
        .expect("valid");
        r.register(Box::new(last_swap.clone())).expect("unique");
        let bundle_fetched = Gauge::new(
            "sluice_bundle_fetched_timestamp_seconds",
            "Unix time the policy bundle being served was fetched from its registry.",
        )
        .expect("valid");
        r.register(Box::new(bundle_fetched.clone())).expect("unique");
        let image_cache_bytes = IntGauge::new(
            "sluice_image_cache_bytes",
            "Bytes held by the image variant cache.",
        )
        .expect("valid");
        r.register(Box::new(image_cache_bytes.clone()))
            .expect("unique");
        let h1_in_flight = IntGauge::new(
            "sluice_h1_requests_in_flight",
            "HTTP/1 requests being served (head read, response not finished).",
        )
        .expect("valid");
        r.register(Box::new(h1_in_flight.clone())).expect("unique");
        let memory_trimmed = IntCounter::new(
            "sluice_memory_trimmed_bytes_total",
            "Resident heap returned to the kernel after connections closed.",
        )
        .expect("valid");
        r.register(Box::new(memory_trimmed.clone())).expect("unique");
        let tls_handshake_failures = IntCounter::new(
            "sluice_tls_handshake_failures_total",
            "TLS handshakes that failed (timeouts count in sluice_connection_timeouts_total{phase=\"tls_handshake\"}).",
        )
        .expect("valid");
        r.register(Box::new(tls_handshake_failures.clone()))
            .expect("unique");
        Metrics {
            requests: counter(
                &r,
                "sluice_requests_total",
                "Requests by route, status class and method.",
                &["route", "status_class", "method"],
            ),
            request_duration: histogram(
                &r,
                "sluice_request_duration_seconds",
                "Request duration, first byte in to last byte out.",
                &["route"],
                REQUEST_BUCKETS,
            ),
            upstream_duration: histogram(
                &r,
                "sluice_upstream_duration_seconds",
                "Time from choosing the upstream peer to its response header.",
                &["pool"],
                REQUEST_BUCKETS,
            ),
            upstream_errors: counter(
                &r,
                "sluice_upstream_errors_total",
                "Upstream connect and proxy errors.",
                &["pool", "peer"],
            ),
            upstream_ejections: counter(
                &r,
                "sluice_upstream_ejections_total",
                "Peers ejected after consecutive failures.",
                &["pool", "peer"],
            ),
            upstream_healthy: gauge_vec(
                &r,
                "sluice_upstream_healthy",
                "1 when the active health check finds the peer healthy.",
                &["pool", "peer"],
            ),
            upstream_retries: counter(
                &r,
                "sluice_upstream_retries_total",
                "Upstream attempts retried on another peer.",
                &["pool"],
            ),
            request_body_refusals: counter(
                &r,
                "sluice_request_body_refusals_total",
                "Request bodies refused while held for the filters, by route and reason.",
                &["route", "reason"],
            ),
            downstream_errors: counter(
                &r,
                "sluice_downstream_errors_total",
                "Requests that failed on the client's side while proxied, by pool.",
                &["pool"],
            ),
            unknown_pool: counter(
                &r,
                "sluice_route_unknown_pool_total",
                "Requests whose filters chose a pool the policy does not have (answered 502).",
                &["route"],
            ),
            bad_requests: counter(
                &r,
                "sluice_bad_requests_total",
                "Requests refused before routing, by reason (400; connect: 405).",
                &["reason"],
            ),
            filter_invocations: counter(
                &r,
                "sluice_filter_invocations_total",
                "Filter callbacks.",
                &["filter", "phase"],
            ),
            filter_duration: histogram(
                &r,
                "sluice_filter_duration_seconds",
                "Filter callback duration.",
                &["filter", "phase"],
                FILTER_BUCKETS,
            ),
            filter_actions: counter(
                &r,
                "sluice_filter_actions_total",
                "What filter callbacks answered.",
                &["filter", "phase", "action"],
            ),
            filter_local_responses: counter(
                &r,
                "sluice_filter_local_responses_total",
                "Local responses sent by filters (blocked requests).",
                &["filter", "status"],
            ),
            filter_failures: counter(
                &r,
                "sluice_filter_failures_total",
                "Filter failures: trap, deadline, memory, crash_loop.",
                &["filter", "kind"],
            ),
            filter_rebuilds: counter(
                &r,
                "sluice_filter_vm_rebuilds_total",
                "Filter VMs rebuilt after a failure (off the request path).",
                &["filter"],
            ),
            filter_rebuild_seconds: {
                let c = CounterVec::new(
                    Opts::new(
                        "sluice_filter_vm_rebuild_seconds_total",
                        "Time spent rebuilding filter VMs after failures, on blocking threads.",
                    ),
                    &["filter"],
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            filter_crash_loops: counter(
                &r,
                "sluice_filter_crash_loops_total",
                "Times a filter's crash-loop guard tripped (rebuilds paused for 5 s).",
                &["filter"],
            ),
            header_refusals: counter(
                &r,
                "sluice_header_refusals_total",
                "Requests refused before routing for their header section (too_large, too_many: 431; bad_name, bad_value, not_utf8: 400; upstream_not_utf8: 502).",
                &["reason"],
            ),
            filter_vms: gauge_vec(&r, "sluice_filter_vms", "Filter VMs alive.", &["filter"]),
            filter_vm_memory: gauge_vec(
                &r,
                "sluice_filter_vm_memory_bytes",
                "Linear memory of a filter's VMs.",
                &["filter"],
            ),
            generation,
            swaps: counter(
                &r,
                "sluice_policy_swaps_total",
                "Policy swaps by result (success, failure).",
                &["result"],
            ),
            last_swap,
            bundle_info: gauge_vec(
                &r,
                "sluice_bundle_info",
                "1 for the policy bundle being served, by reference, digest and signer.",
                &["reference", "digest", "signer"],
            ),
            bundle_fetches: counter(
                &r,
                "sluice_bundle_fetches_total",
                "Looks at the policy bundle's registry by result (unchanged, fetched, error, offline_cache).",
                &["result"],
            ),
            bundle_refusals: counter(
                &r,
                "sluice_bundle_refusals_total",
                "Policy bundles refused by reason (invalid, unsigned, bad_signature, wrong_digest, digest_mismatch, too_large, bad_layout).",
                &["reason"],
            ),
            bundle_fetched,
            fleet_calls: counter(
                &r,
                "sluice_fleet_calls_total",
                "Fleet store operations by operation (incr, sliding, get, set, cas) and result (ok, error, timeout, unavailable, cached).",
                &["op", "result"],
            ),
            fleet_duration: histogram(
                &r,
                "sluice_fleet_call_duration_seconds",
                "Fleet store round trips by operation (cached answers are not round trips).",
                &["op"],
                &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
            ),
            image_cache: counter(
                &r,
                "sluice_image_cache_total",
                "Image variant cache lookups by result (hit, miss).",
                &["result"],
            ),
            image_transforms: counter(
                &r,
                "sluice_image_transforms_total",
                "Image transforms by outcome.",
                &["outcome"],
            ),
            image_duration: histogram(
                &r,
                "sluice_image_transform_duration_seconds",
                "Image transform duration (waiting for a slot included), by output format.",
                &["format"],
                REQUEST_BUCKETS,
            ),
            image_bytes: counter(
                &r,
                "sluice_image_bytes_total",
                "Image bytes: source (read from origins), output (produced).",
                &["direction"],
            ),
            image_cache_bytes,
            image_refused: counter(
                &r,
                "sluice_image_refused_total",
                "Image requests refused by the host: busy (max_in_flight), content_type, source_path.",
                &["reason"],
            ),
            connections_open: gauge_vec(
                &r,
                "sluice_connections_open",
                "Connections open on a traffic listener.",
                &["listener"],
            ),
            overload_refused: counter(
                &r,
                "sluice_overload_refused_total",
                "Connections (listener, client, fd_headroom) and HTTP/1 requests (h1_in_flight) refused by a limit.",
                &["reason"],
            ),
            connection_timeouts: counter(
                &r,
                "sluice_connection_timeouts_total",
                "Connections closed or requests failed by a timeout (header, tls_handshake, h2_preface, keepalive, body_idle, send_idle).",
                &["phase"],
            ),
            h1_in_flight,
            memory_trimmed,
            tls_handshake_failures,
            admin_refusals: counter(
                &r,
                "sluice_admin_refusals_total",
                "Admin API requests refused: host (DNS rebinding), origin and content_type (CSRF), token.",
                &["reason"],
            ),
            registry: r,
        }
    })
}

impl Metrics {
    /// Every registered metric family, as now (the admin's `/metrics` encodes them).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}
