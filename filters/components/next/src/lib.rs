//! The `wasi:http/handler@0.3.0` import of the `wasi:http/middleware` world: the next handler
//! in a Sluice chain (another middleware, then the route's pool or edge function).
//!
//! `wasip3` binds the `service` world (export `handler`, import `client`); a middleware also
//! imports `handler`, which this crate binds with the request and response types of `wasip3`,
//! so a guest passes the same `Request`/`Response` values both ways.

wit_bindgen::generate!({
    path: "../wit",
    world: "sluice:guest/next",
    with: {
        "wasi:http/types@0.3.0": wasip3::http::types,
        "wasi:clocks/types@0.3.0": wasip3::clocks::types,
        "wasi:http/handler@0.3.0": generate,
    },
});

pub use wasi::http::handler::handle as next;
