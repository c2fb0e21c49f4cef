//! What a policy amounts to, in one comparable shape: routes, filters, modules,
//! certificates and pools, each keyed by name (or file). The admin API reports the live
//! snapshot's (`/admin/status`, `summary`); `sluice ctl diff` computes a policy file's
//! the same way and compares the two, which is what a reload of that file would change.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::policy::Policy;
use crate::snapshot::Snapshot;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A file as the summary names it: its canonical path when it exists, so that a policy
/// read from another directory (`policies/../filters/x.wasm`) names the same file.
fn file_name(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The summary of `policy`, with module and certificate hashes given by the caller.
fn build(
    policy: &Policy,
    module_hash: impl Fn(usize) -> String,
    certificates: BTreeMap<String, Value>,
) -> Value {
    let filter_name = |i: usize| policy.filters[i].name.clone();
    let routes: BTreeMap<String, Value> = policy
        .routes
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                json!({
                    "host": r.host,
                    "path_prefix": r.path_prefix,
                    "filters": r.filters.iter().map(|&i| filter_name(i)).collect::<Vec<_>>(),
                    "components": r.components.iter().map(|&i| policy.components[i].name.clone()).collect::<Vec<_>>(),
                    "pool": r.pool.map(|p| policy.pools[p].name.clone()),
                    "function": r.function.map(|f| policy.components[f].name.clone()),
                    "redirect_https": r.redirect_https,
                }),
            )
        })
        .collect();
    let mut modules = BTreeMap::new();
    let filters: BTreeMap<String, Value> = policy
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let hash = module_hash(i);
            let module = file_name(&f.module);
            modules.insert(module.clone(), Value::String(hash.clone()));
            let l = &f.limits;
            (
                f.name.clone(),
                json!({
                    "module": module,
                    "module_sha256": hash,
                    "config_sha256": sha256(&f.config),
                    "vm_config_sha256": sha256(&f.vm_config),
                    "root_id": f.root_id,
                    "memory_bytes": l.memory_bytes,
                    "callback_ms": l.callback_ms,
                    "startup_ms": l.startup_ms,
                    "table_elements": l.table_elements,
                    "spare_vm": l.spare_vm,
                    "rebuild_budget_ms": l.rebuild_budget_ms,
                    "shared_data_bytes": l.shared_data_bytes,
                    "on_failure": format!("{:?}", f.on_failure).to_lowercase(),
                    "request_body": format!("{:?}", f.request_body).to_lowercase(),
                    "files": f.files.len(),
                }),
            )
        })
        .collect();
    let pools: BTreeMap<String, Value> = policy
        .pools
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                json!({
                    "peers": p.peers.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "weights": p.weights,
                    "balance": format!("{:?}", p.balance).to_lowercase(),
                    "h2": p.h2,
                    "tls": p.tls.as_ref().map(|t| t.sni.clone()),
                    "health_check": p.health.as_ref().map(|h| h.path.clone()),
                    "retries": p.retries,
                    "connect_timeout_ms": p.connect_timeout_ms,
                    "read_timeout_ms": p.read_timeout_ms,
                }),
            )
        })
        .collect();
    json!({
        "routes": routes,
        "filters": filters,
        "modules": modules,
        "certificates": certificates,
        "pools": pools,
    })
}

/// The live snapshot's summary: module hashes of the compiled modules, certificate
/// fingerprints of the loaded certificates.
pub fn of_snapshot(snap: &Snapshot) -> Value {
    let certificates = snap
        .certs
        .iter()
        .flat_map(|c| c.fingerprints.iter())
        .map(|(path, fp)| (file_name(path), Value::String(fp.clone())))
        .collect();
    build(
        &snap.policy,
        |i| {
            let name = &snap.policy.filters[i].name;
            snap.filters
                .iter()
                .find(|f| &f.plugin.info.name == name)
                .map(|f| f.plugin.module.hash.clone())
                .unwrap_or_default()
        },
        certificates,
    )
}

/// A policy file's summary, hashing its modules and certificates as they are on disk
/// now (nothing is compiled). A file that cannot be read has its error as its hash.
pub fn of_policy(policy: &Policy) -> Value {
    let certificates = policy
        .tls
        .iter()
        .flat_map(|t| t.certificates.iter())
        .map(|c| {
            let fp = crate::tls::fingerprint(&c.cert).unwrap_or_else(|e| format!("error: {e}"));
            (file_name(&c.cert), Value::String(fp))
        })
        .collect();
    build(
        policy,
        |i| match std::fs::read(&policy.filters[i].module) {
            Ok(bytes) => sha256(&bytes),
            Err(e) => format!("error: {e}"),
        },
        certificates,
    )
}
