//! The admin listener (loopback by default): `/healthz`, `/readyz` and
//! `/admin/status` (JSON: generation, policy hash, routes, filters).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::snapshot::Live;

/// The admin HTTP application.
pub struct Admin {
    /// The snapshot being served.
    pub live: Arc<Live>,
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
        let snap = self.live.load();
        serde_json::json!({
            "generation": snap.generation,
            "policy": snap.policy.path.display().to_string(),
            "hash": snap.policy.hash,
            "routes": snap.routes.iter().map(|r| serde_json::json!({
                "name": r.def.name,
                "host": r.def.host,
                "path_prefix": r.def.path_prefix,
                "filters": r.filters.iter().map(|f| f.plugin.info.name.clone()).collect::<Vec<_>>(),
                "pool": snap.pools[r.pool].name,
            })).collect::<Vec<_>>(),
            "filters": snap.filters.iter().map(|f| serde_json::json!({
                "name": f.plugin.info.name,
                "module_sha256": f.plugin.module.hash,
                "memory_limit_bytes": f.plugin.limits.memory_bytes,
                "callback_deadline_ms": f.plugin.limits.callback_deadline.as_millis() as u64,
                "vms_replaced": f.plugin.replaced.load(std::sync::atomic::Ordering::Relaxed),
            })).collect::<Vec<_>>(),
        })
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" | "/readyz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/admin/status" => {
                let body = serde_json::to_vec_pretty(&self.status_json()).unwrap_or_default();
                reply(StatusCode::OK, "application/json", body)
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
