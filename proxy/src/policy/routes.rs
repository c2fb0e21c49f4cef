//! `[[routes]]`: host and path prefix, the filter chain, the pool, metadata.

use super::errors::Lines;
use super::raw::RawRoute;
use super::{FilterDef, PoolDef};

/// A route: a match and what serves it.
#[derive(Debug, Clone)]
pub struct RouteDef {
    /// Name (for logs, metrics and the `sluice.route` property).
    pub name: String,
    /// Host to match: exact, `*.suffix`, or any when `None`.
    pub host: Option<String>,
    /// Path prefix to match, on segment boundaries (see [`crate::paths::prefix_matches`]).
    pub path_prefix: String,
    /// Indexes into [`Policy::filters`](super::Policy::filters), in chain order.
    pub filters: Vec<usize>,
    /// Index into [`Policy::pools`](super::Policy::pools).
    pub pool: usize,
    /// Answer cleartext requests with a redirect to HTTPS.
    pub redirect_https: bool,
    /// `metadata`: namespace, key, value; filters read them as the Envoy attribute
    /// `xds.route_metadata.filter_metadata.<namespace>.<key>`.
    pub metadata: Vec<(String, String, String)>,
}

/// Validates `[[routes]]` against the filters and pools already read; `paths` is
/// `[paths]` (prefixes must be written normalised).
pub(super) fn parse_routes(
    l: &mut Lines<'_>,
    raw: &[RawRoute],
    paths: &crate::paths::PathsConfig,
    filters: &[FilterDef],
    pools: &[PoolDef],
    has_tls: bool,
) -> Vec<RouteDef> {
    let mut routes = Vec::new();
    if raw.is_empty() {
        l.err(None, "the policy has no [[routes]]");
    }
    for (i, r) in raw.iter().enumerate() {
        let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
        let mut chain = Vec::new();
        for f in &r.filters {
            match filters.iter().position(|d| d.name == *f.get_ref()) {
                Some(idx) => chain.push(idx),
                None => l.err(
                    Some(f.span()),
                    format!("route {name:?} names unknown filter {:?}", f.get_ref()),
                ),
            }
        }
        let pool = match pools.iter().position(|p| p.name == *r.pool.get_ref()) {
            Some(p) => p,
            None => {
                l.err(
                    Some(r.pool.span()),
                    format!("route {name:?} names unknown pool {:?}", r.pool.get_ref()),
                );
                0
            }
        };
        let path_prefix = match &r.path_prefix {
            Some(p) if !p.get_ref().starts_with('/') => {
                l.err(Some(p.span()), "path_prefix must start with '/'");
                "/".to_string()
            }
            Some(p) => {
                let prefix = match paths.case {
                    crate::paths::Case::Lower => p.get_ref().to_ascii_lowercase(),
                    crate::paths::Case::Sensitive => p.get_ref().clone(),
                };
                // Requests are matched normalised: a prefix that is not never matches.
                match crate::paths::normalize_path(prefix.as_bytes(), paths) {
                    Ok(None) => {}
                    Ok(Some(canonical)) => l.err(
                        Some(p.span()),
                        format!("path_prefix {prefix:?} is not normalised ([paths]): write {canonical:?}"),
                    ),
                    Err(e) => l.err(Some(p.span()), format!("path_prefix {prefix:?}: {e}")),
                }
                prefix
            }
            None => "/".to_string(),
        };
        if r.redirect_https && !has_tls {
            l.err(
                Some(r.pool.span()),
                format!("route {name:?} has redirect_https but the policy has no [tls]"),
            );
        }
        routes.push(RouteDef {
            redirect_https: r.redirect_https,
            name,
            host: r
                .host
                .clone()
                .filter(|h| h != "*")
                .map(|h| h.to_ascii_lowercase()),
            path_prefix,
            filters: chain,
            pool,
            metadata: r
                .metadata
                .iter()
                .flat_map(|(ns, kv)| {
                    kv.iter()
                        .map(move |(k, v)| (ns.clone(), k.clone(), v.clone()))
                })
                .collect(),
        });
    }
    routes
}

impl RouteDef {
    /// True when the route serves `host` (normalised: [`crate::paths::normalize_host`])
    /// and `path` (normalised, no query).
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(h) if h.starts_with("*.") => host.ends_with(&h[1..]),
            Some(h) => h == host,
        };
        host_ok && crate::paths::prefix_matches(&self.path_prefix, path)
    }
}
