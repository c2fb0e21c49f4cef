//! A policy made ready to serve: modules compiled ([`Compiled`]), one canary VM per
//! filter started and configured, routes and pools built ([`Snapshot`]), then (with
//! [`Snapshot::prepare`]) every filter's VMs started on every worker thread. Immutable
//! once built; [`Live`] publishes the current one with `arc-swap`, and a request keeps
//! the snapshot it started with. A snapshot swapped out is retired ([`Snapshot::retire`]):
//! its VMs stop ticking at once and are dropped with its last request; the rollback
//! history keeps its [`Compiled`] policy only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::tls::CertStore;
use crate::upstream::UpstreamPool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::callouts::PoolCallouts;
use crate::host::callout::Callouts;
use crate::host::{CompiledModule, Engine, Limits, Plugin, PluginFile, PluginInfo};
use crate::metrics::{FilterMetrics, RouteMetrics};
use crate::policy::{Diagnostic, OnFailure, Policy, PolicyErrors};

/// A filter as a route runs it.
pub struct Filter {
    /// The plugin (module, configuration, per-thread VMs).
    pub plugin: Arc<Plugin>,
    /// What a failure of this filter does to the request.
    pub on_failure: OnFailure,
    /// Whether the request waits for this filter to see the whole body.
    pub request_body: crate::policy::RequestBodyMode,
    /// Metric handles.
    pub metrics: FilterMetrics,
}

impl Route {
    /// True when a filter of the chain inspects the request body (`request_body =
    /// "buffer"`): the request is held until the chain has seen all of it.
    pub fn buffers_request_body(&self) -> bool {
        self.filters
            .iter()
            .any(|f| f.request_body == crate::policy::RequestBodyMode::Buffer)
    }
}

/// A route ready to serve.
pub struct Route {
    /// The policy's route (match, names).
    pub def: crate::policy::RouteDef,
    /// Filters in chain order (shared with each request's chain).
    pub filters: Arc<[Arc<Filter>]>,
    /// Index into [`Snapshot::pools`]; `None` when the route ends in an edge function.
    pub pool: Option<usize>,
    /// The route's component middleware and edge function, if any (run after the
    /// Proxy-Wasm request phases, see [`crate::component`]).
    pub components: Option<Arc<crate::component::RouteComponents>>,
    /// The route's metadata, shared with each request's properties.
    pub metadata: Arc<[(String, String, String)]>,
    /// The route's name and its pool's, shared with each request's properties.
    pub names: (Arc<str>, Arc<str>),
    /// Metric handles.
    pub metrics: RouteMetrics,
}

/// Snapshots alive in the process (served, kept for rollback, or still finishing
/// requests): shows that old ones are freed.
pub static LIVE_SNAPSHOTS: AtomicUsize = AtomicUsize::new(0);

/// A validated policy with its modules compiled and its pools and certificates
/// loaded: everything a [`Snapshot`] serves with but running VMs. What the rollback
/// history keeps; [`Compiled::start`] makes a snapshot of it again without compiling.
pub struct Compiled {
    /// Generation, 1 for the first policy served.
    pub generation: u64,
    /// Content hash: the policy text and every module, SHA-256 hex.
    pub hash: String,
    /// The policy.
    pub policy: Policy,
    /// Pools by policy order.
    pub pools: Vec<Arc<UpstreamPool>>,
    /// Certificates of the TLS listeners, chosen by SNI.
    pub certs: Option<Arc<CertStore>>,
    /// The client that sends filters' HTTP calls to these pools.
    pub callouts: Arc<dyn Callouts>,
    /// Each policy filter's module, by policy order.
    modules: Vec<Arc<CompiledModule>>,
    /// Each component filter's compiled component, by policy order.
    components: Vec<Arc<crate::host::component::CompiledComponent>>,
    /// The fleet store (`[fleet]`) of the component filters' `sluice:edge/fleet` calls
    /// (the Proxy-Wasm filters reach the same one through `callouts`).
    fleet: Option<Arc<dyn crate::host::fleet::FleetBackend>>,
}

/// An immutable, validated, compiled policy with its filters' VMs.
pub struct Snapshot {
    /// Generation, 1 for the first policy served.
    pub generation: u64,
    /// Content hash: the policy text and every module, SHA-256 hex.
    pub hash: String,
    /// The policy.
    pub policy: Policy,
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// Pools by policy order.
    pub pools: Vec<Arc<UpstreamPool>>,
    /// Certificates of the TLS listeners, chosen by SNI.
    pub certs: Option<Arc<CertStore>>,
    /// Filters by policy order.
    pub filters: Vec<Arc<Filter>>,
    /// The client that sends filters' HTTP calls to this snapshot's pools.
    pub callouts: Arc<dyn Callouts>,
    /// The compiled policy this snapshot runs (kept for rollback once it is retired).
    pub compiled: Arc<Compiled>,
}

impl Snapshot {
    /// Compiles and starts every filter of `policy`. Any failure is reported as a
    /// diagnostic naming the filter's `module` line; nothing is published.
    pub fn build(policy: Policy, generation: u64) -> Result<Snapshot, PolicyErrors> {
        Arc::new(Compiled::build(policy, generation)?).start()
    }

    /// Starts every filter's VMs on each of `workers` (see
    /// [`crate::host::Plugin::prepare`]), filters used by no route included. Blocking.
    pub fn prepare(&self, workers: &[tokio::runtime::Handle]) {
        if workers.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        for f in &self.filters {
            f.plugin.prepare(workers, PREPARE_WAIT);
        }
        tracing::debug!(
            generation = self.generation,
            workers = workers.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "VMs started on every worker"
        );
    }

    /// Swapped out: the filters' VMs stop ticking and being woken (see
    /// [`crate::host::Plugin::retire`]); they are dropped with the last request.
    pub fn retire(&self) {
        for f in &self.filters {
            f.plugin.retire();
        }
    }
}

/// How long a swap waits for a worker thread to take its VMs (a thread busy with one
/// long callback answers late; it then starts a VM at its next request instead).
const PREPARE_WAIT: Duration = Duration::from_secs(10);

impl Compiled {
    /// Validates `policy`, compiles its modules and loads its pools and certificates.
    pub fn build(policy: Policy, generation: u64) -> Result<Compiled, PolicyErrors> {
        let file = policy.path.clone();
        let diag = |line: Option<usize>, message: String| Diagnostic {
            file: file.clone(),
            line,
            message,
        };
        let engine = Engine::global()
            .map_err(|e| PolicyErrors(vec![diag(None, e.to_string())]))?
            // The host knows no image code: the formats it answers come in as a value.
            .with_properties(
                crate::host::StaticProperties::new()
                    .with(crate::image::FORMATS_PROPERTY, crate::image::OUTPUT_FORMATS),
            );
        let mut errors = Vec::new();
        let mut pools: Vec<Arc<UpstreamPool>> = Vec::new();
        for p in &policy.pools {
            match UpstreamPool::get(&file, p) {
                Ok(pool) => pools.push(pool),
                Err(d) => errors.push(d),
            }
        }
        let certs = match &policy.tls {
            Some(t) => match CertStore::load(&file, t) {
                Ok(c) => Some(c),
                Err(d) => {
                    errors.extend(d);
                    None
                }
            },
            None => None,
        };
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        // Every series a dashboard may plot exists from the start, at zero.
        let m = crate::metrics::metrics();
        for f in &policy.filters {
            for kind in ["trap", "deadline", "memory", "crash_loop"] {
                m.filter_failures
                    .with_label_values(&[f.name.as_str(), kind]);
            }
        }
        let fleet = policy
            .fleet
            .as_ref()
            .map(crate::fleet::store)
            .transpose()
            .map_err(|e| PolicyErrors(vec![diag(None, format!("[fleet]: {e:#}"))]))?;
        let component_fleet = fleet
            .clone()
            .map(|f| f as Arc<dyn crate::host::fleet::FleetBackend>);
        let callouts: Arc<dyn Callouts> = Arc::new(PoolCallouts {
            pools: pools
                .iter()
                .map(|p| (p.def.name.clone(), p.clone()))
                .collect(),
            fleet,
        });
        let mut modules: HashMap<std::path::PathBuf, Arc<CompiledModule>> = HashMap::new();
        let mut content = Sha256::new();
        content.update(policy.hash.as_bytes());
        let mut by_filter = Vec::new();
        for f in &policy.filters {
            let module = match modules.get(&f.module) {
                Some(m) => m.clone(),
                None => {
                    let step = crate::progress::step(format!(
                        "module {}",
                        f.module.file_name().unwrap_or_default().to_string_lossy()
                    ));
                    let from_disk = crate::host::engine::MODULES_FROM_DISK.load(Ordering::Relaxed);
                    let compiled = std::fs::read(&f.module)
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::NotFound => {
                                format!("module {} not found", f.module.display())
                            }
                            _ => format!("cannot read module {}: {e}", f.module.display()),
                        })
                        .and_then(|bytes| engine.compile(&bytes).map_err(|e| e.to_string()));
                    if let Some(step) = step {
                        let cached = crate::host::engine::MODULES_FROM_DISK.load(Ordering::Relaxed)
                            > from_disk;
                        step.finish(match (&compiled, cached) {
                            (Err(_), _) => "failed",
                            (Ok(_), true) => "read from the module cache",
                            (Ok(_), false) => "compiled",
                        });
                    }
                    match compiled {
                        Ok(m) => {
                            content.update(m.hash.as_bytes());
                            for imp in &m.stubbed_imports {
                                tracing::warn!(filter = %f.name, import = %imp, "module imports a function Sluice does not provide; it answers an error status");
                            }
                            modules.insert(f.module.clone(), m.clone());
                            m
                        }
                        Err(e) => {
                            errors.push(diag(Some(f.line), format!("filter {:?}: {e}", f.name)));
                            continue;
                        }
                    }
                }
            };
            by_filter.push(module);
        }
        let mut components = Vec::new();
        if !policy.components.is_empty() {
            let engine = crate::host::component::ComponentEngine::global()
                .map_err(|e| PolicyErrors(vec![diag(None, e.to_string())]))?;
            for c in &policy.components {
                let compiled = std::fs::read(&c.module)
                    .map_err(|e| format!("cannot read component {}: {e}", c.module.display()))
                    .and_then(|bytes| engine.compile(&bytes).map_err(|e| e.to_string()));
                match compiled {
                    Ok(m) => {
                        content.update(m.hash.as_bytes());
                        components.push(m);
                    }
                    Err(e) => errors.push(diag(Some(c.line), format!("filter {:?}: {e}", c.name))),
                }
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        Ok(Compiled {
            components,
            generation,
            hash: hex::encode(content.finalize()),
            policy,
            pools,
            certs: certs.map(Arc::new),
            callouts,
            modules: by_filter,
            fleet: component_fleet,
        })
    }

    /// Starts every filter of the policy (a canary VM each) into a snapshot, with no
    /// compilation. Any failure is reported as a diagnostic naming the filter's line.
    pub fn start(self: &Arc<Self>) -> Result<Snapshot, PolicyErrors> {
        let policy = &self.policy;
        let generation = self.generation;
        let file = policy.path.clone();
        let diag = |line: Option<usize>, message: String| Diagnostic {
            file: file.clone(),
            line,
            message,
        };
        let engine = Engine::global()
            .map_err(|e| PolicyErrors(vec![diag(None, e.to_string())]))?
            // The host knows no image code: the formats it answers come in as a value.
            .with_properties(
                crate::host::StaticProperties::new()
                    .with(crate::image::FORMATS_PROPERTY, crate::image::OUTPUT_FORMATS),
            );
        let callouts = self.callouts.clone();
        let pools = &self.pools;
        let mut errors = Vec::new();
        let mut filters = Vec::new();
        for (f, module) in policy.filters.iter().zip(&self.modules) {
            let module = module.clone();
            let info = PluginInfo {
                name: f.name.clone(),
                root_id: f.root_id.clone(),
                vm_id: f.vm_id.clone(),
                vm_config: f.vm_config.clone(),
                plugin_config: f.config.clone(),
                generation,
                files: Arc::new(
                    f.files
                        .iter()
                        .map(|g| PluginFile {
                            name: g.name.clone(),
                            path: g.path.clone(),
                            data: g.data.clone(),
                        })
                        .collect(),
                ),
            };
            let limits = Limits {
                memory_bytes: f.limits.memory_bytes,
                callback_deadline: Duration::from_millis(f.limits.callback_ms),
                startup_deadline: Duration::from_millis(f.limits.startup_ms),
                table_elements: f.limits.table_elements,
                spare_vm: f.limits.spare_vm,
                rebuild_budget: Duration::from_millis(f.limits.rebuild_budget_ms),
                shared_data_bytes: f.limits.shared_data_bytes,
            };
            let step = crate::progress::step(format!("filter {} (start and configure)", f.name));
            let started = Plugin::new(&engine, module, info, limits, Some(callouts.clone()));
            if let Some(step) = step {
                step.finish(if started.is_ok() { "ready" } else { "failed" });
            }
            match started {
                Ok(plugin) => filters.push(Arc::new(Filter {
                    plugin,
                    on_failure: f.on_failure,
                    request_body: f.request_body,
                    metrics: FilterMetrics::new(&f.name),
                })),
                Err(e) => errors.push(diag(Some(f.line), format!("filter {:?}: {e}", f.name))),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        let ways = crate::component::ways(pools);
        let client = crate::component::client(&ways);
        let mut routes = Vec::new();
        for r in &policy.routes {
            let components = match crate::component::build(
                r,
                &policy.components,
                &self.components,
                pools,
                &ways,
                &client,
                self.fleet.as_ref(),
            ) {
                Ok(c) => c.map(Arc::new),
                Err((line, e)) => {
                    errors.push(diag(Some(line), e));
                    continue;
                }
            };
            // What ends the route: its pool, or its edge function.
            let end = match (r.pool, r.function) {
                (Some(p), _) => pools[p].def.name.as_str(),
                (None, Some(f)) => policy.components[f].name.as_str(),
                (None, None) => "",
            };
            routes.push(Route {
                def: r.clone(),
                filters: r.filters.iter().map(|i| filters[*i].clone()).collect(),
                pool: r.pool,
                components,
                metadata: r.metadata.clone().into(),
                names: (Arc::from(r.name.as_str()), Arc::from(end)),
                metrics: RouteMetrics::new(&r.name, end),
            });
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        LIVE_SNAPSHOTS.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot {
            generation,
            hash: self.hash.clone(),
            policy: policy.clone(),
            routes,
            pools: pools.clone(),
            certs: self.certs.clone(),
            filters,
            callouts,
            compiled: self.clone(),
        })
    }
}

impl Snapshot {
    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<UpstreamPool>> {
        self.pools.iter().find(|p| p.def.name == name)
    }

    /// The first route that serves `host` and `path`.
    pub fn route(&self, host: &str, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.def.matches(host, path))
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        LIVE_SNAPSHOTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The snapshot being served, swapped atomically.
pub struct Live {
    current: ArcSwap<Snapshot>,
    generations: AtomicU64,
}

impl Live {
    /// Publishes the first snapshot.
    pub fn new(first: Snapshot) -> Live {
        let g = first.generation;
        Live {
            current: ArcSwap::from_pointee(first),
            generations: AtomicU64::new(g),
        }
    }

    /// The snapshot serving now; a request holds it to its end.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The next generation number.
    pub fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Publishes `next` and returns the snapshot it replaces; requests already running
    /// finish on the snapshot they hold.
    pub fn publish(&self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        self.current.swap(next)
    }
}

#[cfg(test)]
mod tests {
    /// The policy's default shared-data quota is the host's own default.
    #[test]
    fn shared_data_default_matches_the_host() {
        assert_eq!(
            crate::policy::DEFAULT_SHARED_DATA_BYTES,
            crate::host::vm::DEFAULT_SHARED_DATA_BYTES
        );
    }
}
