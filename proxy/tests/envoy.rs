//! Issue #16: Proxy-Wasm filters behave as on Envoy. Each test drives the real proxy
//! with filters built from the crates.io SDK, or raw ABI calls in WAT doing what the
//! Go SDK does. One module per area.

mod common;

#[path = "hardening/kit.rs"]
#[allow(dead_code)] // each area module uses part of the kit
mod kit;
#[path = "envoy/support.rs"]
mod support;

#[path = "envoy/abi.rs"]
mod abi;
#[path = "envoy/http.rs"]
mod http;
#[path = "envoy/lifecycle.rs"]
mod lifecycle;
