//! The admin listener (loopback by default): `/healthz`, `/readyz`,
//! `/admin/status` (JSON: generation, hash, routes, filters with their per-phase latency
//! and failures, pools, swaps, the WAF, the image cache, a summary for diffs),
//! `POST /admin/reload` / `POST /admin/rollback`, `/admin/tail` (the access and WAF
//! audit logs as they happen: [`feed`]), `/ui` (the status page: [`ui`]) and
//! `/metrics` (Prometheus). With a
//! token configured (required off loopback), every path but the health checks needs
//! `Authorization: Bearer <token>`. Without one, only requests whose `Host` is this
//! listener's pass (DNS rebinding); state-changing requests from another origin are
//! refused (CSRF): see [`guard`].

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use std::sync::atomic::Ordering::Relaxed;

use crate::host::disk_cache::CACHE_REFUSALS;
use crate::host::engine::{MODULES_COMPILED, MODULES_FROM_DISK};

pub mod feed;
pub mod guard;
pub mod history;
pub mod scrape;
pub mod stats;
pub mod summary;
pub mod ui;
use crate::snapshot::LIVE_SNAPSHOTS;
use crate::swap::Control;
use guard::AdminRefusal;

/// The admin HTTP application.
pub struct Admin {
    /// The swap control (live snapshot, history, stats).
    pub control: Arc<Control>,
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        serde_json::to_vec_pretty(&v).unwrap_or_default(),
    )
}

fn unix(t: Option<std::time::SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// Counts and answers a refused admin request.
pub(crate) fn refuse(why: AdminRefusal) -> Response<Vec<u8>> {
    crate::metrics::metrics()
        .admin_refusals
        .with_label_values(&[why.label()])
        .inc();
    tracing::warn!(reason = why.label(), "admin request refused");
    let status = match why {
        AdminRefusal::Token => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    reply(status, "text/plain", why.message().as_bytes().to_vec())
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

impl Admin {
    fn status_json(&self) -> serde_json::Value {
        let snap = self.control.live.load();
        let stats = self.control.stats();
        let families = crate::metrics::metrics().gather();
        let phases = stats::filter_phases(&families);
        let failures = stats::filter_failures(&families);
        serde_json::json!({
            "time_unix": feed::now_unix(),
            "pid": std::process::id(),
            "requests_total": stats::requests_total(&families),
            "pools": stats::pools(&snap, &families),
            "images": stats::image_cache(&families),
            "waf": stats::waf(10),
            "recent": history::recent(),
            "summary": summary::of_snapshot(&snap),
            "generation": snap.generation,
            "policy": snap.policy.path.display().to_string(),
            "hash": snap.hash,
            "policy_sha256": snap.policy.hash,
            "swaps": {
                "successes": stats.successes,
                "failures": stats.failures,
                "last_swap_unix": unix(stats.last_swap),
                "last_reload_ms": stats.last_duration.map(|d| d.as_secs_f64() * 1e3),
                "last_error": stats.last_error,
                "rollback_generations": self.control.history(),
            },
            "bundle": crate::bundle::follow::status_serving(&snap.policy.path),
            "live_snapshots": LIVE_SNAPSHOTS.load(Relaxed),
            "modules": {
                "compiled": MODULES_COMPILED.load(Relaxed),
                "from_disk_cache": MODULES_FROM_DISK.load(Relaxed),
                "cache_refusals": CACHE_REFUSALS.load(Relaxed),
            },
            "routes": snap.routes.iter().map(|r| serde_json::json!({
                "name": r.def.name,
                "host": r.def.host,
                "path_prefix": r.def.path_prefix,
                "filters": r.filters.iter().map(|f| f.plugin.info.name.clone()).collect::<Vec<_>>(),
                "pool": r.pool.map(|p| snap.pools[p].def.name.clone()),
                "components": r.def.components.iter().map(|c| snap.policy.components[*c].name.clone()).collect::<Vec<_>>(),
                "function": r.def.function.map(|f| snap.policy.components[f].name.clone()),
            })).collect::<Vec<_>>(),
            "filters": snap.filters.iter().map(|f| serde_json::json!({
                "name": f.plugin.info.name,
                "module_sha256": f.plugin.module.hash,
                "memory_limit_bytes": f.plugin.limits.memory_bytes,
                "callback_deadline_ms": f.plugin.limits.callback_deadline.as_millis() as u64,
                "startup_deadline_ms": f.plugin.limits.startup_deadline.as_millis() as u64,
                "table_elements": f.plugin.limits.table_elements,
                "spare_vm": f.plugin.limits.spare_vm,
                "rebuild_budget_ms": f.plugin.limits.rebuild_budget.as_millis() as u64,
                "failures": {
                    "traps": f.plugin.failures.traps.load(Relaxed),
                    "deadlines": f.plugin.failures.deadlines.load(Relaxed),
                    "memory": f.plugin.failures.memory.load(Relaxed),
                    "vms_replaced": f.plugin.failures.replaced.load(Relaxed),
                    "crash_loop_refusals": f.plugin.failures.crash_loop.load(Relaxed),
                    "crash_loop_trips": f.plugin.failures.guard_trips.load(Relaxed),
                    "rebuilds": f.plugin.failures.rebuilds.load(Relaxed),
                    "rebuild_ms": f.plugin.failures.rebuild_us.load(Relaxed) / 1000,
                    "rebuild_ms_in_window": f.plugin.guard.rebuild_time().as_millis() as u64,
                    "by_kind": failures.get(&f.plugin.info.name),
                },
                "phases": phases.get(&f.plugin.info.name),
            })).collect::<Vec<_>>(),
        })
    }
}

/// `GET /admin/tail?log=access|waf&after=N&wait_ms=M`: the lines after cursor `N`
/// (without `after`: none, and the cursor to start from), waiting up to `M` ms (at most
/// 25 s) for one. See [`feed`].
async fn tail(query: Option<&str>) -> Response<Vec<u8>> {
    let mut log = feed::Log::Access;
    let mut after = None;
    let mut wait = std::time::Duration::ZERO;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| {
            json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "errors": [format!("{what}: {v:?}")] }),
            )
        };
        match k {
            "log" => match feed::Log::parse(v) {
                Some(l) => log = l,
                None => return bad("log must be access or waf"),
            },
            "after" => match v.parse() {
                Ok(n) => after = Some(n),
                Err(_) => return bad("after must be a number"),
            },
            "wait_ms" => match v.parse::<u64>() {
                Ok(ms) => wait = std::time::Duration::from_millis(ms.min(25_000)),
                Err(_) => return bad("wait_ms must be a number"),
            },
            _ => return bad("unknown parameter"),
        }
    }
    let page = feed::tail(log, after, wait).await;
    json(
        StatusCode::OK,
        serde_json::to_value(page).unwrap_or_default(),
    )
}

/// Host, token and cross-origin checks, in that order; health checks are always open.
fn admit(
    req: &pingora::http::RequestHeader,
    path: &str,
    policy: &crate::policy::Policy,
) -> Result<(), AdminRefusal> {
    if matches!(path, "/healthz" | "/readyz") {
        return Ok(());
    }
    match &policy.admin_token {
        None => guard::check_host(&req.headers, &policy.admin_hosts)?,
        // The status page's login and what its form needs: nothing secret, and the login
        // itself checks the token it is given.
        Some(_) if ui::open_without_token(path) => {}
        Some(token) => {
            let given = req
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let session = guard::session_cookie(&req.headers);
            if !guard::token_matches(given, token) && !guard::session_matches(session, token) {
                return Err(AdminRefusal::Token);
            }
        }
    }
    if guard::changes_state(&req.method) {
        guard::check_cross_origin(&req.headers)?;
    }
    Ok(())
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let post = session.req_header().method == http::Method::POST;
        let snap = self.control.live.load();
        if let Err(why) = admit(session.req_header(), &path, &snap.policy) {
            if why == AdminRefusal::Token && (path == "/ui" || path == "/ui/") && !post {
                // A browser without a session: the login form instead of a bare 401.
                return ui::login_page();
            }
            return refuse(why);
        }
        if (path.as_str(), post) == ("/ui/login", true) {
            return ui::login(session, snap.policy.admin_token.as_deref()).await;
        }
        match (path.as_str(), post) {
            ("/healthz" | "/readyz", _) => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            ("/metrics", _) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                scrape::render(&snap).into_bytes(),
            ),
            ("/admin/status", _) => json(StatusCode::OK, self.status_json()),
            ("/admin/tail", false) => tail(session.req_header().uri.query()).await,
            (p, false) if p == "/ui" || p.starts_with("/ui/") => {
                ui::serve(p).unwrap_or_else(|| {
                    reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec())
                })
            }
            ("/admin/reload", true) => {
                let control = self.control.clone();
                match tokio::task::spawn_blocking(move || control.reload()).await {
                    Ok(Ok(s)) => json(
                        StatusCode::OK,
                        serde_json::json!({ "generation": s.generation, "hash": s.hash }),
                    ),
                    Ok(Err(e)) => json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        serde_json::json!({ "errors": e.0.iter().map(|d| d.to_string()).collect::<Vec<_>>() }),
                    ),
                    Err(e) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({ "errors": [e.to_string()] }),
                    ),
                }
            }
            ("/admin/rollback", true) => {
                // Blocking: the earlier policy's VMs are started again on every worker.
                let control = self.control.clone();
                match tokio::task::spawn_blocking(move || control.rollback()).await {
                    Ok(Ok(s)) => {
                        crate::bundle::follow::rolled_back_to(&s.policy.path);
                        json(
                            StatusCode::OK,
                            serde_json::json!({ "generation": s.generation, "hash": s.hash }),
                        )
                    }
                    Ok(Err(e)) => json(StatusCode::CONFLICT, serde_json::json!({ "errors": [e] })),
                    Err(e) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({ "errors": [e.to_string()] }),
                    ),
                }
            }
            ("/admin/reload" | "/admin/rollback", false) => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"use POST\n".to_vec(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
