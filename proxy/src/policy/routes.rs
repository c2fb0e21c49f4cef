//! `[[routes]]`: host and path prefix, the filter chain, the pool, metadata.

use super::errors::Lines;
use super::raw::RawRoute;
use super::{ComponentDef, FilterDef, PoolDef};

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
    /// Index into [`Policy::pools`](super::Policy::pools); `None` for a route that ends
    /// in an edge function.
    pub pool: Option<usize>,
    /// Indexes into [`Policy::components`](super::Policy::components): the component
    /// middleware, in chain order (they run after every Proxy-Wasm request phase).
    pub components: Vec<usize>,
    /// Index into [`Policy::components`](super::Policy::components): the edge function
    /// that ends the route instead of a pool.
    pub function: Option<usize>,
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
    components: &[ComponentDef],
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
        let mut middleware = Vec::new();
        for f in &r.filters {
            if let Some(idx) = components.iter().position(|d| d.name == *f.get_ref()) {
                middleware.push(idx);
                continue;
            }
            match filters.iter().position(|d| d.name == *f.get_ref()) {
                Some(_) if !middleware.is_empty() => l.err(
                    Some(f.span()),
                    format!("route {name:?}: Proxy-Wasm filter {:?} is listed after a component; components run after every Proxy-Wasm request phase, list them last", f.get_ref()),
                ),
                Some(idx) => chain.push(idx),
                None => l.err(
                    Some(f.span()),
                    format!("route {name:?} names unknown filter {:?}", f.get_ref()),
                ),
            }
        }
        let function = r.function.as_ref().and_then(|f| {
            let idx = components.iter().position(|d| d.name == *f.get_ref());
            if idx.is_none() {
                l.err(
                    Some(f.span()),
                    format!(
                        "route {name:?}: function {:?} is not a component filter",
                        f.get_ref()
                    ),
                );
            }
            idx
        });
        let pool = match (&r.pool, &r.function) {
            (Some(p), None) => match pools.iter().position(|d| d.name == *p.get_ref()) {
                Some(i) => Some(i),
                None => {
                    l.err(
                        Some(p.span()),
                        format!("route {name:?} names unknown pool {:?}", p.get_ref()),
                    );
                    None
                }
            },
            (Some(p), Some(_)) => {
                l.err(
                    Some(p.span()),
                    format!("route {name:?} has both a pool and a function; it ends in one"),
                );
                None
            }
            (None, Some(_)) => None,
            (None, None) => {
                l.err(None, format!("route {name:?} needs a pool or a function"));
                None
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
                r.pool.as_ref().or(r.function.as_ref()).map(|p| p.span()),
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
            components: middleware,
            function,
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
