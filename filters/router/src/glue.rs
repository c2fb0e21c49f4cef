//! The Proxy-Wasm side: read the request, ask the [`Router`], write the
//! decision to the host. Kept thin on purpose; the logic is in the other modules.

use crate::config;
use crate::request::Request;
use crate::rules::{Chosen, HeaderOps, Router};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// The configured router and what this VM's streams share with it.
struct Routing {
    router: Router,
    /// Requests seen by this VM: mixed into the entropy of keyless splits.
    requests: Cell<u64>,
}

struct RouterFilter;

impl kit::Filter for RouterFilter {
    const NAME: &'static str = "router";
    type Config = Routing;

    fn parse(raw: Option<&[u8]>) -> Result<Routing, String> {
        Ok(Routing {
            router: config::parse(raw)?,
            requests: Cell::new(0),
        })
    }

    fn configured(routing: &mut Routing) -> Result<(), String> {
        if routing.router.is_empty() {
            kit::log(
                LogLevel::Warn,
                "router: no rules and no default: every request keeps its route's pool",
            );
        }
        Ok(())
    }

    fn http_context(
        routing: Option<Rc<Routing>>,
        _context_id: u32,
    ) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RouterHttp {
            routing,
            chosen: None,
            set_cookie: None,
        }))
    }
}

kit::main!(RouterFilter);

struct RouterHttp {
    /// `None` only if the host creates streams without a successful configure.
    routing: Option<Rc<Routing>>,
    /// The action taken in the request phase, for the response phase.
    chosen: Option<Chosen>,
    set_cookie: Option<String>,
}

impl Context for RouterHttp {}

impl RouterHttp {
    fn request(&self, routing: &Routing) -> Request {
        let router = &routing.router;
        let mut req = Request::default();
        for (k, v) in self.get_http_request_headers_bytes() {
            let v = String::from_utf8_lossy(&v).into_owned();
            match k.as_str() {
                ":method" => req.method = v,
                ":path" => req.path = v,
                ":authority" => req.authority = v,
                k if k.starts_with(':') => {}
                "host" if req.authority.is_empty() => req.authority = v,
                _ => req.headers.push((k.to_ascii_lowercase(), v)),
            }
        }
        if router.needs_source() {
            req.source = hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
        }
        let n = routing.requests.get().wrapping_add(1);
        routing.requests.set(n);
        let nanos = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        req.entropy = nanos ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        req
    }

    fn edit_request(&self, ops: &HeaderOps) {
        for k in &ops.remove {
            self.set_http_request_header(k, None);
        }
        for (k, v) in &ops.set {
            self.set_http_request_header(k, Some(v));
        }
        for (k, v) in &ops.add {
            self.add_http_request_header(k, v);
        }
    }

    fn edit_response(&self, ops: &HeaderOps) {
        for k in &ops.remove {
            self.set_http_response_header(k, None);
        }
        for (k, v) in &ops.set {
            self.set_http_response_header(k, Some(v));
        }
        for (k, v) in &ops.add {
            self.add_http_response_header(k, v);
        }
    }
}

impl HttpContext for RouterHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(routing) = self.routing.clone() else {
            return Action::Continue;
        };
        let router = &routing.router;
        let req = self.request(&routing);
        let Some((chosen, d)) = router.route(&req) else {
            return Action::Continue;
        };
        let props: [(&str, Option<&[u8]>); 4] = [
            ("pool", d.pool.as_deref().map(str::as_bytes)),
            ("hash_key", d.hash_key.as_deref()),
            ("path", d.path.as_deref().map(str::as_bytes)),
            ("host", d.host.as_deref().map(str::as_bytes)),
        ];
        for (name, value) in props {
            if let Some(v) = value {
                self.set_property(vec!["sluice", "upstream", name], Some(v));
            }
        }
        if let Some(a) = router.action(chosen) {
            self.edit_request(&a.request_headers);
        }
        self.chosen = Some(chosen);
        self.set_cookie = d.set_cookie;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(routing), Some(chosen)) = (self.routing.clone(), self.chosen) else {
            return Action::Continue;
        };
        if let Some(a) = routing.router.action(chosen) {
            self.edit_response(&a.response_headers);
        }
        if let Some(c) = self.set_cookie.take() {
            self.add_http_response_header("set-cookie", &c);
        }
        Action::Continue
    }
}
