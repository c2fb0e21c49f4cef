//! Issue #16: Proxy-Wasm filters behave as on Envoy. Each test drives the real proxy
//! with filters built from the crates.io SDK, or raw ABI calls in WAT doing what the
//! Go SDK does. One module per area.

mod abi;
mod http;
mod lifecycle;
